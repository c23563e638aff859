/**
 * WAL checkpoints of the SQLite catalog with their fsyncs in libuv's thread pool, not on the
 * event loop. SQLite's automatic checkpoint runs inside the commit that pushes the WAL past
 * 1000 pages: it copies the WAL's pages into the database file and fsyncs both, synchronously.
 * During a fleet backup of 1000 hosts (~40 MB of WAL) that was a commit every few seconds
 * holding the event loop for 15-30 ms on a quiet machine and up to 0.9 s on a loaded one, every
 * status call queued behind it. Here (the connection's automatic checkpoint is off), at most
 * once a second after a commit:
 *   1. a second, read-only connection begins a read transaction: while it is open no writer
 *      can restart the WAL from its start (SQLite restarts it only with no reader on it), so
 *      the frames copied below stay in the WAL until the database file holds them durably,
 *   2. the WAL is fsynced in the pool (the frames of commits made without an fsync, progress and
 *      polls, become durable before the database file gets them, as SQLite's NORMAL mode does),
 *   3. on the event loop, with synchronous = OFF: PRAGMA wal_checkpoint(PASSIVE) copies the
 *      frames up to the reader's snapshot into the database file (writes into the page cache,
 *      no fsync; never waits for a writer; commits go on meanwhile, appending to the WAL),
 *   4. the database file is fsynced in the pool,
 *   5. the read transaction ends: the next writer may restart the WAL.
 * A crash between 3 and 4 leaves the WAL whole and durable: recovery reads the pages from it.
 * A failed step is given up (the read transaction ended); the next commit schedules another.
 * Commits made while 2-4 run are after the reader's snapshot: they are copied the next time, and
 * the WAL restarts from its beginning only once a checkpoint has copied all of it (a second with
 * no commit during one). Under writes that never pause the WAL grows meanwhile (~40 MB over a
 * 1000-host fleet backup); past WAL_FULL_BYTES of frames the checkpoint is SQLite's own, on the
 * event loop, as before: complete, so the next commit restarts the WAL.
 */
import { closeSync, fsync, openSync } from 'node:fs';
import Database from 'better-sqlite3';

/** A checkpoint at most this long after a commit (the WAL holds about this much of writes). */
export const CHECKPOINT_EVERY_MS = 1_000;
/** Frames in the WAL past which a checkpoint is made whole on the event loop (see above). */
export const WAL_FULL_BYTES = 64 * 1024 * 1024;

const fsyncFile = (fd: number) => new Promise<void>((resolve, reject) => fsync(fd, (err) => (err ? reject(err) : resolve())));

export class WalCheckpointer {
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private reader?: Database.Database;
  private dbFd?: number;
  private closed = false;
  /** Checkpoints done and failed (a test reads them). */
  readonly counts = { done: 0, failed: 0, onLoop: 0 };
  /** Bytes of frames in the WAL at the last checkpoint when it could not copy them all (0: it did). */
  private walBytes = 0;

  constructor(
    private readonly db: Database.Database,
    private readonly file: string,
    /** The WAL's descriptor (the group commit's, kept open while the catalog is). */
    private readonly walFd: () => number,
  ) {
    db.pragma('wal_autocheckpoint = 0');
  }

  /** A commit was made: checkpoint within CHECKPOINT_EVERY_MS. */
  schedule(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      // one at a time: a commit made during it schedules the next
      this.running ??= this.checkpoint().finally(() => (this.running = undefined));
    }, CHECKPOINT_EVERY_MS);
    this.timer.unref();
  }

  /** Steps 1-5 of the module comment. */
  async checkpoint(): Promise<void> {
    if (this.closed || !this.db.open) return;
    if (this.walBytes >= WAL_FULL_BYTES) {
      this.walBytes = 0;
      this.counts.onLoop++;
      this.db.pragma('wal_checkpoint(PASSIVE)'); // synchronous = FULL: SQLite fsyncs the WAL and the file itself
      return;
    }
    this.reader ??= new Database(this.file, { readonly: true, fileMustExist: true });
    const reader = this.reader;
    reader.exec('BEGIN');
    try {
      reader.prepare('SELECT count(*) FROM sqlite_master').get(); // the read transaction's snapshot: now
      await fsyncFile(this.walFd());
      if (this.closed || !this.db.open) return;
      this.db.pragma('synchronous = OFF');
      try {
        // frames in the WAL, and those copied: all of them, and the next commit restarts the WAL
        const [r] = this.db.pragma('wal_checkpoint(PASSIVE)') as Array<{ log: number; checkpointed: number }>;
        this.walBytes = r.checkpointed < r.log ? r.log * (this.db.pragma('page_size', { simple: true }) as number) : 0;
      } finally {
        this.db.pragma('synchronous = FULL');
      }
      await fsyncFile((this.dbFd ??= openSync(this.file, 'r')));
      this.counts.done++;
    } catch {
      this.counts.failed++;
    } finally {
      if (reader.inTransaction) reader.exec('COMMIT');
    }
  }

  /** Wait for a checkpoint under way; no more after this. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
    this.reader?.close();
    this.reader = undefined;
    if (this.dbFd !== undefined) closeSync(this.dbFd);
    this.dbFd = undefined;
  }
}
