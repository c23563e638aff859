// A tree's read-ahead (store/read-ahead.ts, the agent's native prefetch.c): real files, the
// real page cache. Each file's pages are dropped from the cache first (`dd iflag=nocache`, after
// an fsync), then `fincore` says which files the read-ahead thread brought back: the first ones
// in the walk's order, no more than its window ahead of what the reader consumed, all of them
// once the reader has consumed the tree, and nothing after stop.
import { execFileSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, rmSync, statfsSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { nativeAddon } from '../../packages/agent/src/native.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'bb-read-ahead-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const KB = 1024;
const FILE = 100 * KB;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Files in walk order (walk.ts: a directory's entries by name, then its subdirectories in turn). */
function makeTree(root: string): string[] {
  const files = ['a.log', 'b.log', 'd1/c.log', 'd1/d.log', 'd1/sub/e.log', 'd2/f.log', 'd2/g.log', 'z.log'];
  for (const f of files) {
    mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    writeFileSync(path.join(root, f), Buffer.alloc(FILE, f));
    const fd = openSync(path.join(root, f), 'r');
    fsyncSync(fd);
    closeSync(fd);
  }
  symlinkSync('a.log', path.join(root, 'link.log'));
  // walk order: a.log b.log link.log z.log, then d1's c.log d.log, d1/sub's e.log, then d2's f.log g.log
  return ['a.log', 'b.log', 'z.log', 'd1/c.log', 'd1/d.log', 'd1/sub/e.log', 'd2/f.log', 'd2/g.log'];
}

/** Drop each file's pages from the page cache. */
function dropCached(root: string, files: string[]): void {
  for (const f of files) execFileSync('dd', [`if=${path.join(root, f)}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** The files with any page in the page cache (`fincore`). */
function cached(root: string, files: string[]): string[] {
  return files.filter((f) => {
    const out = execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', path.join(root, f)], { encoding: 'utf8' });
    return Number(out.trim()) > 0;
  });
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !cond() && Date.now() < end;) await sleep(20);
}

// tmpfs keeps every page in memory: nothing to drop there, nothing to show.
const TMPFS = 0x01021994;
const pageCacheTest = nativeAddon?.prefetchStart && statfsSync(work).type !== TMPFS ? it : it.skip;

describe("a tree's read-ahead on the agent's thread", () => {
  pageCacheTest('reads files ahead in walk order within its window, goes on as the reader consumes, and stops', async () => {
    const a = nativeAddon!;
    const root = path.join(work, 'tree');
    const order = makeTree(root);
    dropCached(root, order);
    expect(cached(root, order)).toEqual([]);

    // a window of 2.5 files: two files ahead of a reader that has read nothing
    const h = a.prefetchStart!(root, 2.5 * FILE);
    await until(() => cached(root, order).length >= 2);
    await sleep(200);
    expect(cached(root, order)).toEqual(['a.log', 'b.log']);

    // the reader consumed three files: five may be ahead now (what was consumed stays cached)
    a.prefetchConsumed!(h, 3 * FILE);
    await until(() => cached(root, order).length >= 5);
    await sleep(200);
    expect(cached(root, order)).toEqual(order.slice(0, 5));

    // stopped: nothing more is read, however much is consumed
    expect(a.prefetchStop!(h)).toEqual([5, 5 * FILE]);
    a.prefetchConsumed!(h, 100 * FILE);
    await sleep(200);
    expect(cached(root, order)).toEqual(order.slice(0, 5));
    expect(a.prefetchStop!(h)).toEqual([5, 5 * FILE]); // idempotent

    // a reader keeping up: the whole tree
    dropCached(root, order);
    const all = a.prefetchStart!(root, 2.5 * FILE);
    for (let i = 0; i < order.length; i++) {
      await until(() => cached(root, order).includes(order[i]));
      a.prefetchConsumed!(all, FILE);
    }
    await until(() => cached(root, order).length === order.length);
    expect(cached(root, order)).toEqual(order);
    expect(a.prefetchStop!(all)).toEqual([order.length, order.length * FILE]);
  });

  it.skipIf(!nativeAddon?.prefetchStart)('a root that does not exist reads nothing and stops at once', () => {
    const a = nativeAddon!;
    const h = a.prefetchStart!(path.join(work, 'missing'), 1 << 20);
    expect(a.prefetchStop!(h)).toEqual([0, 0]);
  });
});
