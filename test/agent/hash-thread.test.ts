// The database archive's hashing off the JS thread (backup/hash-thread.ts): through the native
// addon on libuv's pool, or on a worker thread without it. Both must give the SHA-256s that
// node:crypto gives on the JS thread, the running hash in the order its updates were asked,
// however many are in flight.
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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

  // The zip writer's block I/O in one trip through the pool (zip-writer.ts): a raw block read
  // and hashed, an archive write read back, compared and hashed into the running SHA-256.
  it('reads and hashes a block, and writes, reads back and hashes an archive write, as node:crypto and the file say', async () => {
    const h = startHasher();
    expect(h.readHash && h.writeCheck, 'the agent addon has no block I/O: run npm ci').toBeTruthy();
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'boxback-blockio-'));
    const src = await fsp.open(path.join(dir, 'src'), 'w+');
    const out = await fsp.open(path.join(dir, 'out'), 'w+');
    try {
      const data = randomBytes((2 << 20) + 777);
      await src.write(data, 0, data.length, 0);
      const [buf] = shared([1 << 20]);
      // A whole block, the short last one, then the end of the file.
      expect(await h.readHash!(src.fd, buf, 1 << 20)).toEqual([1 << 20, sha(data.subarray(1 << 20, 2 << 20))]);
      expect(await h.readHash!(src.fd, buf, 2 << 20)).toEqual([777, sha(data.subarray(2 << 20))]);
      expect(await h.readHash!(src.fd, buf, data.length)).toEqual([0, '']);
      // Writes read back through a scratch smaller than them, in order with plain updates.
      const [scratch] = shared([100_000]);
      const parts = shared([(1 << 20) + 5, 1, 250_000]);
      let at = 0;
      const asked: Promise<unknown>[] = [];
      for (const b of parts) {
        asked.push(h.writeCheck!(out.fd, b, at, scratch));
        at += b.length;
      }
      const tail = shared([4096])[0];
      asked.push(h.update(tail));
      expect(await Promise.all(asked)).toEqual([-1, -1, -1, undefined]);
      expect(await h.final()).toBe(sha(...parts, tail));
      // The file holds what was written (compared as digests: a deep equality of 1 MiB is slow).
      expect(sha(await fsp.readFile(path.join(dir, 'out')))).toBe(sha(...parts));
    } finally {
      await src.close();
      await out.close();
      await h.close();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it('a write that reads back other bytes gives its offset; a failed write rejects with its errno code', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'boxback-blockio-'));
    const file = path.join(dir, 'out');
    await fsp.writeFile(file, Buffer.alloc(8192, 1));
    // O_APPEND: the kernel puts every write at the end, whatever position was asked, so the
    // bytes at the asked position are not the ones written (what a failing disk would do).
    const appending = await fsp.open(file, 'a+');
    const readOnly = await fsp.open(file, 'r');
    const h = startHasher();
    try {
      const [b] = shared([6000]);
      b.fill(2);
      const [scratch] = shared([4096]);
      expect(await h.writeCheck!(appending.fd, b, 0, scratch)).toBe(0);
      const h2 = startHasher();
      try {
        await expect(h2.writeCheck!(readOnly.fd, b, 0, scratch)).rejects.toMatchObject({ code: 'EBADF', syscall: 'write' });
        // The running hash is lost: later requests fail too.
        await expect(h2.final()).rejects.toThrow();
      } finally {
        await h2.close();
      }
    } finally {
      await appending.close();
      await readOnly.close();
      await h.close();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
