/**
 * The durable change journal of one synced tree: `<stateDir>/journal/<tree>.jsonl`.
 *
 *   {"t":"h","v":1,"tree":"artifacts","epoch":"<agent start id>","follows":"host/backup_X"|null,...}
 *   {"t":"p","p":["rel/path",...]}     paths recorded in the open segment (one line per flush)
 *   {"t":"u","r":"why"}                the open segment cannot be trusted
 *   {"t":"cut"}                        a backup took a snapshot: a new segment begins
 *   {"t":"sealed","backup":"host/backup_Y"}   then the file is rewritten: header follows Y
 *
 * Lines are appended and fdatasync-ed every ~200 ms; a snapshot's cut is appended at once
 * (flushSync) and made durable by the next flush or the seal's rewrite.
 *
 * Segments. Changes go into the open segment. `snapshotForBackup` cuts: the snapshot covers
 * every segment since the last sealed backup, and a new segment takes the changes made while
 * the backup runs. Only `sealed(backup)` (after the backup is published) drops the covered
 * segments; a failed backup seals nothing, so its changes stay for the next one. Paths
 * recorded in the last `carryMs` before a cut are copied into the new segment too: a
 * directory that appeared just before the cut may not have its own watch yet.
 *
 * Trust: a snapshot is untrusted (the caller makes a full rsync pass) when there is no
 * previous backup; the journal does not follow exactly that backup (agent restarted, the
 * journal was started after it, or retention removed it); a covered segment is marked
 * untrusted (watcher not ready, watcher error, queue overflow, watch limit, a restore); or
 * the plan's periodic full pass is due.
 */
import fs, { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fsyncDir, writeFileAtomic, type Logger } from '@boxback/common';
import type { JournalPlan } from './plan-extension.js';

export interface JournalSnapshot {
  trusted: boolean;
  /** Why not trusted (empty when trusted). */
  reason: string;
  /** Changed paths (files and directories, relative, deduplicated) since `since`. */
  changedPaths: string[];
  /** ISO time the covered changes start (the followed backup's seal, or the journal's start). */
  since: string;
  /** The backup the journal follows (store-relative), or null. */
  follows: string | null;
}

interface Header {
  t: 'h';
  v: 1;
  tree: string;
  epoch: string;
  follows: string | null;
  createdAt: string;
  /** When the followed backup was sealed (changes are recorded since then). */
  since: string;
  lastFullAt: string | null;
  backupsSinceFull: number;
}

interface Segment {
  /** path -> last time it was recorded (ms). */
  paths: Map<string, number>;
  untrusted: string | null;
}

export interface TreeJournalOptions {
  stateDir: string;
  tree: string;
  /** The running agent's start id. */
  epoch: string;
  log: Logger;
  fullPassEvery: JournalPlan['fullPassEvery'];
  flushMs?: number;
  carryMs?: number;
  /** Beyond this many distinct changed paths the journal stops listing them (untrusted). */
  maxPaths?: number;
  now?: () => number;
}

export function journalFile(stateDir: string, tree: string): string {
  return path.join(stateDir, 'journal', `${tree}.jsonl`);
}

export class TreeJournal {
  readonly file: string;
  private header!: Header;
  private segments: Segment[] = [];
  private buffered: string[] = [];
  private batch: string[] = [];
  private fh: fsp.FileHandle | undefined;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private pendingCut: { covered: number; full: boolean } | undefined;
  private watching = false;
  private notWatching = 'the watcher was not watching the whole tree yet when the previous backup began';
  private pathCount = 0;
  private readonly now: () => number;
  private closed = false;

  private constructor(private readonly o: TreeJournalOptions) {
    this.file = journalFile(o.stateDir, o.tree);
    this.now = o.now ?? Date.now;
  }

  /** Open the tree's journal for this agent run: always a new epoch (see the trust rules). */
  static async open(o: TreeJournalOptions): Promise<TreeJournal> {
    const j = new TreeJournal(o);
    await j.start();
    return j;
  }

  private async start(): Promise<void> {
    await fsp.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const prior = await readJournal(this.file);
    const nowIso = new Date(this.now()).toISOString();
    let why: string;
    if (!prior) why = 'no journal yet (first start of the agent with this tree)';
    else if (prior === 'unreadable') why = `the journal ${this.file} was unreadable`;
    else if (prior.header.epoch !== this.o.epoch) {
      why = `the agent was restarted (journal epoch ${prior.header.epoch}, now ${this.o.epoch}): changes made while it was down are unknown`;
    } else why = 'the journal was reopened';
    const p = prior && prior !== 'unreadable' ? prior.header : undefined;
    this.header = {
      t: 'h',
      v: 1,
      tree: this.o.tree,
      epoch: this.o.epoch,
      follows: null,
      createdAt: nowIso,
      since: nowIso,
      lastFullAt: p?.lastFullAt ?? null,
      backupsSinceFull: p?.backupsSinceFull ?? 0,
    };
    this.segments = [{ paths: new Map(), untrusted: why }];
    this.o.log.info(
      { tree: this.o.tree, previousEpoch: p?.epoch, previousFollows: p?.follows },
      `journal started; the next backup of ${this.o.tree} makes a full pass: ${why}`,
    );
    await this.rewrite();
  }

  private get open(): Segment {
    return this.segments[this.segments.length - 1];
  }

  /** The watcher is watching the whole tree (segments opened from now on can be trusted), or why not. */
  setWatching(on: boolean, why?: string): void {
    this.watching = on;
    if (!on && why) this.notWatching = why;
  }

  /** Record a changed path (relative to the tree root, POSIX). */
  record(rel: string): void {
    if (this.closed) return;
    const seg = this.open;
    if (seg.untrusted) return; // the backup covering it makes a full pass anyway
    if (!seg.paths.has(rel)) {
      if (this.pathCount >= (this.o.maxPaths ?? 1_000_000)) {
        this.markUntrusted(`more than ${this.o.maxPaths ?? 1_000_000} paths changed: a full pass is cheaper`);
        return;
      }
      this.pathCount++;
      this.batch.push(rel);
    }
    seg.paths.set(rel, this.now());
    this.schedule();
  }

  /**
   * The open segment (and so the next backup) cannot be trusted. The first reason sticks,
   * unless `override` (a restore: the real cause, even when the watcher saw its swap first).
   */
  markUntrusted(reason: string, override = false): void {
    if (this.closed) return;
    if (this.open.untrusted && !override) return;
    this.open.untrusted = reason;
    this.o.log.warn(
      { tree: this.o.tree, reason },
      `change journal of ${this.o.tree} is untrusted: the next backup makes a full rsync pass`,
    );
    this.flushBatch();
    this.buffered.push(JSON.stringify({ t: 'u', r: reason }));
    this.schedule();
  }

  get untrustedReason(): string | null {
    return this.segments.find((s) => s.untrusted)?.untrusted ?? null;
  }

  get follows(): string | null {
    return this.header.follows;
  }

  /** Cut the journal for a backup; `previousBackup` is the host's previous backup (store-relative). */
  async snapshotForBackup(previousBackup: string | undefined): Promise<JournalSnapshot> {
    if (this.closed) throw new Error('journal is closed');
    const t = this.now();
    const covered = this.segments.length;
    const reason = this.trustReason(previousBackup, t);
    const changed = new Set<string>();
    for (const s of this.segments) for (const p of s.paths.keys()) changed.add(p);
    // The new segment for changes made during the backup.
    const carry = new Map<string, number>();
    for (const [p, at] of this.open.paths) if (t - at <= (this.o.carryMs ?? 3000)) carry.set(p, at);
    this.flushBatch();
    this.buffered.push(JSON.stringify({ t: 'cut' }));
    const next: Segment = { paths: carry, untrusted: this.watching ? null : this.notWatching };
    this.segments.push(next);
    if (carry.size) this.buffered.push(JSON.stringify({ t: 'p', p: [...carry.keys()] }));
    if (next.untrusted) this.buffered.push(JSON.stringify({ t: 'u', r: next.untrusted }));
    this.flushSync();
    this.pendingCut = { covered, full: !!reason };
    return {
      trusted: !reason,
      reason,
      changedPaths: reason ? [] : [...changed].sort(),
      since: this.header.since,
      follows: this.header.follows,
    };
  }

  private trustReason(previousBackup: string | undefined, t: number): string {
    const bad = this.segments.find((s) => s.untrusted);
    if (bad) return bad.untrusted!;
    if (!previousBackup) return 'first backup of this host: no previous tree to link against';
    if (this.header.follows === null) return 'the journal has not seen a backup of this tree yet';
    if (this.header.follows !== previousBackup) {
      return `the journal follows ${this.header.follows}, but the previous backup is ${previousBackup} (retention or another agent removed the one it follows)`;
    }
    const every = this.o.fullPassEvery;
    if (this.header.backupsSinceFull + 1 >= every.backups)
      return `periodic full pass: every ${every.backups} backups (journal.fullPassEvery.backups)`;
    if (this.header.lastFullAt && t - Date.parse(this.header.lastFullAt) >= every.hours * 3_600_000) {
      return `periodic full pass: the last one was more than ${every.hours} h ago (journal.fullPassEvery.hours)`;
    }
    return '';
  }

  /** The backup whose snapshot was last taken is published as `backupRelPath`. */
  async sealed(backupRelPath: string): Promise<void> {
    if (this.closed) return;
    const cut = this.pendingCut;
    if (!cut) throw new Error(`sealed(${backupRelPath}) without a snapshot`);
    this.pendingCut = undefined;
    this.flushBatch();
    this.buffered.push(JSON.stringify({ t: 'sealed', backup: backupRelPath }));
    await this.flush();
    this.segments = this.segments.slice(cut.covered);
    const nowIso = new Date(this.now()).toISOString();
    this.header.follows = backupRelPath;
    this.header.since = nowIso;
    if (cut.full) {
      this.header.lastFullAt = nowIso;
      this.header.backupsSinceFull = 0;
    } else {
      this.header.backupsSinceFull++;
    }
    this.pathCount = this.segments.reduce((n, s) => n + s.paths.size, 0);
    await this.rewrite();
  }

  /** A backup whose snapshot was taken failed: its changes stay for the next one. */
  abandoned(): void {
    this.pendingCut = undefined;
  }

  private schedule(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush().catch((err: unknown) => this.markUntrusted(`writing the journal failed: ${(err as Error).message}`));
    }, this.o.flushMs ?? 200);
    this.timer.unref();
  }

  private flushBatch(): void {
    if (this.batch.length) this.buffered.push(JSON.stringify({ t: 'p', p: this.batch }));
    this.batch = [];
  }

  /** Append what is buffered and fdatasync it. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      this.flushBatch();
      if (!this.buffered.length || !this.fh) return;
      const text = `${this.buffered.join('\n')}\n`;
      this.buffered = [];
      await this.fh.appendFile(text);
      await this.fh.datasync();
    });
    return this.flushing;
  }

  /**
   * Append now, without the libuv thread pool (a busy watcher can queue thousands of lstat
   * calls there): once per backup. A line of an async flush still in flight may land after
   * it; the file is the run's record, trust decisions come from memory. Not fdatasync-ed
   * here: that blocked the JS thread 0.5-48 ms per tree at a backup's start, while the
   * archives write, and the cut's durability buys nothing: the journal is never trusted
   * across agent runs (a new epoch makes a full pass), and the next flush, the seal's
   * rewrite (written, fsynced, renamed) or close makes it durable.
   */
  private flushSync(): void {
    this.flushBatch();
    if (!this.buffered.length || !this.fh) return;
    const text = `${this.buffered.join('\n')}\n`;
    this.buffered = [];
    fs.writeSync(this.fh.fd, text);
  }

  /** Rewrite the file from memory (after a seal), atomically, and reopen it for appends. */
  private async rewrite(): Promise<void> {
    await this.flushing.catch(() => undefined);
    this.flushBatch();
    this.buffered = [];
    const lines = [JSON.stringify(this.header)];
    this.segments.forEach((s, i) => {
      if (i > 0) lines.push(JSON.stringify({ t: 'cut' }));
      if (s.paths.size) lines.push(JSON.stringify({ t: 'p', p: [...s.paths.keys()] }));
      if (s.untrusted) lines.push(JSON.stringify({ t: 'u', r: s.untrusted }));
    });
    await this.fh?.close();
    await writeFileAtomic(this.file, `${lines.join('\n')}\n`, 0o600);
    this.fh = await fsp.open(this.file, 'a');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush().catch(() => undefined);
    this.closed = true;
    await this.fh?.close();
    this.fh = undefined;
    await fsyncDir(path.dirname(this.file)).catch(() => undefined);
  }
}

/** Parse a journal file (for start-up checks and tests). */
export async function readJournal(
  file: string,
): Promise<{ header: Header; lines: Array<Record<string, unknown>> } | 'unreadable' | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return 'unreadable';
  }
  const lines: Array<Record<string, unknown>> = [];
  for (const l of text.split('\n')) {
    if (!l) continue;
    try {
      lines.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      break; // a torn last line after a crash: what came before still counts
    }
  }
  const header = lines[0] as unknown as Header | undefined;
  if (!header || header.t !== 'h' || header.v !== 1) return 'unreadable';
  return { header, lines: lines.slice(1) };
}
