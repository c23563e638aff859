/**
 * A small file's SHA-256 from one synchronous read. From the page cache that takes
 * microseconds, where the four thread-pool round trips of an async read (open, fstat, read,
 * close) cost more than the hashing: verify and describe go through thousands of small files.
 * Callers yield to the event loop between batches (yieldEvery).
 */
import { createHash, hash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';

/** Files up to this size are read and hashed synchronously. */
export const SYNC_HASH_MAX = 64 * 1024;
const scratch = Buffer.allocUnsafe(SYNC_HASH_MAX + 1);

/** SHA-256 (hex) of `file`, expected to hold `size` (≤ SYNC_HASH_MAX) bytes; undefined when it holds another count. */
export function sha256SmallSync(file: string, size: number): string | undefined {
  return sha256DigestSync(file, size)?.toString('hex');
}

/** Files up to this size the check of a restore's fresh copy (tree-index.ts) reads synchronously, SYNC_HASH_MAX at a time. */
export const SYNC_COPY_HASH_MAX = 1 << 20;

/**
 * The SHA-256 digest (32 bytes, a new buffer) of `file`, expected to hold `size` bytes, read
 * synchronously through the one scratch buffer: in one read up to SYNC_HASH_MAX, else
 * SYNC_HASH_MAX at a time; undefined when it holds another count. For files in the page cache
 * (a copy just made): each read of a larger one through the thread pool was a hand-off to a
 * pool thread and back, and a 1 MiB buffer of its own.
 */
export function sha256DigestSync(file: string, size: number): Buffer | undefined {
  const fd = openSync(file, 'r');
  try {
    if (size <= SYNC_HASH_MAX) {
      let n = 0;
      for (;;) {
        const got = readSync(fd, scratch, n, scratch.length - n, null);
        if (got === 0) break;
        n += got;
        if (n === scratch.length) break;
      }
      return n === size ? hash('sha256', scratch.subarray(0, n), 'buffer') : undefined;
    }
    const h = createHash('sha256');
    let n = 0;
    for (;;) {
      const got = readSync(fd, scratch, 0, scratch.length, null);
      if (got === 0) break;
      n += got;
      if (n > size) return undefined;
      h.update(scratch.subarray(0, got));
    }
    return n === size ? h.digest() : undefined;
  } finally {
    closeSync(fd);
  }
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
