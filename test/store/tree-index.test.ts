// tree-index.ts: a restore's index of a stored tree's manifest entries finds every listed path
// (any UTF-8, duplicates: the last one counts) and nothing else, gives each entry back as
// listed, and keeps its entries outside the JS heap (a process with --expose-gc: 150k entries,
// the default box's artifact tree and its directories, grow the heap by little).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { TreeIndex } from '../../packages/common/src/store/local/tree-index.js';

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
