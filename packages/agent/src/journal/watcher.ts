/**
 * Watching one synced tree with chokidar, for the change journal.
 *
 * What inotify gives (through Node's fs.watch, one inotify instance per process): a watch
 * on a directory reports every change to its entries by name (create, write, chmod/chown/
 * utimes, delete, move in and out), as a "rename" or "change" event. What chokidar adds:
 * it walks the tree, watches every directory, adds watches for new directories and drops
 * them for removed ones, and reports add/change/unlink/addDir/unlinkDir. Left alone it also
 * puts a watch on every FILE (one inotify watch and a FSWatcher object per file: a 1M-file
 * tree would need 1M watches and a lot of memory).
 *
 * So this watcher lets chokidar watch directories only (`ignored` drops every non-directory
 * entry) and takes file-level changes from chokidar's `raw` events, which carry the child's
 * name for every entry of a watched directory. It records:
 *   raw (rename|change, name) on dir D   ->  D/name       (a file, symlink or directory)
 *   addDir / unlinkDir                  ->  that directory ("this subtree changed")
 * A recorded path means "sync it, recursively if it is a directory", so a rename is its two
 * names, and a moved directory is its old and new top. Over-reporting is harmless.
 *
 * Start-up: the directories are walked first (counted against the inotify limit, inodes
 * and birth times noted), then given to chokidar in chunks of ~1000 entries, one after the
 * other (chokidar's first scan lstat-s every entry of every directory at once: +565 MiB RSS
 * at 200k files unchunked, ~15 MiB per 30k chunked). The tree counts as watched once the
 * process holds one inotify watch per directory.
 *
 * Cases that make the journal untrusted (the next backup makes a full rsync pass):
 *   - the tree has more directories than inotify watches are left (checked before watching,
 *     against /proc/sys/fs/inotify/max_user_watches; one log line says what to raise);
 *   - chokidar reports an error (ENOSPC: the watch limit was hit while the tree grew);
 *   - possible queue overflow: libuv drops IN_Q_OVERFLOW silently, so every raw event of the
 *     process is counted per event-loop turn, and a turn that drains at least
 *     max_queued_events events may have lost some;
 *   (after an error or overflow a directory may be left unwatched: the watcher re-scans)
 *   - a watched directory was replaced (deleted or moved away and recreated under the same
 *     name) before chokidar noticed: chokidar keeps the dead watch and never watches the new
 *     directory. Seen as a changed identity (inode + birth time: the inode number itself is
 *     reused at once) when an event names the directory. The watcher restarts (at most 10
 *     times an hour, then it gives up on the tree).
 * Not seen by inotify at all (the periodic full pass catches them): writes through mmap,
 * and a change to a file through a hard link to it from another directory.
 */
import { promises as fsp, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from '@boxback/common';
import { compileExcludes, type ExcludeMatcher } from '@boxback/common';

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
  /**
   * chokidar's first scan lstat-s every entry of every directory at once; memory grows with
   * the tree (~0.5 GiB RSS at 200k files). The tree is admitted to chokidar in chunks of at
   * most this many entries, one after the other (default 1000).
   */
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
  /** Pieces the first scan was admitted to chokidar in (1: all at once). */
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

/** Every raw inotify event of this process, counted per event-loop turn (overflow check). */
const live = new Set<TreeWatcher>();
let turnEvents = 0;
let turnScheduled = false;
const MAX_QUEUED = readNumber('/proc/sys/fs/inotify/max_queued_events', 16384);
function countRawEvent(): void {
  turnEvents++;
  if (!turnScheduled) {
    turnScheduled = true;
    setImmediate(() => {
      const n = turnEvents;
      turnEvents = 0;
      turnScheduled = false;
      if (n >= MAX_QUEUED) {
        // Lost events may include a new directory chokidar then never watches: re-scan.
        for (const w of live)
          void w.restartAfter(
            `possible inotify queue overflow: ${n} events arrived in one event-loop turn (fs.inotify.max_queued_events=${MAX_QUEUED}); events may have been lost`,
          );
      }
    });
  }
}

/** A path with an empty, "." or ".." component, or a trailing slash. */
const NOT_NORMAL = /\/\/|\/\.\.?(?:\/|$)|\/$/;

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
  const all = [...dirs];
  const size = new Map<string, number>();
  // Deepest first, so each directory's subtree size is known before its parent's.
  all.sort((a, b) => (b === '' ? -1 : b.split('/').length) - (a === '' ? -1 : a.split('/').length));
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

export class TreeWatcher {
  private w: FSWatcher | undefined;
  private readonly ex: ExcludeMatcher;
  private readonly root: string;
  private inodes = new Map<string, string>();
  private restarting = false;
  private restarts: number[] = [];
  /** While starting: directories chokidar may enter (null: all). */
  private admitted: { skeleton: Set<string>; roots: Set<string>; seen: Set<string>; want: number; done?: () => void } | null = null;
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

  private rel(abs: string): string | undefined {
    // chokidar hands over normalized absolute paths: a prefix test is enough (called for
    // every entry of every directory chokidar reads, so it should make no garbage).
    const n = this.root.length;
    if (abs.length > n + 1 && abs.charCodeAt(n) === 47 && abs.startsWith(this.root) && !NOT_NORMAL.test(abs)) return abs.slice(n + 1);
    const r = path.relative(this.root, abs);
    if (r === '' || r.startsWith('..') || path.isAbsolute(r)) return r === '' ? '' : undefined;
    return r.split(path.sep).join('/');
  }

  /** Start watching; resolves once the whole tree is watched (or the watcher gave up). */
  async start(): Promise<WatcherStats> {
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

  /** Whether chokidar may enter directory `r` now (all once the start-up scan is done). */
  private isAdmitted(r: string): boolean {
    const a = this.admitted;
    if (!a || r === '' || a.skeleton.has(r)) return true;
    for (let p = r; ; p = p.slice(0, p.lastIndexOf('/'))) {
      if (a.roots.has(p)) return true;
      if (!p.includes('/')) return false;
    }
  }

  private async watchTree(
    chunks: { roots: string[]; skeleton: Set<string> },
    dirs: Map<string, string>,
    entries: Map<string, number>,
    watchesBefore: number,
  ): Promise<void> {
    const chunked = !(chunks.roots.length === 1 && chunks.roots[0] === '');
    this.admitted = chunked ? { skeleton: chunks.skeleton, roots: new Set(), seen: new Set(), want: 0 } : null;
    await this.startChokidar();
    if (chunked && this.w) await this.admitChunks(chunks.roots, dirs, entries);
    this.admitted = null;
    // chokidar adds a directory's watch after reading it: the tree is watched only once the
    // process holds a watch per directory (trees start one after another, so the count is
    // this tree's). A directory removed meanwhile never gets one: stop after 2 s without progress.
    await this.waitForWatches(watchesBefore + dirs.size);
    if (this.statsNow.state === 'starting' && this.w) this.statsNow.state = 'watching';
    this.statsNow.watchesInUse = inotifyWatchesInUse();
    this.o.onWatching?.(this.statsNow.state === 'watching');
  }

  private async waitForWatches(target: number): Promise<void> {
    let last = -1;
    let lastAt = Date.now();
    for (;;) {
      const n = inotifyWatchesInUse();
      if (n >= target || !this.w) return;
      if (n !== last) {
        last = n;
        lastAt = Date.now();
      } else if (Date.now() - lastAt > 2000) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * A batch of chunks at a time (up to `chunkEntries` entries): admit it and add it to
   * chokidar, then wait until chokidar has lstat-ed every entry of every directory in it
   * (it reads a directory, lstat-s all its entries, then watches it), or made no progress
   * for 0.5 s (an entry was removed meanwhile). Waiting for the entries, not just for the
   * directories, is what bounds the work in flight: chokidar's pending lstat calls and their
   * results are what grew the heap (and RSS) with the tree.
   */
  private async admitChunks(roots: string[], dirs: Map<string, string>, entries: Map<string, number>): Promise<void> {
    const rootSet = new Set(roots);
    // Entries chokidar lstat-s for each chunk: the entries of its directories, and its root.
    const size = new Map<string, number>();
    for (const d of dirs.keys()) {
      for (let p = d; ; p = p.slice(0, p.lastIndexOf('/'))) {
        if (rootSet.has(p)) {
          size.set(p, (size.get(p) ?? 1) + (entries.get(d) ?? 0));
          break;
        }
        if (!p.includes('/')) break;
      }
    }
    const max = this.o.chunkEntries ?? 1000;
    for (let i = 0; i < roots.length;) {
      if (!this.w || this.statsNow.state === 'closed') return;
      const batch: string[] = [];
      let want = 0;
      while (i < roots.length && (batch.length === 0 || want + (size.get(roots[i]) ?? 1) <= max)) {
        want += size.get(roots[i]) ?? 1;
        batch.push(roots[i++]);
      }
      const a = this.admitted!;
      a.seen.clear();
      a.want = want;
      await new Promise<void>((resolve) => {
        let last = -1;
        const stall = setInterval(() => {
          if (a.seen.size === last) finish();
          last = a.seen.size;
        }, 500);
        const finish = () => {
          clearInterval(stall);
          a.done = undefined;
          resolve();
        };
        a.done = finish;
        for (const root of batch) a.roots.add(root);
        this.w!.add(batch.map((root) => path.join(this.root, root)));
      });
    }
  }

  private startChokidar(): Promise<void> {
    const w = watch(this.root, {
      ignoreInitial: true,
      alwaysStat: false,
      atomic: false,
      awaitWriteFinish: false,
      followSymlinks: false,
      persistent: true,
      ignorePermissionErrors: false,
      // Directories only: files are seen through their directory's raw events.
      ignored: (p: string, st?: { isDirectory(): boolean }) => {
        const r = this.rel(p);
        if (r === undefined || r === '') return false;
        const a = this.admitted;
        if (a && st && this.isAdmitted(r)) {
          // chokidar lstat-ed this entry while reading its (admitted) directory: progress of the batch.
          a.seen.add(r);
          if (a.seen.size >= a.want) a.done?.();
        }
        if (st && !st.isDirectory()) return true;
        if (this.ex.excluded(r, st ? true : undefined)) return true;
        return a ? !this.isAdmitted(r) : false;
      },
    });
    this.w = w;
    live.add(this);
    w.on('raw', (_event: string, name: string | null, opts: unknown) => {
      countRawEvent();
      const details = opts as { watchedPath?: string } | undefined;
      if (!name || !details?.watchedPath) return;
      const abs = path.join(details.watchedPath, name);
      const r = this.rel(abs);
      if (r === undefined || r === '') return;
      this.statsNow.events++;
      if (!this.ex.excludedOrUnder(r, undefined)) this.o.onChange(r);
      // A self event of the watched dir carries its own base name: check for a replaced dir.
      if (name === path.basename(details.watchedPath)) this.checkInode(this.rel(details.watchedPath));
      if (this.inodes.has(r)) this.checkInode(r);
    });
    const dirEvent = (kind: 'addDir' | 'unlinkDir') => (p: string) => {
      const r = this.rel(p);
      if (r === undefined || r === '') return;
      this.o.onChange(r);
      if (kind === 'unlinkDir') {
        for (const k of this.inodes.keys()) if (k === r || k.startsWith(`${r}/`)) this.inodes.delete(k);
      } else {
        void fsp.lstat(p).then(
          (st) => st.isDirectory() && this.inodes.set(r, identity(st)),
          () => undefined,
        );
      }
    };
    w.on('addDir', dirEvent('addDir'));
    w.on('unlinkDir', dirEvent('unlinkDir'));
    for (const ev of ['add', 'change', 'unlink'] as const) {
      w.on(ev, (p: string) => {
        const r = this.rel(p);
        if (r) this.o.onChange(r);
      });
    }
    w.on('error', (err: unknown) => {
      const e = err as NodeJS.ErrnoException;
      const why =
        e.code === 'ENOSPC'
          ? `the inotify watch limit was reached while watching ${this.o.tree} (fs.inotify.max_user_watches); raise it`
          : `watcher error on ${this.o.tree}: ${e.message}`;
      // A watch that could not be added leaves a directory unwatched: re-scan (and re-check the limit).
      void this.restart(why);
    });
    return new Promise<void>((resolve) => {
      w.once('ready', () => resolve());
    });
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

  /** Watch the tree again from scratch (after a restore swapped the tree's directory). */
  rewatch(reason: string): Promise<void> {
    if (this.statsNow.state === 'too-large') return Promise.resolve();
    return this.restart(reason);
  }

  private async restart(reason: string): Promise<void> {
    if (this.restarting || this.statsNow.state === 'closed') return;
    this.restarting = true;
    this.o.onWatching?.(false, `the watcher of ${this.o.tree} was restarting: ${reason}`);
    this.untrusted(reason);
    const now = Date.now();
    this.restarts = [...this.restarts.filter((t) => now - t < 3_600_000), now];
    if (this.restarts.length > 10) {
      await this.stopWatching();
      this.restarting = false;
      this.fail(
        'failed',
        `tree ${this.o.tree}: directories are replaced too often to follow (${this.restarts.length} watcher restarts in an hour); not watching it, every backup makes a full rsync pass`,
      );
      return;
    }
    try {
      await this.stopWatching();
      this.statsNow.state = 'starting';
      await this.start();
    } finally {
      this.restarting = false;
    }
  }

  private async stopWatching(): Promise<void> {
    live.delete(this);
    const w = this.w;
    this.w = undefined;
    await w?.close();
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
