// The database archive's hashing off the JS thread (backup/hash-thread.ts): through the native
// addon on libuv's pool, or on a worker thread without it. Both must give the SHA-256s that
// node:crypto gives on the JS thread, the running hash in the order its updates were asked,
// however many are in flight.
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { HashThread, NativeHasher, sharedBuffer, startHasher, type Hasher } from '../../packages/agent/src/backup/hash-thread.js';

const sha = (...bs: Buffer[]) => bs.reduce((h, b) => h.update(b), createHash('sha256')).digest('hex');

/** Buffers in shared memory (what the zip writer hands a Hasher), of odd sizes. */
function shared(sizes: number[]): Buffer[] {
  return sizes.map((n) => {
    const b = sharedBuffer(n);
    randomBytes(n).copy(b);
    return b;
  });
}

async function checkHasher(h: Hasher): Promise<void> {
  try {
    const bufs = shared([1 << 20, 1, 0, 4096 + 7, (1 << 20) + 13, 3 << 20, 65_536]);
    // Digests asked all at once (the writer keeps 4 blocks in flight): each its own buffer's.
    expect(await Promise.all(bufs.map((b) => h.digest(b)))).toEqual(bufs.map((b) => sha(b)));
    // Updates asked without waiting for each other: the running hash is of them in that order.
    await Promise.all(bufs.map((b) => h.update(b)));
    expect(await h.final()).toBe(sha(...bufs));
    // It starts again empty.
    await h.update(bufs[3]);
    expect(await h.final()).toBe(sha(bufs[3]));
    expect(await h.final()).toBe(sha());
  } finally {
    await h.close();
  }
}

describe('database archive hashing', () => {
  it('uses the native addon (built by npm ci) on the pool, no worker thread', async () => {
    const h = startHasher();
    expect(h, 'the agent addon is not built or has no SHA-256: run npm ci').toBeInstanceOf(NativeHasher);
    await checkHasher(h);
  });

  it('the worker thread (a host without the addon) gives the same hashes', async () => {
    await checkHasher(new HashThread());
  });

  it('hashes a large buffer as node:crypto does', async () => {
    const h = startHasher();
    try {
      const [big] = shared([64 << 20]);
      expect(await h.digest(big)).toBe(sha(big));
    } finally {
      await h.close();
    }
  });
});
