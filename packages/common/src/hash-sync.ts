/**
 * A small file's SHA-256 from one synchronous read. From the page cache that takes
 * microseconds, where the four thread-pool round trips of an async read (open, fstat, read,
 * close) cost more than the hashing: verify and describe go through thousands of small files.
 * Callers yield to the event loop between batches (yieldEvery).
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';

/** Files up to this size are read and hashed synchronously. */
export const SYNC_HASH_MAX = 64 * 1024;
const scratch = Buffer.allocUnsafe(SYNC_HASH_MAX + 1);

/** SHA-256 (hex) of `file`, expected to hold `size` (≤ SYNC_HASH_MAX) bytes; undefined when it holds another count. */
export function sha256SmallSync(file: string, size: number): string | undefined {
  const fd = openSync(file, 'r');
  let n = 0;
  try {
    for (;;) {
      const got = readSync(fd, scratch, n, scratch.length - n, null);
      if (got === 0) break;
      n += got;
      if (n === scratch.length) break;
    }
  } finally {
    closeSync(fd);
  }
  return n === size ? createHash('sha256').update(scratch.subarray(0, n)).digest('hex') : undefined;
}

/** A function that, called after each piece of synchronous work, yields to the event loop once `ms` have passed. */
export function yieldEvery(ms = 8): () => Promise<void> | undefined {
  let since = performance.now();
  return () => {
    if (performance.now() - since < ms) return undefined;
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        since = performance.now();
        resolve();
      }),
    );
  };
}
