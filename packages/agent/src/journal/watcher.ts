/**
 * Watching one synced tree for the change journal: one inotify watch per directory, through
 * our inotify addon or Node's watch handles (dir-watch.ts; one inotify instance per process).
 *
 * A watch on a directory reports every change to its entries by name (create, write, chmod/
 * chown/utimes, delete, move in and out), as a "rename" or "change" event. Files get no watch
 * of their own (a 1M-file tree would need 1M watches): their changes arrive through their
 * directory's. It records:
 *   event (rename|change, name) on dir D   ->  D/name       (a file, symlink or directory)
 * A recorded path means "sync it, recursively if it is a directory", so a rename is its two
 * names, and a moved directory is its old and new top. Over-reporting is harmless.
 * On a "rename" the entry is looked at (lstat): a new directory is walked and every directory
 * in it watched; a directory that is gone has its watches (and those below it) closed.
 *
 * Start-up: the directories are walked (counted against the inotify limit, inodes and birth
 * times noted), then watched a batch at a time (planChunks: about `chunkEntries` entries per
 * batch), letting events in between. The tree counts as watched once the process holds one
 * inotify watch per directory. Memory: ~120 B per directory with our addon, under 1 KB with
 * Node's bare watch handle (dir-watch.ts), and our map entries; chokidar, used before, kept ~7 KB per directory and
 * lstat-ed every file on its first scan (docs/design/agent-memory.md).
 *
 * Cases that make the journal untrusted (the next backup makes a full rsync pass):
 *   - the tree has more directories than inotify watches are left (checked before watching,
 *     against /proc/sys/fs/inotify/max_user_watches; one log line says what to raise);
 *   - a watch fails (ENOSPC: the watch limit was hit while the tree grew);
 *   - queue overflow: our inotify addon (dir-watch.ts) reports IN_Q_OVERFLOW; with Node's
 *     watches (the fallback) libuv drops it silently, so every raw event of the process is
 *     counted per event-loop turn, and a turn that drains at least max_queued_events events
 *     may have lost some;
 *   (after an error or overflow a directory may be left unwatched: the watcher re-scans)
 *   - a watched directory was replaced (deleted or moved away and recreated under the same
 *     name) before the watcher noticed: the dead watch stays and the new directory is not
 *     watched. Seen as a changed identity (inode + birth time: the inode number itself is
 *     reused at once) when an event names the directory. The watcher restarts (at most 10
 *     times an hour, then it gives up on the tree).
 * Not seen by inotify at all (the periodic full pass catches them): writes through mmap,
 * and a change to a file through a hard link to it from another directory.
 */
import { promises as fsp, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '@boxback/common';
import { compileExcludes, type ExcludeMatcher } from '@boxback/common';
import { DIR_WATCH_KIND, watchDirectory, type DirWatch, type WatchSink } from './dir-watch.js';

export interface TreeWatcherOptions {
  tree: string;
  source: string;
  excludes: string[];
  log: Logger;
  onChange: (rel: string) => void;
  onUntrusted: (reason: string) => void;
  /** Called when the whole tree is watched (true) or no longer is (false). */
  onWatching?: (on: boolean, why?: string) => void;
  /** Override the watch limit (tests: a tiny artificial limit). */
  maxWatches?: number;
  /** Watches to leave for everything else of this user (default 10% of the limit, at least 1024). */
  reserveWatches?: number;
  /** The first scan watches the tree in batches of about this many entries (default 1000). */
  chunkEntries?: number;
}

export interface WatcherStats {
  tree: string;
  state: 'starting' | 'watching' | 'too-large' | 'failed' | 'closed';
  directories: number;
  files: number;
  watchLimit: number;
  watchesInUse: number;
  startMs: number;
  events: number;
  /** Pieces the first scan was watched in (1: all at once). */
  chunks: number;
}

const readNumber = (file: string, dflt: number): number => {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isFinite(n) && n > 0 ? n : dflt;
  } catch {
    return dflt;
  }
};

/** inotify watches this process holds now (from /proc/self/fdinfo). */
export function inotifyWatchesInUse(): number {
  let n = 0;
  let fds: string[] = [];
  try {
    fds = readdirSync('/proc/self/fd');
  } catch {
    return 0;
  }
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) !== 'anon_inode:inotify') continue;
      n += readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('inotify wd:')).length;
    } catch {
      // a fd that closed meanwhile
    }
  }
  return n;
}

/**
 * Every raw inotify event of this process, counted per event-loop turn (overflow check), when
 * the watches are Node's (libuv drops IN_Q_OVERFLOW); our addon reports the overflow itself.
 */
const live = new Set<TreeWatcher>();
let turnEvents = 0;
let turnScheduled = false;
const MAX_QUEUED = readNumber('/proc/sys/fs/inotify/max_queued_events', 16384);
const COUNT_EVENTS = DIR_WATCH_KIND !== 'inotify';
function countRawEvent(): void {
  if (!COUNT_EVENTS) return;
  turnEvents++;
  if (!turnScheduled) {
    turnScheduled = true;
    setImmediate(() => {
      const n = turnEvents;
      turnEvents = 0;
      turnScheduled = false;
      if (n >= MAX_QUEUED) {
        // Lost events may include a new directory never watched: re-scan.
        for (const w of live)
          void w.restartAfter(
            `possible inotify queue overflow: ${n} events arrived in one event-loop turn (fs.inotify.max_queued_events=${MAX_QUEUED}); events may have been lost`,
          );
      }
    });
  }
}

/** The last scan queued in this process: a watcher's scan starts once the one before it ended. */
let scanTurn: Promise<unknown> = Promise.resolve();

/** A directory's identity: inode and birth time (an inode number is reused at once). */
const identity = (st: { ino: number; birthtimeMs: number }): string => `${st.ino}:${st.birthtimeMs}`;

interface Walk {
  dirs: Map<string, string>;
  /** Entries (of any type) directly in each directory. */
  entries: Map<string, number>;
  files: number;
}

/** Directories (with their inodes) and the number of other entries, honouring excludes. */
async function walkDirs(root: string, ex: ExcludeMatcher, limit: number): Promise<Walk> {
  const dirs = new Map<string, string>();
  const counts = new Map<string, number>();
  let files = 0;
  const rootSt = await fsp.lstat(root);
  dirs.set('', identity(rootSt));
  const queue: string[] = [''];
  while (queue.length) {
    // A few directories at a time: fast on a big tree, gentle on a shared box.
    const batch = queue.splice(0, 16);
    await Promise.all(
      batch.map(async (rel) => {
        const entries = await fsp.readdir(path.join(root, rel), { withFileTypes: true }).catch(() => []);
        counts.set(rel, entries.length);
        for (const e of entries) {
          const r = rel ? `${rel}/${e.name}` : e.name;
          if (e.isDirectory()) {
            if (ex.excluded(r, true)) continue;
            if (dirs.size > limit) continue; // too large already: only count files from here on
            const st = await fsp.lstat(path.join(root, r)).catch(() => undefined);
            if (!st?.isDirectory()) continue;
            dirs.set(r, identity(st));
            queue.push(r);
          } else if (!ex.excluded(r, false)) files++;
        }
      }),
    );
  }
  return { dirs, entries: counts, files };
}

/**
 * Split the tree into chunks of at most `max` entries: chunk roots are the highest
 * directories whose subtree is small enough; the directories above them (the skeleton)
 * are watched first. Returns the chunk roots (deepest-first order does not matter) and the
 * skeleton.
 */
export function planChunks(dirs: Iterable<string>, entries: Map<string, number>, max: number): { roots: string[]; skeleton: Set<string> } {
  const size = new Map<string, number>();
  // Deepest first, so each directory's subtree size is known before its parent's. Each depth is
  // counted once (splitting both paths in the comparator made ~2 arrays per comparison: ~1.3M
  // for 40k directories, garbage of the first scan and of every re-scan).
  const depthOf = (d: string) => {
    if (d === '') return -1;
    let n = 1;
    for (let i = d.indexOf('/'); i !== -1; i = d.indexOf('/', i + 1)) n++;
    return n;
  };
  const all = [...dirs]
    .map((d) => ({ d, depth: depthOf(d) }))
    .sort((a, b) => b.depth - a.depth)
    .map((x) => x.d);
  for (const d of all) {
    size.set(d, (size.get(d) ?? 0) + (entries.get(d) ?? 0));
    if (d !== '') {
      const parent = d.includes('/') ? d.slice(0, d.lastIndexOf('/')) : '';
      size.set(parent, (size.get(parent) ?? 0) + size.get(d)!);
    }
  }
  const skeleton = new Set<string>();
  const roots: string[] = [];
  if ((size.get('') ?? 0) <= max) return { roots: [''], skeleton };
  for (const d of all) {
    if (d === '' || (size.get(d) ?? 0) > max) {
      skeleton.add(d);
      continue;
    }
    const parent = d.includes('/') ? d.slice(0, d.lastIndexOf('/')) : '';
    if ((size.get(parent) ?? 0) > max) roots.push(d);
  }
  return { roots, skeleton };
}

/**
 * The order the first scan watches directories in: the skeleton, then the chunks' subtrees,
 * a batch of chunks (at most `max` entries, or one chunk) at a time.
 */
function watchBatches(
  chunks: { roots: string[]; skeleton: Set<string> },
  dirs: Iterable<string>,
  entries: Map<string, number>,
  max: number,
): string[][] {
  const rootSet = new Set(chunks.roots);
  const under = new Map<string, string[]>(chunks.roots.map((r) => [r, []]));
  const first: string[] = [];
  for (const d of dirs) {
    let root: string | undefined;
    for (let p = d; ; p = p.slice(0, p.lastIndexOf('/'))) {
      if (rootSet.has(p)) {
        root = p;
        break;
      }
      if (!p.includes('/')) break;
    }
    if (root === undefined && rootSet.has('')) root = '';
    (root === undefined ? first : under.get(root)!).push(d);
  }
  const batches: string[][] = first.length ? [first] : [];
  let batch: string[] = [];
  let size = 0;
  for (const r of chunks.roots) {
    const ds = under.get(r)!;
    const n = ds.reduce((s, d) => s + 1 + (entries.get(d) ?? 0), 0);
    if (batch.length && size + n > max) {
      batches.push(batch);
      batch = [];
      size = 0;
    }
    batch.push(...ds);
    size += n;
  }
  if (batch.length) batches.push(batch);
  return batches;
}

export class TreeWatcher implements WatchSink {
  /** rel dir -> its watch, while running. */
  private watches: Map<string, DirWatch> | undefined;
  private readonly ex: ExcludeMatcher;
  private readonly root: string;
  private inodes = new Map<string, string>();
  /** The restart under way, if any. */
  private restarting: Promise<void> | undefined;
  /** Why the watcher is held (hold: a restore is replacing the tree), until rewatch. */
  private held: string | undefined;
  private restarts: number[] = [];
  private statsNow: WatcherStats;

  constructor(private readonly o: TreeWatcherOptions) {
    this.root = path.resolve(o.source);
    this.ex = compileExcludes(o.excludes);
    this.statsNow = {
      tree: o.tree,
      state: 'starting',
      directories: 0,
      files: 0,
      watchLimit: 0,
      watchesInUse: 0,
      startMs: 0,
      events: 0,
      chunks: 0,
    };
  }

  stats(): WatcherStats {
    return { ...this.statsNow };
  }

  untrusted(reason: string): void {
    this.o.onUntrusted(reason);
  }

  /**
   * Start watching; resolves once the whole tree is watched (or the watcher gave up). Scans
   * run one at a time in the process (scanTurn): a restore replaces every tree at once, and
   * their re-scans side by side doubled the daemon's peak at the default file counts (heap
   * 151 MB, RSS 390 MB).
   */
  start(): Promise<WatcherStats> {
    const run = scanTurn.then(() => this.scan());
    scanTurn = run.catch(() => undefined);
    return run;
  }

  private async scan(): Promise<WatcherStats> {
    // Closed while its turn was coming: nothing to watch.
    if (this.statsNow.state === 'closed') return this.stats();
    const t0 = Date.now();
    const { tree, log } = this.o;
    if (this.ex.unsupported.length) {
      this.fail(
        'too-large',
        `tree ${tree}: exclude pattern(s) ${this.ex.unsupported.join(', ')} cannot be evaluated by the journal; every backup makes a full rsync pass`,
      );
      return this.stats();
    }
    const limit = this.o.maxWatches ?? readNumber('/proc/sys/fs/inotify/max_user_watches', 8192);
    const inUse = inotifyWatchesInUse();
    const reserve = this.o.reserveWatches ?? Math.max(1024, Math.floor(limit / 10));
    const budget = Math.max(0, limit - inUse - reserve);
    let walk: Walk;
    try {
      walk = await walkDirs(this.root, this.ex, budget);
    } catch (err) {
      this.fail('failed', `tree ${tree}: cannot read ${this.root}: ${(err as Error).message}`);
      return this.stats();
    }
    Object.assign(this.statsNow, { directories: walk.dirs.size, files: walk.files, watchLimit: limit, watchesInUse: inUse });
    if (walk.dirs.size > budget) {
      const want = nextPow2(inUse + reserve + walk.dirs.size * 2);
      this.fail(
        'too-large',
        `tree ${tree} (${this.root}) has more than ${budget} directories, more than the inotify watches left ` +
          `(fs.inotify.max_user_watches=${limit}, ${inUse} in use by the agent, ${reserve} kept for others): ` +
          `not watching it, so every backup of it makes a full rsync pass. Raise the limit: ` +
          `sysctl -w fs.inotify.max_user_watches=${want} and put "fs.inotify.max_user_watches=${want}" in /etc/sysctl.d/90-boxback.conf`,
      );
      return this.stats();
    }
    // Held meanwhile (a restore is replacing the tree): rewatch scans it again.
    if (this.held !== undefined) return this.stats();
    this.inodes = walk.dirs;
    const chunks = planChunks(walk.dirs.keys(), walk.entries, this.o.chunkEntries ?? 1000);
    this.statsNow.chunks = chunks.roots.length;
    await this.watchTree(chunks, walk.dirs, walk.entries, inUse);
    this.statsNow.startMs = Date.now() - t0;
    if (this.statsNow.state === 'watching') {
      log.info(
        {
          tree,
          directories: walk.dirs.size,
          files: walk.files,
          watches: inotifyWatchesInUse(),
          watchLimit: limit,
          // 'inotify' (our addon), or Node's handles where it was not built (more memory per directory)
          watchKind: DIR_WATCH_KIND,
          ms: this.statsNow.startMs,
        },
        `watching ${tree} for the change journal`,
      );
    }
    return this.stats();
  }

  private fail(state: WatcherStats['state'], reason: string): void {
    this.statsNow.state = state;
    this.o.log.warn({ tree: this.o.tree, reason }, reason);
    this.o.onWatching?.(false, reason);
    this.o.onUntrusted(reason);
  }

  private async watchTree(
    chunks: { roots: string[]; skeleton: Set<string> },
    dirs: Map<string, string>,
    entries: Map<string, number>,
    watchesBefore: number,
  ): Promise<void> {
    this.watches = new Map();
    live.add(this);
    for (const batch of watchBatches(chunks, dirs.keys(), entries, this.o.chunkEntries ?? 1000)) {
      if (!this.watches || this.statsNow.state === 'closed') return;
      for (const d of batch) this.watchDir(d);
      // Let the events of what is watched so far in, between batches.
      await new Promise((r) => setImmediate(r));
    }
    // A directory removed meanwhile never gets a watch: stop after 2 s without progress.
    await this.waitForWatches(watchesBefore + dirs.size);
    if (this.statsNow.state === 'starting' && this.watches) this.statsNow.state = 'watching';
    this.statsNow.watchesInUse = inotifyWatchesInUse();
    this.o.onWatching?.(this.statsNow.state === 'watching');
  }

  private async waitForWatches(target: number): Promise<void> {
    let last = -1;
    let lastAt = Date.now();
    for (;;) {
      const n = inotifyWatchesInUse();
      if (n >= target || !this.watches) return;
      if (n !== last) {
        last = n;
        lastAt = Date.now();
      } else if (Date.now() - lastAt > 2000) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** One inotify watch on directory `rel` (no-op when watched or gone meanwhile). */
  private watchDir(rel: string): void {
    const m = this.watches;
    if (!m || m.has(rel)) return;
    let w: DirWatch;
    try {
      w = watchDirectory(rel ? path.join(this.root, rel) : this.root, rel, this);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      // Gone (or replaced by a file) since it was listed: its parent's event says so.
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return;
      this.onError(e);
      return;
    }
    m.set(rel, w);
  }

  /** Close the watches of `rel` and every directory below it. */
  private unwatchTree(rel: string): void {
    const m = this.watches;
    if (!m) return;
    for (const [k, w] of m) {
      if (k === rel || k.startsWith(`${rel}/`)) {
        w.close();
        m.delete(k);
      }
    }
    for (const k of this.inodes.keys()) if (k === rel || k.startsWith(`${rel}/`)) this.inodes.delete(k);
  }

  /** A watch failed (WatchSink: dir-watch.ts calls it). */
  onError(e: NodeJS.ErrnoException): void {
    const why =
      e.code === 'ENOSPC'
        ? `the inotify watch limit was reached while watching ${this.o.tree} (fs.inotify.max_user_watches); raise it`
        : `watcher error on ${this.o.tree}: ${e.message}`;
    // A watch that could not be added leaves a directory unwatched: re-scan (and re-check the limit).
    void this.restart(why);
  }

  /** The kernel's inotify queue overflowed (WatchSink, our addon only): events were lost. */
  onOverflow(): void {
    void this.restart(`inotify queue overflow (IN_Q_OVERFLOW, fs.inotify.max_queued_events=${MAX_QUEUED}): events were lost`);
  }

  /** An inotify event on directory `dir` about its entry `name` (WatchSink). */
  onRaw(dir: string, event: string, name: string | null): void {
    countRawEvent();
    if (!name || !this.watches) return;
    const r = dir ? `${dir}/${name}` : name;
    this.statsNow.events++;
    if (!this.ex.excludedOrUnder(r, undefined)) this.o.onChange(r);
    // A self event of the watched dir carries its own base name: check for a replaced dir.
    if (name === path.basename(dir || this.root)) this.checkInode(dir);
    // Entries come and go on "rename" (create, delete, move): follow the directories among them.
    if (event === 'rename') void this.follow(r);
    else if (this.inodes.has(r)) this.checkInode(r);
  }

  /**
   * Entry `r` was created, deleted or moved: a new directory is walked and watched (with every
   * directory below it), a removed one is no longer watched, a replaced one restarts the watcher.
   */
  private async follow(r: string): Promise<void> {
    const st = await fsp.lstat(path.join(this.root, r)).catch(() => undefined);
    if (!this.watches) return;
    if (!st?.isDirectory()) {
      if (this.watches.has(r) || this.inodes.has(r)) this.unwatchTree(r);
      return;
    }
    if (this.ex.excluded(r, true)) return;
    const known = this.inodes.get(r);
    if (known !== undefined) {
      if (known !== identity(st)) void this.restart(`directory ${r} of ${this.o.tree} was replaced faster than the watcher could follow`);
      return;
    }
    this.inodes.set(r, identity(st));
    this.watchDir(r);
    const list = await fsp.readdir(path.join(this.root, r), { withFileTypes: true }).catch(() => []);
    for (const e of list) if (e.isDirectory()) await this.follow(`${r}/${e.name}`);
  }

  /** A watched directory whose inode changed is no longer watched: restart the watcher. */
  private checkInode(r: string | undefined): void {
    if (r === undefined) return;
    const known = this.inodes.get(r);
    if (known === undefined) return;
    void fsp.lstat(path.join(this.root, r)).then(
      (st) => {
        if (this.inodes.get(r) === known && st.isDirectory() && identity(st) !== known)
          void this.restart(`directory ${r || '.'} of ${this.o.tree} was replaced faster than the watcher could follow`);
      },
      () => undefined,
    );
  }

  /** Untrusted, and watch the tree again from scratch (events were lost). */
  restartAfter(reason: string): Promise<void> {
    return this.restart(reason);
  }

  /**
   * A restore is about to replace the tree (SWAP): untrusted, every watch closed, and no
   * re-scan until rewatch. Before, the watcher saw its root replaced and re-scanned the new
   * tree at once, while the restore still held its own memory: at the default file counts that
   * scan under the restore's SWAP..HEALTH_CHECK was the restore's peak (docs/design/agent-memory.md).
   */
  hold(reason: string): void {
    if (this.statsNow.state === 'closed' || this.statsNow.state === 'too-large' || this.statsNow.state === 'failed') return;
    this.held = reason;
    this.untrusted(reason);
    void this.stopWatching();
    this.statsNow.state = 'starting';
    this.o.onWatching?.(false, `the watcher of ${this.o.tree} is held: ${reason}`);
  }

  /** Watch the tree again from scratch (after a restore swapped the tree's directory). */
  async rewatch(reason: string): Promise<void> {
    if (this.statsNow.state === 'too-large') return;
    if (this.held !== undefined) {
      this.held = undefined;
      // A scan under way when the hold came stops after its walk: wait for it, then scan afresh.
      await this.restarting?.catch(() => undefined);
    }
    return this.restart(reason);
  }

  /**
   * A restart already under way is the one a second caller waits for (a restore's rewatch
   * usually finds the watcher restarting: it saw its root replaced). Waiting for it, not
   * returning at once, lets the caller collect the scan's garbage once the scan is over
   * (journal/index.ts): returning at once ran that GC before the re-scan, which left a daemon
   * at 427 MB after a restore at the default file counts.
   */
  private restart(reason: string): Promise<void> {
    if (this.statsNow.state === 'closed') return Promise.resolve();
    if (this.restarting) return this.restarting;
    this.restarting = this.restartNow(reason).finally(() => {
      this.restarting = undefined;
    });
    return this.restarting;
  }

  private async restartNow(reason: string): Promise<void> {
    this.o.onWatching?.(false, `the watcher of ${this.o.tree} was restarting: ${reason}`);
    this.untrusted(reason);
    const now = Date.now();
    this.restarts = [...this.restarts.filter((t) => now - t < 3_600_000), now];
    if (this.restarts.length > 10) {
      await this.stopWatching();
      this.fail(
        'failed',
        `tree ${this.o.tree}: directories are replaced too often to follow (${this.restarts.length} watcher restarts in an hour); not watching it, every backup makes a full rsync pass`,
      );
      return;
    }
    await this.stopWatching();
    this.statsNow.state = 'starting';
    await this.start();
  }

  private async stopWatching(): Promise<void> {
    live.delete(this);
    const m = this.watches;
    this.watches = undefined;
    for (const w of m?.values() ?? []) w.close();
    // The identities are the walk's: a restart walks again. Kept, the re-scan after a restore
    // held the old tree's map beside the new one's (one entry per directory).
    this.inodes = new Map();
  }

  async close(): Promise<void> {
    this.statsNow.state = 'closed';
    this.o.onWatching?.(false);
    await this.stopWatching();
  }
}

function nextPow2(n: number): number {
  let p = 8192;
  while (p < n) p *= 2;
  return p;
}
