// tree-index.ts: a restore's index of a stored tree's manifest entries finds every listed path
// (any UTF-8, duplicates: the last one counts) and nothing else, gives each entry back as
// listed, and keeps its entries outside the JS heap (a process with --expose-gc: 150k entries,
// the default box's artifact tree and its directories, grow the heap by little). The check of a
// restore's fresh copy (checkCopy) against it: files of each size class (one synchronous read up
// to 64 KiB, 64 KiB synchronous reads up to 1 MiB, the thread pool above), one byte flipped or
// the size changed in each, must be named; an intact copy passes; an unlisted entry makes the
// copy not exact. The same found when parts of the copy are checked first (CopyCheck.part, as a
// split copy's cp finishes them) and the rest after: each difference named once, wherever it is.
// Both checks run twice: on the JS thread, and with the agent's addon reading and hashing the
// files in batches on the pool (file-digests.ts, digest-files.c), whose own answers for a file
// that is missing, a symlink, a directory, short or long are checked first.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { useFileDigests, type DigestFiles } from '../../packages/common/src/file-digests.js';
import { CopyCheck, TreeIndex, checkCopy } from '../../packages/common/src/store/local/tree-index.js';
import { nativeAddon } from '../../packages/agent/src/native.js';
// What the agent registered into (its imports of @boxback/common).
import { digestBatcher as agentBatcher } from '@boxback/common';

const sha = (i: number) => (i.toString(16).padStart(8, '0') + 'ab').repeat(7).slice(0, 64);

describe('TreeIndex', () => {
  it('finds each listed path, and only those, through its growth', () => {
    const ix = new TreeIndex('artifacts');
    const rel = (i: number) => `pipelines/p-${i % 97}/${i % 3 ? 'run' : 'läuf-ファイル'}-${i}/${'x'.repeat(i % 40)}console.log`;
    const n = 20_000;
    for (let i = 0; i < n; i++) {
      if (i % 10 === 9) ix.add(rel(i), { type: 'dir', size: 0 });
      else if (i % 10 === 8) ix.add(rel(i), { type: 'symlink', size: 3, target: `../t-${i}` });
      else ix.add(rel(i), { type: 'file', size: i * 2 ** 20 + 7, sha256: sha(i) });
    }
    expect(ix.size).toBe(n);
    for (let i = 0; i < n; i++) {
      const k = ix.indexOf(rel(i));
      expect(k).toBe(i);
      expect(ix.pathOf(k)).toBe(rel(i));
    }
    expect(ix.indexOf('pipelines/p-0/run-0')).toBe(-1);
    expect(ix.indexOf(`${rel(5)}x`)).toBe(-1);
    expect(ix.indexOf('')).toBe(-1);
    const f = ix.entry(ix.indexOf(rel(7)));
    expect(f).toMatchObject({ path: `artifacts/${rel(7)}`, type: 'file', size: 7 * 2 ** 20 + 7, sha256: sha(7) });
    expect(ix.shaIs(7, sha(7))).toBe(true);
    expect(ix.shaIs(7, sha(6))).toBe(false);
    expect(ix.entry(8)).toMatchObject({ type: 'symlink', target: '../t-8' });
    expect(ix.entry(9)).toMatchObject({ type: 'dir', sha256: undefined, target: undefined });
    expect([...ix.entries()].map((e) => e.path)).toEqual(Array.from({ length: n }, (_, i) => `artifacts/${rel(i)}`));
    expect(ix.listed().get(rel(9))).toBe('dir');
  });

  it('a path listed twice is one entry, as last listed', () => {
    const ix = new TreeIndex('t');
    ix.add('a', { type: 'symlink', size: 1, target: 'b' });
    ix.add('b', { type: 'file', size: 1, sha256: sha(1) });
    ix.add('a', { type: 'file', size: 5, sha256: sha(2) });
    expect(ix.size).toBe(2);
    expect(ix.entry(ix.indexOf('a'))).toMatchObject({ path: 't/a', type: 'file', size: 5, sha256: sha(2), target: undefined });
  });

  it('150k entries grow the JS heap by under 4 MB', () => {
    const dist = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../packages/common/dist/store/local/tree-index.js');
    const script = `
      import v8 from 'node:v8';
      const { TreeIndex } = await import(${JSON.stringify(dist)});
      const sha = 'ab'.repeat(32);
      globalThis.gc();
      const base = v8.getHeapStatistics().used_heap_size;
      const ix = new TreeIndex('artifacts');
      for (let i = 0; i < 150000; i++) ix.add('pipelines/pipe-' + (i % 40) + '/' + (i >> 4) + '/build/job/console-' + i + '.log', { type: 'file', size: 1000 + i, sha256: sha });
      globalThis.gc();
      const grew = v8.getHeapStatistics().used_heap_size - base;
      if (ix.indexOf('pipelines/pipe-3/2/build/job/console-43.log') !== 43) throw new Error('lookup');
      console.log(grew);`;
    const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const grew = Number(r.stdout.trim());
    // A Map of path strings and arrays of numbers held ~20-25 MB of heap for as many entries.
    expect(grew).toBeLessThan(4e6);
  });
});

const work = mkdtempSync(path.join(os.tmpdir(), 'boxback-tree-index-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const SIZES: Record<string, number> = {
  'empty.bin': 0,
  'small.bin': 3000,
  'edge-64k.bin': 64 * 1024,
  'over-64k.bin': 64 * 1024 + 1,
  'mid.bin': 300_000,
  'edge-1m.bin': 1 << 20,
  'big.bin': (1 << 20) + 4097,
};

/** A copy with every size class under sub/, a symlink, and the index the manifest would give. */
function makeCopy(name: string): { dest: string; index: TreeIndex } {
  const dest = path.join(work, name);
  mkdirSync(path.join(dest, 'sub'), { recursive: true });
  const index = new TreeIndex('artifacts');
  index.add('sub', { type: 'dir', size: 0 });
  for (const [file, size] of Object.entries(SIZES)) {
    const data = randomBytes(size);
    writeFileSync(path.join(dest, 'sub', file), data);
    index.add(`sub/${file}`, { type: 'file', size, sha256: createHash('sha256').update(data).digest('hex') });
  }
  symlinkSync('sub/small.bin', path.join(dest, 'latest'));
  index.add('latest', { type: 'symlink', size: 0, target: 'sub/small.bin' });
  return { dest, index };
}

const addonDigests = nativeAddon?.digestFiles?.bind(nativeAddon) as DigestFiles | undefined;

describe('digestFiles (the addon)', () => {
  it('is built, and registered by the agent', () => {
    expect(addonDigests).toBeTypeOf('function');
    expect(agentBatcher(() => undefined)).toBeDefined();
  });

  it("gives each file's SHA-256, or the size found, or -errno", async () => {
    const dir = path.join(work, 'digests');
    mkdirSync(path.join(dir, 'd'), { recursive: true });
    const data = randomBytes(700_000);
    writeFileSync(path.join(dir, 'ok.bin'), data);
    writeFileSync(path.join(dir, 'empty'), '');
    writeFileSync(path.join(dir, 'short'), 'abc');
    symlinkSync('ok.bin', path.join(dir, 'link'));
    execFileSync('mkfifo', [path.join(dir, 'fifo')]); // opened without blocking a pool thread
    const files = ['ok.bin', 'empty', 'short', 'link', 'd', 'gone', 'ok.bin', 'fifo'];
    const wanted = [data.length, 0, 4, data.length, 0, 1, data.length - 1, 0];
    const paths = Buffer.from(files.map((f) => `${dir}/${f}\0`).join(''));
    const sizes = Float64Array.from(wanted);
    const digests = Buffer.alloc(files.length * 32);
    await addonDigests!(paths, files.length, sizes, digests);
    expect([...sizes]).toEqual([
      data.length,
      0,
      3,
      -os.constants.errno.ELOOP,
      -os.constants.errno.EISDIR,
      -os.constants.errno.ENOENT,
      data.length,
      -os.constants.errno.EINVAL,
    ]);
    expect(digests.subarray(0, 32)).toEqual(createHash('sha256').update(data).digest());
    expect(digests.subarray(32, 64)).toEqual(createHash('sha256').digest());
    expect(() => addonDigests!(paths, files.length + 1, Float64Array.from([...wanted, 0]), Buffer.alloc(9 * 32))).toThrow(
      /fewer than count/,
    );
  });
});

const MODES = [
  { mode: 'js', name: 'on the JS thread', digests: undefined },
  { mode: 'pool', name: "in the addon's batches on the pool", digests: addonDigests },
];

for (const m of MODES)
  describe(`checkCopy, ${m.name}`, () => {
    beforeEach(() => useFileDigests(m.digests));
    afterEach(() => useFileDigests(addonDigests));

    it('passes an intact copy', async () => {
      const { dest, index } = makeCopy(`${m.mode}-intact`);
      expect(await checkCopy(dest, index)).toEqual({ exact: true, problems: [] });
    });

    it('names a flipped byte in a file of every size class', async () => {
      const { dest, index } = makeCopy(`${m.mode}-flipped`);
      for (const [file, size] of Object.entries(SIZES)) {
        if (size === 0) continue;
        const p = path.join(dest, 'sub', file);
        const buf = readFileSync(p);
        buf[size - 1] ^= 0x01;
        writeFileSync(p, buf);
      }
      const r = await checkCopy(dest, index);
      expect(r.exact).toBe(true);
      expect(r.problems).toEqual(
        Object.keys(SIZES)
          .filter((f) => SIZES[f] > 0)
          .map((f) => `artifacts/sub/${f}: SHA-256 mismatch`)
          .sort(),
      );
    });

    it('names a file one byte short or one byte long in every size class', async () => {
      const { dest, index } = makeCopy(`${m.mode}-sizes`);
      const changed = Object.entries(SIZES).map(([file, size]) => {
        const p = path.join(dest, 'sub', file);
        const now = size === 0 ? 1 : size - 1;
        if (size === 0) writeFileSync(p, 'x');
        else truncateSync(p, now);
        return `artifacts/sub/${file}: size ${now}, manifest says ${size}`;
      });
      const r = await checkCopy(dest, index);
      expect(r.problems).toEqual(changed.sort());
    });

    it('a missing listed file is named; an unlisted one makes the copy not exact', async () => {
      const a = makeCopy(`${m.mode}-missing`);
      rmSync(path.join(a.dest, 'sub', 'mid.bin'));
      expect(await checkCopy(a.dest, a.index)).toEqual({ exact: true, problems: ['artifacts/sub/mid.bin: missing'] });
      const b = makeCopy(`${m.mode}-unlisted`);
      writeFileSync(path.join(b.dest, 'sub', 'planted.sh'), 'evil');
      expect((await checkCopy(b.dest, b.index)).exact).toBe(false);
    });
  });

for (const m of MODES)
  describe(`CopyCheck by parts, ${m.name}`, () => {
    beforeEach(() => useFileDigests(m.digests));
    afterEach(() => useFileDigests(addonDigests));

    /** makeCopy's tree with two more directories, checked as parts `a` and `sub` first, then the rest. */
    function partsCopy(name: string): { dest: string; index: TreeIndex } {
      const c = makeCopy(name);
      for (const d of ['a', 'b']) {
        mkdirSync(path.join(c.dest, d));
        c.index.add(d, { type: 'dir', size: 0 });
        const data = randomBytes(5000);
        writeFileSync(path.join(c.dest, d, 'f.log'), data);
        c.index.add(`${d}/f.log`, { type: 'file', size: 5000, sha256: createHash('sha256').update(data).digest('hex') });
      }
      return c;
    }
    const byParts = async (dest: string, index: TreeIndex) => {
      const c = new CopyCheck(dest, index);
      await c.part('a');
      await c.part('sub');
      return c.finish();
    };

    it('passes an intact copy', async () => {
      const { dest, index } = partsCopy(`${m.mode}-parts-intact`);
      expect(await byParts(dest, index)).toEqual({ exact: true, problems: [] });
    });

    it('names each difference once, in a part or in the rest', async () => {
      const { dest, index } = partsCopy(`${m.mode}-parts-diff`);
      for (const f of ['sub/mid.bin', 'b/f.log', 'a/f.log']) {
        const buf = readFileSync(path.join(dest, f));
        buf[7] ^= 0x80;
        writeFileSync(path.join(dest, f), buf);
      }
      rmSync(path.join(dest, 'sub', 'big.bin'));
      truncateSync(path.join(dest, 'sub', 'small.bin'), 10);
      expect(await byParts(dest, index)).toEqual({
        exact: true,
        problems: [
          'artifacts/a/f.log: SHA-256 mismatch',
          'artifacts/b/f.log: SHA-256 mismatch',
          'artifacts/sub/big.bin: missing',
          'artifacts/sub/mid.bin: SHA-256 mismatch',
          'artifacts/sub/small.bin: size 10, manifest says 3000',
        ],
      });
    });

    it('an unlisted entry in a part, or in the rest, makes the copy not exact', async () => {
      const a = partsCopy(`${m.mode}-parts-planted-a`);
      writeFileSync(path.join(a.dest, 'sub', 'planted.sh'), 'evil');
      expect((await byParts(a.dest, a.index)).exact).toBe(false);
      const b = partsCopy(`${m.mode}-parts-planted-b`);
      writeFileSync(path.join(b.dest, 'b', 'planted.sh'), 'evil');
      expect((await byParts(b.dest, b.index)).exact).toBe(false);
      // A part of another type than listed.
      const c = partsCopy(`${m.mode}-parts-type`);
      rmSync(path.join(c.dest, 'a'), { recursive: true });
      writeFileSync(path.join(c.dest, 'a'), 'not a directory');
      expect((await byParts(c.dest, c.index)).exact).toBe(false);
    });
  });
