/**
 * A tree's read-ahead while a store reads the tree's files on the JS thread (a first backup
 * to S3: store/s3/tree-upload.ts reads every small file with readFileSync). With a cold page
 * cache each of those reads, and each directory listing and lstat of the walk, waits for the
 * disk in turn: in a profile of the bench's first S3 backup (5000 artifacts in their own
 * directories, page cache dropped) the JS thread spent 2.9 s in `read`, 0.8 s in `readdir` and
 * 0.2 s in `lstat` of SYNC_ARTIFACTS' ~10 s, while restic reads with several goroutines at
 * once. The read-ahead walks the same tree in the walk's order on a thread of its own and asks
 * the kernel to read each file ahead (the agent's native addon: packages/agent/native/
 * prefetch.c, registered with useReadAhead), at most `window` bytes ahead of what the caller has
 * consumed, so the JS thread finds the tree's directories, inodes and data in the page cache.
 *
 * A journaled S3 pass (tree-upload.ts) starts one per directory it must read (a day's new
 * runs), a few at a time.
 *
 * Optional: without a registered starter (no addon built, another process using the store), or
 * with BOXBACK_READ_AHEAD=off, nothing is read ahead and the reads are what they were.
 */
import os from 'node:os';

export interface ReadAhead {
  /** The caller has read (or passed over) this many more bytes of the tree's files, in walk order. */
  consumed(bytes: number): void;
  /** Stop the thread (idempotent): the files and bytes it asked the kernel to read ahead. */
  stop(): { files: number; bytes: number };
}

export type StartReadAhead = (root: string, windowBytes: number) => ReadAhead;

let starter: StartReadAhead | undefined;

/** Register (or drop, with undefined) what starts a read-ahead: the agent's native addon. */
export function useReadAhead(fn: StartReadAhead | undefined): void {
  starter = fn;
}

/** At most this far ahead of the reader; less on a box with little memory available (an eighth of it). */
const WINDOW_MAX = 256 << 20;

/** A read-ahead of the tree under `root`, or undefined when none is registered. */
export function startReadAhead(root: string): ReadAhead | undefined {
  if (!starter || process.env.BOXBACK_READ_AHEAD === 'off') return undefined;
  const window = Math.max(8 << 20, Math.min(WINDOW_MAX, Math.floor(os.freemem() / 8)));
  try {
    return starter(root, window);
  } catch {
    return undefined; // no thread: the reads go on without one
  }
}
