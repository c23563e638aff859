// CompactFiles (manifest-writer.ts): the previous backup's checksums by inode, read for a full
// pass after a backup. It gives back what was set for each inode (the last set counts: a hard
// link listed twice), nothing for an inode never set, through its growth and for inodes past
// 2^32 and up to 2^53 (ext4 and XFS give 64-bit inodes); a malformed SHA-256 is not kept; and
// its entries live outside the JS heap (a process with --expose-gc: 150k files, the default
// box's trees, grow the heap by little).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CompactFiles, type PrevFile } from '../../packages/common/src/store/local/manifest-writer.js';

const sha = (i: number) => (i.toString(16).padStart(8, '0') + 'cd').repeat(7).slice(0, 64);

/** A seeded xorshift: the same inodes every run. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

describe('CompactFiles', () => {
  it('gives back what was set for each inode, and nothing for others, as a Map would', () => {
    const r = rng(7);
    const c = new CompactFiles();
    const ref = new Map<number, PrevFile>();
    // Small inodes, consecutive ones, 64-bit ones (past 2^32, up to 2^53), and repeats.
    const inos: number[] = [];
    for (let i = 0; i < 5000; i++) inos.push(i + 1);
    for (let i = 0; i < 5000; i++) inos.push(Math.floor(r() * 2 ** 32) + 2 ** 32 * Math.floor(r() * 2 ** 20));
    for (let i = 0; i < 2000; i++) inos.push(Number.MAX_SAFE_INTEGER - i * 4096);
    for (let i = 0; i < 3000; i++) inos.push(inos[Math.floor(r() * inos.length)]);
    inos.forEach((ino, i) => {
      const p = { size: i * 3, mtimeMs: 1.7e12 + i, sha256: sha(i) };
      c.set(ino, p);
      ref.set(ino, p);
    });
    expect(c.size).toBe(ref.size);
    for (const [ino, p] of ref) expect(c.get(ino)).toEqual(p);
    for (let i = 0; i < 2000; i++) {
      const ino = 2 ** 40 + i * 7919 + 3;
      if (!ref.has(ino)) expect(c.get(ino)).toBeUndefined();
    }
    expect(c.get(0)).toBeUndefined();
  });

  it('keeps no malformed SHA-256, and is empty after clear', () => {
    const c = new CompactFiles();
    expect(c.get(5)).toBeUndefined();
    c.set(5, { size: 1, mtimeMs: 2, sha256: 'not-a-sha' });
    c.set(6, { size: 1, mtimeMs: 2, sha256: sha(1).toUpperCase() });
    expect(c.size).toBe(0);
    expect(c.get(5)).toBeUndefined();
    c.set(7, { size: 10, mtimeMs: 20, sha256: sha(3) });
    expect(c.get(7)).toEqual({ size: 10, mtimeMs: 20, sha256: sha(3) });
    c.clear();
    expect(c.size).toBe(0);
    expect(c.get(7)).toBeUndefined();
    c.set(7, { size: 11, mtimeMs: 21, sha256: sha(4) });
    expect(c.get(7)).toEqual({ size: 11, mtimeMs: 21, sha256: sha(4) });
  });

  it('150k files grow the JS heap by under 2 MB', () => {
    const dist = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../packages/common/dist/store/local/manifest-writer.js');
    const script = `
      import v8 from 'node:v8';
      const { CompactFiles } = await import(${JSON.stringify(dist)});
      const sha = 'ab'.repeat(32);
      globalThis.gc();
      const base = v8.getHeapStatistics().used_heap_size;
      const c = new CompactFiles();
      for (let i = 0; i < 150000; i++) c.set(2 ** 33 + i * 13, { size: 1000 + i, mtimeMs: 1.7e12 + i * 1000, sha256: sha });
      globalThis.gc();
      const grew = v8.getHeapStatistics().used_heap_size - base;
      if (c.get(2 ** 33 + 43 * 13)?.size !== 1043) throw new Error('lookup');
      console.log(grew);`;
    const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const grew = Number(r.stdout.trim());
    // A Map from inode to slot and number arrays held ~8 MB of heap for as many files.
    expect(grew).toBeLessThan(2e6);
  });
});
