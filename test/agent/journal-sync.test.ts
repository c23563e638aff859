// The incremental tree sync against the real rsync: for many seeded random change
// sequences, the tree built from the journaled paths (a link farm of the previous tree
// plus `rsync --files-from`) must equal what a full `rsync -a --delete --link-dest` pass
// builds from the same source, and the previous tree must not change by one byte or mode.
// The journal here is synthetic (exactly the paths each operation touched, sometimes with
// noise); journal-watch.test.ts drives the real watcher.
import { execFileSync } from 'node:child_process';
import { promises as fsp, lstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compileExcludes } from '@boxback/common';
import { reduceToRoots, syncTreeIncremental, useNanosecondMtimes } from '@boxback/common';
import { nativeAddon } from '../../packages/agent/src/native.js';
import { planChunks } from '../../packages/agent/src/journal/watcher.js';
import { Mutator, diffTrees, fullRsync, prng, snapshotTree } from '../helpers/journal-trees.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'boxback-jsync-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const EXCLUDES = ['*.tmp', '/cache/'];

/** One seeded history: populate, full backup, then rounds of changes and incremental backups. */
async function history(seed: number, rounds: number, opts: { noise?: boolean; during?: boolean; rsyncDirs?: boolean } = {}) {
  const rnd = prng(seed);
  const dir = path.join(tmp, `s${seed}`);
  const src = path.join(dir, 'src');
  await fsp.mkdir(src, { recursive: true });
  const m = new Mutator(src, rnd);
  await m.populate(12 + Math.floor(rnd() * 20), 60 + Math.floor(rnd() * 120));
  let prev = path.join(dir, 'b0');
  fullRsync(src, prev, undefined, EXCLUDES);
  let carried: string[] = [];
  for (let round = 1; round <= rounds; round++) {
    const ops: string[] = [];
    const changed = new Set<string>(carried);
    const nOps = 1 + Math.floor(rnd() * 14);
    for (let i = 0; i < nOps; i++) {
      const s = await m.step();
      ops.push(s.op);
      s.touched.forEach((p) => changed.add(p));
    }
    if (opts.noise) {
      // Over-reporting is allowed: parents, a path that never existed, the same path twice.
      changed.add('no/such/path');
      const first = [...changed][0];
      if (first?.includes('/')) changed.add(path.posix.dirname(first));
    }
    const before = await snapshotTree(prev, { ns: true });
    const inc = path.join(dir, `inc${round}`);
    const full = path.join(dir, `full${round}`);
    const during: string[] = [];
    let stop = false;
    const mutateDuring = async () => {
      while (!stop) {
        const s = await m.step();
        during.push(...s.touched);
        await new Promise((r) => setTimeout(r, 1));
      }
    };
    const concurrent = opts.during && round % 2 === 0 ? mutateDuring() : undefined;
    let res;
    try {
      // Without the agent's nanosecond mtime setter, the directories' attributes by rsync.
      if (opts.rsyncDirs) useNanosecondMtimes(undefined);
      res = await syncTreeIncremental({ source: src, dest: inc, prevTree: prev, changed, excludes: EXCLUDES });
    } finally {
      if (opts.rsyncDirs) useNanosecondMtimes(nativeAddon?.setMtime?.bind(nativeAddon));
      stop = true;
      await concurrent;
    }
    // With the addon's mtime setter the roots are copied in this process (root-copy.ts), else by rsync.
    expect(res.copiedBy ?? (opts.rsyncDirs ? 'rsync' : 'process')).toBe(opts.rsyncDirs ? 'rsync' : 'process');
    // The previous backup's tree is untouched: bytes, modes, mtimes, owners, link targets.
    expect(diffTrees(before, await snapshotTree(prev, { ns: true })), `seed ${seed} round ${round}: prevTree changed`).toEqual([]);
    if (concurrent) {
      // Changes made while the sync ran belong to the next backup's journal.
      carried = during;
      prev = inc;
      continue;
    }
    carried = [];
    fullRsync(src, full, prev, EXCLUDES);
    // Every mtime to the nanosecond, as the journal bench compares the two trees.
    const snap = (t: string) => snapshotTree(t, { ns: true });
    const diffs = diffTrees(await snap(full), await snap(inc), 20, await snap(src));
    expect(diffs, `seed ${seed} round ${round} after ${ops.join('; ')}`).toEqual([]);
    expect(res.warnings).toEqual([]);
    prev = inc;
  }
}

describe('incremental sync from a journal equals a full rsync --link-dest pass', () => {
  it('reduces changed paths to roots', () => {
    expect(reduceToRoots(['a/b/c', 'a/b', 'a/bc', 'x', 'x/y', 'a/b/', './q'])).toEqual(['a/b', 'a/bc', 'q', 'x']);
    expect(reduceToRoots(['a', '.'])).toEqual(['']);
    expect(() => reduceToRoots(['../etc'])).toThrow(/outside/);
  });

  it('matches rsync exclude patterns', () => {
    const m = compileExcludes(['*.tmp', '/cache/', 'logs/**/*.gz', 'build/***', '+ keep']);
    expect(m.excluded('a/b/x.tmp', false)).toBe(true);
    expect(m.excluded('cache', true)).toBe(true);
    expect(m.excluded('cache', false)).toBe(false);
    expect(m.excluded('a/cache', true)).toBe(false);
    expect(m.excluded('x/logs/a/b/c.gz', false)).toBe(true);
    expect(m.excluded('build', true)).toBe(true);
    expect(m.excludedOrUnder('cache/c.bin', false)).toBe(true);
    expect(m.unsupported).toEqual(['+ keep']);
  });

  it('splits a tree into chunks for the first watcher scan', () => {
    const entries = new Map([
      ['', 2],
      ['a', 3],
      ['a/x', 50],
      ['a/y', 5],
      ['b', 4],
    ]);
    const { roots, skeleton } = planChunks(entries.keys(), entries, 20);
    // a/x alone is over the limit: it is watched with the skeleton, its own entries at once.
    expect(roots.sort()).toEqual(['a/y', 'b']);
    expect([...skeleton].sort()).toEqual(['', 'a', 'a/x']);
    expect(planChunks(entries.keys(), entries, 1000).roots).toEqual(['']);
  });

  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
    it(`random change sequence, seed ${seed}`, async () => {
      await history(seed, 6, { noise: seed % 2 === 0 });
    });
  }

  it("sets the directories' mtimes in place when the agent's addon is built (no rsync run for them)", () => {
    // npm ci builds the addon where there is a compiler (CI has one): the setter is registered.
    expect(typeof nativeAddon?.setMtime).toBe('function');
  });

  for (const seed of [9, 10]) {
    it(`random change sequence, directory attributes by rsync (no addon), seed ${seed}`, async () => {
      await history(seed, 6, { noise: seed % 2 === 0, rsyncDirs: true });
    });
  }

  for (const seed of [101, 102, 103]) {
    it(`changes made while the sync runs land in the next backup, seed ${seed}`, async () => {
      await history(seed, 6, { during: true });
    });
  }

  it('leaves a root holding a FIFO to rsync, and still equals the full pass', async () => {
    const dir = path.join(tmp, 'fifo');
    const src = path.join(dir, 'src');
    await fsp.mkdir(path.join(src, 'run1'), { recursive: true });
    writeFileSync(path.join(src, 'run1', 'a.log'), 'a');
    const prev = path.join(dir, 'prev');
    fullRsync(src, prev, undefined);
    await fsp.mkdir(path.join(src, 'run2'));
    writeFileSync(path.join(src, 'run2', 'b.log'), 'b');
    execFileSync('mkfifo', [path.join(src, 'run2', 'pipe')]);
    const inc = path.join(dir, 'inc');
    const r = await syncTreeIncremental({ source: src, dest: inc, prevTree: prev, changed: ['run2'] });
    expect(r.copiedBy).toBe('rsync');
    const full = path.join(dir, 'full');
    fullRsync(src, full, prev);
    expect(lstatSync(path.join(inc, 'run2', 'pipe')).isFIFO()).toBe(true);
    // (a snapshot reads every file: the FIFOs go first, the rest is compared, run2's mtime from full's)
    for (const t of [src, full, inc]) rmSync(path.join(t, 'run2', 'pipe'));
    const snap = async (t: string) => {
      const m = await snapshotTree(t, { ns: true });
      m.delete('run2');
      return m;
    };
    expect(diffTrees(await snap(full), await snap(inc), 20, await snap(src))).toEqual([]);
    // Without a FIFO, the same roots are copied here, and BOXBACK_ROOT_COPY=rsync hands them to rsync.
    // (a file from 1 MiB is copied through libuv's pool, after the small ones)
    writeFileSync(path.join(src, 'run2', 'big.bin'), Buffer.alloc(3 << 19, 7));
    await fsp.chmod(path.join(src, 'run2', 'big.bin'), 0o640);
    const own = await syncTreeIncremental({ source: src, dest: path.join(dir, 'inc2'), prevTree: prev, changed: ['run2'] });
    expect(own.copiedBy).toBe('process');
    expect(own.filesTransferred).toBe(2);
    expect(own.bytesTransferred).toBe(1 + (3 << 19));
    fullRsync(src, path.join(dir, 'full2'), prev);
    expect(
      diffTrees(
        await snapshotTree(path.join(dir, 'full2'), { ns: true }),
        await snapshotTree(path.join(dir, 'inc2'), { ns: true }),
        20,
        await snapshotTree(src, { ns: true }),
      ),
    ).toEqual([]);
    process.env.BOXBACK_ROOT_COPY = 'rsync';
    try {
      const forced = await syncTreeIncremental({ source: src, dest: path.join(dir, 'inc3'), prevTree: prev, changed: ['run2'] });
      expect(forced.copiedBy).toBe('rsync');
    } finally {
      delete process.env.BOXBACK_ROOT_COPY;
    }
  });

  it('never writes through a hard link into the previous tree', async () => {
    const dir = path.join(tmp, 'links');
    const src = path.join(dir, 'src');
    await fsp.mkdir(path.join(src, 'd'), { recursive: true });
    writeFileSync(path.join(src, 'd', 'f'), 'old bytes');
    writeFileSync(path.join(src, 'same'), 'unchanged');
    const prev = path.join(dir, 'prev');
    fullRsync(src, prev, undefined);
    const prevIno = lstatSync(path.join(prev, 'd', 'f')).ino;
    writeFileSync(path.join(src, 'd', 'f'), 'new, longer bytes');
    await fsp.chmod(path.join(src, 'same'), 0o600);
    const dest = path.join(dir, 'dest');
    const r = await syncTreeIncremental({ source: src, dest, prevTree: prev, changed: ['d/f', 'same'] });
    expect(await fsp.readFile(path.join(prev, 'd', 'f'), 'utf8')).toBe('old bytes');
    expect(lstatSync(path.join(prev, 'same')).mode & 0o777).not.toBe(0o600);
    expect(await fsp.readFile(path.join(dest, 'd', 'f'), 'utf8')).toBe('new, longer bytes');
    expect(lstatSync(path.join(dest, 'd', 'f')).ino).not.toBe(prevIno);
    expect(lstatSync(path.join(dest, 'same')).mode & 0o777).toBe(0o600);
    // chmod alone: a new inode with the new mode, never a chmod through the link.
    expect(lstatSync(path.join(dest, 'same')).ino).not.toBe(lstatSync(path.join(prev, 'same')).ino);
    expect(r.filesTransferred).toBeGreaterThanOrEqual(1);
  });

  it('counts the files under the roots that --link-dest linked (the describe needs their checksums)', async () => {
    const dir = path.join(tmp, 'linked');
    const src = path.join(dir, 'src');
    await fsp.mkdir(path.join(src, 'd'), { recursive: true });
    writeFileSync(path.join(src, 'd', 'same'), 'unchanged');
    writeFileSync(path.join(src, 'd', 'changed'), 'old');
    const prev = path.join(dir, 'prev');
    fullRsync(src, prev, undefined);
    writeFileSync(path.join(src, 'd', 'changed'), 'new bytes');
    await fsp.mkdir(path.join(src, 'run2'));
    writeFileSync(path.join(src, 'run2', 'a'), 'a');
    writeFileSync(path.join(src, 'run2', 'b'), 'b');
    // The directory as the root: its unchanged file is linked, the other written.
    const whole = await syncTreeIncremental({ source: src, dest: path.join(dir, 'dest1'), prevTree: prev, changed: ['d', 'run2'] });
    expect(whole.filesTransferred).toBe(3);
    expect(whole.linkedFiles).toBe(1);
    expect(lstatSync(path.join(dir, 'dest1', 'd', 'same')).ino).toBe(lstatSync(path.join(prev, 'd', 'same')).ino);
    // Only the changed file and a new directory: nothing linked under the roots.
    const exact = await syncTreeIncremental({ source: src, dest: path.join(dir, 'dest2'), prevTree: prev, changed: ['d/changed', 'run2'] });
    expect(exact.filesTransferred).toBe(3);
    expect(exact.linkedFiles).toBe(0);
    // Nothing to copy: nothing linked either.
    const none = await syncTreeIncremental({ source: src, dest: path.join(dir, 'dest3'), prevTree: prev, changed: [] });
    expect(none.linkedFiles).toBe(0);
  });

  it('refuses a non-empty destination and a missing previous tree', async () => {
    const dir = path.join(tmp, 'refuse');
    await fsp.mkdir(path.join(dir, 'src'), { recursive: true });
    await fsp.mkdir(path.join(dir, 'dest'), { recursive: true });
    writeFileSync(path.join(dir, 'dest', 'x'), 'x');
    await expect(
      syncTreeIncremental({ source: path.join(dir, 'src'), dest: path.join(dir, 'dest'), prevTree: path.join(dir, 'src'), changed: [] }),
    ).rejects.toThrow(/not empty/);
    await expect(
      syncTreeIncremental({ source: path.join(dir, 'src'), dest: path.join(dir, 'd2'), prevTree: path.join(dir, 'nope'), changed: [] }),
    ).rejects.toThrow(/previous tree/);
  });
});
