// The S3 store through the BackupStore interface on a real radosgw: a round trip with equal
// bytes, owners, modes, mtimes and symlinks; dedup across backups and hosts measured on the
// server; nothing readable on the server; listing, delete and verify.
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import fsp from 'node:fs/promises';

import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useReadAhead } from '../../packages/common/src/store/read-ahead.js';
import { ROOTS_AHEAD } from '../../packages/common/src/store/s3/tree-upload.js';
import { useOpenInPlace } from '../../packages/common/src/store/s3/sealed.js';
import { diffTrees, snapshotTree } from '../helpers/journal-trees.js';
import { sharedRadosgw, type RadosgwInfo } from '../helpers/radosgw.js';
import { bucketBytes, bucketObjects, makeTestStore, makeTree, removeTestDirs, testDir, writeBackup } from '../helpers/s3-store.js';

let rgw: RadosgwInfo;
afterAll(removeTestDirs);
beforeAll(async () => {
  rgw = await sharedRadosgw();
});

const tmp = testDir;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const without = (m: Map<string, unknown>, k: string) => new Map([...m].filter(([x]) => x !== k)) as typeof m;

async function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of s) parts.push(b as Buffer);
  return Buffer.concat(parts);
}

describe('S3 store round trip', () => {
  it('stores files and a tree, lists the backup, and gives back equal bytes, owners, modes, mtimes and symlinks', async () => {
    const t = await makeTestStore(rgw);
    const src = tmp('src');
    makeTree(src);
    const dbZip = randomBytes(700 * 1024);
    const w = await writeBackup(t.store, {
      host: 'gocd1',
      files: { 'db.zip': dbZip, 'version.txt': 'go-server 23.5.0\n' },
      trees: [{ name: 'artifacts', source: src }],
    });
    expect(w.trees.artifacts).toMatchObject({ mode: 'full', files: 34 }); // 33 files and a symlink

    // a second store object (another process) sees it
    const other = t.again();
    expect(await other.listHosts()).toEqual(['gocd1']);
    expect(await other.listBackups('gocd1')).toEqual([w.ref]);
    expect(await other.has(w.ref)).toBe(true);
    expect(await other.readManifestText(w.ref)).toBe(w.manifest);

    // localFile: a checked download into the scratch directory
    const scratch = tmp('scratch');
    const lf = await other.localFile(w.ref, 'db.zip', { scratchDir: scratch, sha256: sha(dbZip) });
    expect(sha(readFileSync(lf.path))).toBe(sha(dbZip));
    await lf.release();
    expect(await fsp.readdir(scratch)).toEqual([]);
    // openFile with a range, openRandomAccess
    expect(
      (await readAll(await other.openFile(w.ref, 'db.zip', { start: 1000, end: 300_000 }))).equals(dbZip.subarray(1000, 300_001)),
    ).toBe(true);
    const ra = await other.openRandomAccess(w.ref, 'db.zip');
    const buf = Buffer.alloc(5000);
    expect((await ra.read(buf, 0, 5000, 262_000)).bytesRead).toBe(5000);
    expect(buf.equals(dbZip.subarray(262_000, 267_000))).toBe(true);
    await ra.close();

    // fetchTree: the tree as it was, into a new directory
    const dest = path.join(tmp('restore'), 'artifacts');
    await other.fetchTree(w.ref, 'artifacts', dest);
    const a = without(await snapshotTree(src), '.');
    const b = without(await snapshotTree(dest), '.');
    expect(diffTrees(a, b)).toEqual([]);
    expect(b.get('pipelines/build-42/reports/TEST-report-3.xml')).toMatchObject({ uid: 1234, gid: 5678 });
    expect(b.get('latest.jar')).toMatchObject({ type: 'symlink', target: 'pipelines/build-42/artifact.jar' });
    expect(b.get('pipelines/build-42')).toMatchObject({ mode: 0o750 });
    expect(b.get('secret-plan.txt')).toMatchObject({ mode: 0o600 });
    expect(b.get('pipelines/build-42/artifact.jar')!.mtimeMs).toBe(a.get('pipelines/build-42/artifact.jar')!.mtimeMs);
    expect(Math.abs(b.get('pipelines/build-42/artifact.jar')!.mtimeMs! - Date.parse('2026-01-02T03:04:05.678Z'))).toBeLessThanOrEqual(1);

    expect(await other.verify(w.ref)).toMatchObject({ ok: true, filesChecked: 35, problems: [] });
    expect(await other.verify(w.ref, { quick: true })).toMatchObject({ ok: true, bytesChecked: 0 });
    await other.close();
    await t.store.close();
  });

  it('a timestamp taken by a complete backup moves on a second; an exact one that exists is refused', async () => {
    const t = await makeTestStore(rgw);
    const at = new Date('2026-03-01T10:00:00Z');
    const a = await writeBackup(t.store, { host: 'h', at, files: { 'a.txt': 'a' } });
    const b = await writeBackup(t.store, { host: 'h', at, files: { 'a.txt': 'b' } });
    expect([a.ref.timestamp, b.ref.timestamp]).toEqual(['20260301-100000', '20260301-100001']);
    await expect(
      t.store.begin({
        host: 'h',
        startedAt: at,
        timestamp: '20260301-100000',
        jobId: 'j',
        log: (await import('../helpers/s3-store.js')).quiet,
      }),
    ).rejects.toMatchObject({
      code: 'BOXBACK_ERR_ALREADY_EXISTS',
    });
    await expect(t.store.readManifestText({ host: 'h', timestamp: '20990101-000000' })).rejects.toMatchObject({
      code: 'BOXBACK_ERR_NOT_FOUND',
    });
    await t.store.close();
  });
});

describe('S3 store read-ahead', () => {
  it("a first backup reads its tree ahead on the agent's thread, consumed in full; a backup with a previous one does not", async () => {
    const { nativeAddon } = await import('../../packages/agent/src/native.js');
    const a = nativeAddon;
    expect(typeof a?.prefetchStart).toBe('function');
    const runs: Array<{ root: string; consumed: number; stopped: number; ahead?: { files: number; bytes: number } }> = [];
    useReadAhead((root, windowBytes) => {
      const h = a!.prefetchStart!(root, windowBytes);
      const run: (typeof runs)[number] = { root, consumed: 0, stopped: 0 };
      runs.push(run);
      return {
        consumed: (n) => {
          run.consumed += n;
          a!.prefetchConsumed!(h, n);
        },
        stop: () => {
          run.stopped++;
          const [files, bytes] = a!.prefetchStop!(h);
          return (run.ahead = { files, bytes });
        },
      };
    });
    try {
      const t = await makeTestStore(rgw);
      const src = tmp('read-ahead');
      makeTree(src, 3);
      const fileBytes = (await snapshotTree(src)).values();
      let total = 0;
      let files = 0;
      for (const e of fileBytes) {
        if (e.type !== 'file') continue;
        total += e.size;
        files++;
      }
      const first = await writeBackup(t.store, { host: 'ra', trees: [{ name: 'artifacts', source: src }] });
      expect(runs).toHaveLength(1);
      // every file consumed once, the thread stopped once, and it had read ahead the files that have bytes
      expect(runs[0]).toMatchObject({ root: src, consumed: total, stopped: 1, ahead: { files: files - 1, bytes: total } });
      await writeBackup(t.store, { host: 'ra', previous: first.ref, trees: [{ name: 'artifacts', source: src }] });
      expect(runs).toHaveLength(1);
      const dest = path.join(tmp('read-ahead-restore'), 'artifacts');
      await t.store.fetchTree(first.ref, 'artifacts', dest);
      expect(diffTrees(without(await snapshotTree(src), '.'), without(await snapshotTree(dest), '.'))).toEqual([]);
      await t.store.close();
    } finally {
      useReadAhead(undefined);
    }
  });
});

describe('S3 store framing', () => {
  it("files at the chunker's and the 64 KiB frames' boundaries come back equal, and random reads cross blob edges", async () => {
    const t = await makeTestStore(rgw, { packTarget: 3 * 1024 * 1024 });
    const K = 1024;
    const M = 1024 * 1024;
    const sizes = [
      0,
      1,
      64 * K - 1,
      64 * K,
      64 * K + 1,
      256 * K - 1,
      256 * K,
      256 * K + 1,
      4 * M - 1,
      4 * M,
      4 * M + 1,
      12 * M + 64 * K + 7,
    ];
    const files: Record<string, Buffer> = {};
    for (const n of sizes) files[`f-${n}.bin`] = randomBytes(n);
    files['zeros-9m.bin'] = Buffer.alloc(9 * M); // no content-defined cut: cut at the 4 MiB maximum
    const w = await writeBackup(t.store, { host: 'h', files });
    const other = t.again();
    const scratch = tmp('frames');
    for (const [rel, data] of Object.entries(files)) {
      const lf = await other.localFile(w.ref, rel, { scratchDir: scratch });
      expect(sha(readFileSync(lf.path)), rel).toBe(sha(data));
      await lf.release();
    }
    const big = files[`f-${12 * M + 64 * K + 7}.bin`];
    const ra = await other.openRandomAccess(w.ref, `f-${12 * M + 64 * K + 7}.bin`);
    expect(ra.size).toBe(big.length);
    for (const at of [0, 4 * M - 10, 8 * M - 1, big.length - 100]) {
      const buf = Buffer.alloc(6 * M);
      const { bytesRead } = await ra.read(buf, 0, buf.length, at);
      expect(bytesRead).toBe(Math.min(buf.length, big.length - at));
      expect(buf.subarray(0, bytesRead).equals(big.subarray(at, at + bytesRead)), `at ${at}`).toBe(true);
    }
    await ra.close();
    const zeros = await readAll(await other.openFile(w.ref, 'zeros-9m.bin', { start: 4 * M - 3, end: 8 * M + 2 }));
    expect(zeros.length).toBe(4 * M + 6);
    expect(await other.verify(w.ref, { sample: 0.5 })).toMatchObject({ ok: true, filesChecked: sizes.length + 1 });
    await other.close();

    // a tree's files of one blob (written by the fetch thread): one and several frames, raw and
    // compressed, one content in two files; several blobs (written here)
    const src = tmp('frames-tree');
    const text = Buffer.from(Array.from({ length: 6000 }, (_, i) => `line ${i % 97} of a build log\n`).join(''));
    const tree: Record<string, Buffer> = { 'log.txt': text, 'copy/log.txt': text, 'big.bin': randomBytes(5 * M) };
    for (const n of sizes.filter((x) => x <= 256 * K + 1)) tree[`d${n}/f.bin`] = randomBytes(n);
    for (const [rel, data] of Object.entries(tree)) {
      mkdirSync(path.dirname(path.join(src, rel)), { recursive: true });
      writeFileSync(path.join(src, rel), data, { mode: 0o751 });
    }
    const wt = await writeBackup(t.store, { host: 'h', trees: [{ name: 'artifacts', source: src }] });
    const fetchEqual = async () => {
      const dest = path.join(tmp('frames-restore'), 'artifacts');
      await t.again().fetchTree(wt.ref, 'artifacts', dest);
      expect(diffTrees(without(await snapshotTree(src), '.'), without(await snapshotTree(dest), '.'))).toEqual([]);
      for (const [rel, data] of Object.entries(tree)) expect(sha(readFileSync(path.join(dest, rel))), rel).toBe(sha(data));
    };
    // the agent's native.ts registers its in-place opener when imported (the read-ahead test above did)
    const { nativeAddon: a } = await import('../../packages/agent/src/native.js');
    useOpenInPlace(undefined);
    await fetchEqual(); // Node's Decipher, brotli into the decompressor's buffer
    // the addon registered (as the daemon does): the files of one blob decrypted in their GET buffers
    expect(a?.gcmAvailable?.()).toBe(true);
    let opened = 0;
    useOpenInPlace((...args) => {
      opened++;
      return a!.gcmOpenFrames!(...args);
    });
    try {
      await fetchEqual();
    } finally {
      useOpenInPlace(undefined);
    }
    // the files of one blob opened in place: log.txt (its copy shares the blob) and d1 .. d256K at least
    expect(opened).toBeGreaterThanOrEqual(7);
  });
});

describe('S3 store dedup', () => {
  it('a second backup of an unchanged tree uploads almost nothing; a 2% growth of a large file uploads about 2%', async () => {
    const t = await makeTestStore(rgw);
    const src = tmp('dedup');
    makeTree(src, 7, 20 * 1024 * 1024);
    const first = await writeBackup(t.store, { host: 'gocd1', trees: [{ name: 'artifacts', source: src }] });
    const afterFirst = await bucketBytes(rgw, t.bucket);
    const put1 = t.store.client.counters.putBytes;

    const second = await writeBackup(t.store, { host: 'gocd1', previous: first.ref, trees: [{ name: 'artifacts', source: src }] });
    const afterSecond = await bucketBytes(rgw, t.bucket);
    const put2 = t.store.client.counters.putBytes - put1;
    expect(second.trees.artifacts.reusedHashes).toBe(33);
    expect(second.trees.artifacts.bytesTransferred).toBe(0);
    // only the new manifest, content map, index and snapshot objects: a few KiB against > 20 MiB
    expect(put2).toBeLessThan(64 * 1024);
    expect(afterSecond.bytes - afterFirst.bytes).toBeLessThan(64 * 1024);

    // a database that grew by 2%
    const db = path.join(src, 'pipelines/build-42/artifact.jar');
    appendFileSync(db, randomBytes(Math.round(0.02 * 20 * 1024 * 1024)));
    const put3Start = t.store.client.counters.putBytes;
    const third = await writeBackup(t.store, { host: 'gocd1', previous: second.ref, trees: [{ name: 'artifacts', source: src }] });
    const put3 = t.store.client.counters.putBytes - put3Start;
    expect(third.trees.artifacts.hashedBytes).toBeGreaterThan(20 * 1024 * 1024);
    // the grown tail and the chunk it ends in (chunks average ~1.25 MiB, 4 MiB at most)
    expect(put3).toBeLessThan(0.02 * 20 * 1024 * 1024 + 4.5 * 1024 * 1024);
    console.log(
      `dedup figures: first backup PUT ${put1} bytes (bucket ${afterFirst.bytes}); unchanged second PUT ${put2} bytes (bucket +${afterSecond.bytes - afterFirst.bytes}); ` +
        `after 2% growth (${Math.round(0.02 * 20 * 1024 * 1024)} bytes appended) PUT ${put3} bytes`,
    );
    const dest = tmp('dedup-restore');
    await t.store.fetchTree(third.ref, 'artifacts', path.join(dest, 'a'));
    expect(sha(readFileSync(path.join(dest, 'a/pipelines/build-42/artifact.jar')))).toBe(sha(readFileSync(db)));
    await t.store.close();
  });

  it("an archive cut at its blocks' edges stores a repeated or moved block once, whatever precedes it", async () => {
    const t = await makeTestStore(rgw);
    const K = 1024;
    // db.zip-like: a header, independently compressed blocks (700 KiB and just over 1 MiB), a tail
    const x = randomBytes(700 * K);
    const y = randomBytes(1024 * K + 5);
    const archive = (head: Buffer, blocks: Buffer[], tail: Buffer) => {
      const cuts: number[] = [];
      let at = head.length;
      for (const b of blocks) {
        cuts.push(at);
        at += b.length;
      }
      cuts.push(at);
      return { data: Buffer.concat([head, ...blocks, tail]), cuts };
    };
    const a = archive(randomBytes(100), [x, y, x, y], randomBytes(300));
    const put0 = t.store.client.counters.putBytes;
    const first = await writeBackup(t.store, { host: 'gocd1', files: { 'db.zip': a.data }, cuts: { 'db.zip': a.cuts } });
    const put1 = t.store.client.counters.putBytes - put0;
    // each block once (no compression: random bytes), not the 3.4 MiB of the file
    expect(put1).toBeGreaterThan(x.length + y.length);
    expect(put1).toBeLessThan(x.length + y.length + 64 * K);

    // the next archive: a longer header moves every block, one block is new
    const z = randomBytes(50 * K);
    const b = archive(randomBytes(777), [y, x, x, z], randomBytes(300));
    const second = await writeBackup(t.store, { host: 'gocd1', files: { 'db.zip': b.data }, cuts: { 'db.zip': b.cuts } });
    const put2 = t.store.client.counters.putBytes - put0 - put1;
    // the new block, header and tail, and the backup's own objects; a chunker cutting by content
    // alone would store at least its 256 KiB minimum again around the moved header
    expect(put2).toBeLessThan(z.length + 100 * K);
    console.log(`archive cut at its blocks: first PUT ${put1} bytes (file ${a.data.length}); moved blocks + 50 KiB new PUT ${put2} bytes`);

    const other = t.again();
    for (const [w, data] of [
      [first, a.data],
      [second, b.data],
    ] as const) {
      const lf = await other.localFile(w.ref, 'db.zip', { scratchDir: tmp('cuts') });
      expect(sha(readFileSync(lf.path))).toBe(sha(data));
      await lf.release();
      const ra = await other.openRandomAccess(w.ref, 'db.zip');
      const buf = Buffer.alloc(2000);
      for (const at of [0, 99, 776, 700 * K + 50, data.length - 1000]) {
        const { bytesRead } = await ra.read(buf, 0, buf.length, at);
        expect(buf.subarray(0, bytesRead).equals(data.subarray(at, at + 2000)), `at ${at}`).toBe(true);
      }
      await ra.close();
    }
    await other.close();
    await t.store.close();
  });

  it('two hosts with the same artifacts store them once', async () => {
    const t = await makeTestStore(rgw);
    const a = tmp('hostA');
    const b = tmp('hostB');
    makeTree(a, 3, 8 * 1024 * 1024);
    makeTree(b, 3, 8 * 1024 * 1024);
    writeFileSync(path.join(b, 'only-on-b.txt'), 'b');
    await writeBackup(t.store, { host: 'gocd1', trees: [{ name: 'artifacts', source: a }] });
    const one = await bucketBytes(rgw, t.bucket);
    const hostB = t.again(); // another agent, its own process
    const wb = await writeBackup(hostB, { host: 'gocd2', trees: [{ name: 'artifacts', source: b }] });
    const two = await bucketBytes(rgw, t.bucket);
    expect(one.bytes).toBeGreaterThan(8 * 1024 * 1024);
    expect(wb.trees.artifacts.bytesTransferred).toBe(1);
    expect(two.bytes - one.bytes).toBeLessThan(64 * 1024);
    console.log(`two hosts: host A stored ${one.bytes} bytes; host B with the same artifacts added ${two.bytes - one.bytes} bytes`);
    expect(await hostB.listHosts()).toEqual(['gocd1', 'gocd2']);
    await hostB.close();
    await t.store.close();
  });
});

describe('S3 store journaled tree sync', () => {
  it('with a trusted journal only the changed paths are read, and the tree is described exactly as a full walk describes it', async () => {
    const t = await makeTestStore(rgw);
    const src = tmp('journaled');
    makeTree(src, 3, 400 * 1024);
    const excludes = ['*.tmp', 'cache/'];
    const first = await writeBackup(t.store, { host: 'gocd1', trees: [{ name: 'artifacts', source: src, excludes }] });
    const at = (rel: string) => path.join(src, rel);
    // a day of changes: a new run (with an excluded file), a report rewritten, a file and a
    // directory deleted, a symlink that became a directory, a directory's mode, an excluded tree
    mkdirSync(at('pipelines/build-43/sub'), { recursive: true });
    writeFileSync(at('pipelines/build-43/out.log'), 'built\n'.repeat(500));
    writeFileSync(at('pipelines/build-43/sub/x.txt'), 'x\n');
    writeFileSync(at('pipelines/build-43/skip.tmp'), 'scratch\n');
    writeFileSync(at('pipelines/build-42/reports/TEST-report-5.xml'), '<testsuite name="again"/>\n');
    rmSync(at('empty.txt'));
    rmSync(at('empty-dir'), { recursive: true });
    rmSync(at('latest.jar'));
    mkdirSync(at('latest.jar'));
    writeFileSync(at('latest.jar/inside.txt'), 'now a directory\n');
    chmodSync(at('pipelines/build-42/reports'), 0o700);
    mkdirSync(at('cache'));
    writeFileSync(at('cache/c.bin'), 'cached\n');
    const changed = [
      'pipelines/build-43',
      'pipelines/build-43/out.log',
      'pipelines/build-43/skip.tmp',
      'pipelines/build-42/reports/TEST-report-5.xml',
      'pipelines/build-42/reports',
      'empty.txt',
      'empty-dir',
      'latest.jar/inside.txt',
      'cache/c.bin',
      'gone-dir/file',
    ];
    // the directory roots are read ahead (the agent's thread, a few at a time), each stopped once
    const { nativeAddon: addon } = await import('../../packages/agent/src/native.js');
    const runs: Array<{ root: string; consumed: number; stopped: number }> = [];
    let running = 0;
    let most = 0;
    useReadAhead((root, windowBytes) => {
      const h = addon!.prefetchStart!(root, windowBytes);
      const run = { root, consumed: 0, stopped: 0 };
      runs.push(run);
      most = Math.max(most, ++running);
      return {
        consumed: (n) => {
          run.consumed += n;
          addon!.prefetchConsumed!(h, n);
        },
        stop: () => {
          if (run.stopped++ === 0) running--;
          const [files, bytes] = addon!.prefetchStop!(h);
          return { files, bytes };
        },
      };
    });
    let journaled: Awaited<ReturnType<typeof writeBackup>>;
    try {
      journaled = await writeBackup(t.store, {
        host: 'gocd1',
        previous: first.ref,
        trees: [{ name: 'artifacts', source: src, excludes, changed }],
      });
    } finally {
      useReadAhead(undefined);
    }
    expect(runs.map((r) => path.relative(src, r.root)).sort()).toEqual(['latest.jar', 'pipelines/build-42/reports', 'pipelines/build-43']);
    expect(runs.every((r) => r.stopped >= 1)).toBe(true);
    expect(running).toBe(0);
    expect(most).toBeLessThanOrEqual(ROOTS_AHEAD);
    // what the pass read under a root is what it told that root's read-ahead (skip.tmp excluded)
    expect(runs.find((r) => r.root.endsWith('build-43'))!.consumed).toBe('built\n'.length * 500 + 2);
    const full = await writeBackup(t.store, { host: 'gocd1', previous: first.ref, trees: [{ name: 'artifacts', source: src, excludes }] });
    expect(journaled.trees.artifacts.mode).toBe('journal');
    expect(full.trees.artifacts.mode).toBe('full');
    // the same entries in the same order (walk order), with the same content
    expect(journaled.files).toEqual(full.files);
    expect(journaled.files.some((f) => f.path === 'artifacts/pipelines/build-43/skip.tmp' || f.path.startsWith('artifacts/cache'))).toBe(
      false,
    );
    expect(journaled.files.find((f) => f.path === 'artifacts/latest.jar')).toMatchObject({ type: 'dir' });
    expect(journaled.files.find((f) => f.path === 'artifacts/pipelines/build-42/reports')).toMatchObject({ mode: 0o700 });
    expect(journaled.trees.artifacts).toMatchObject({ files: full.trees.artifacts.files, bytes: full.trees.artifacts.bytes });
    // unchanged files were not read (nor looked at): not the 400 KiB jar, only the new and rewritten ones
    expect(journaled.trees.artifacts.hashedBytes).toBeLessThan(8 * 1024);
    expect(journaled.trees.artifacts.reusedHashes).toBe(full.trees.artifacts.reusedHashes);
    const a = tmp('journaled-restore');
    const b = tmp('full-restore');
    await t.store.fetchTree(journaled.ref, 'artifacts', path.join(a, 'x'));
    await t.store.fetchTree(full.ref, 'artifacts', path.join(b, 'x'));
    expect(diffTrees(without(await snapshotTree(path.join(a, 'x')), '.'), without(await snapshotTree(path.join(b, 'x')), '.'))).toEqual([]);
    expect(await t.store.verify(journaled.ref)).toMatchObject({ ok: true, problems: [] });

    // a journal naming the whole tree: a full pass, and it says why
    const whole = await writeBackup(t.store, {
      host: 'gocd1',
      previous: journaled.ref,
      trees: [{ name: 'artifacts', source: src, excludes, changed: ['.'] }],
    });
    expect(whole.trees.artifacts).toMatchObject({ mode: 'full', reason: expect.stringMatching(/journaled sync failed/) });
    expect(whole.files).toEqual(full.files);
    await t.store.close();
  });
});

describe('S3 store compression', () => {
  it('logs and reports are stored deflated, a jar as it is; all come back equal, by file, tree and range', async () => {
    const t = await makeTestStore(rgw);
    const src = tmp('compress');
    const line = (i: number) => `[${String(i).padStart(6, '0')}] INFO build step ${i % 17} finished in ${i % 1000} ms\n`;
    const log = Buffer.from(Array.from({ length: 40_000 }, (_, i) => line(i)).join('')); // ~2.4 MiB: chunked
    const jar = randomBytes(600 * 1024);
    await fsp.mkdir(path.join(src, 'reports'), { recursive: true });
    writeFileSync(path.join(src, 'build.log'), log);
    writeFileSync(path.join(src, 'app.jar'), jar);
    for (let i = 0; i < 50; i++)
      writeFileSync(path.join(src, `reports/TEST-${i}.xml`), `<testsuite name="s${i}">${line(i).repeat(40)}</testsuite>\n`);
    const plain = log.length + jar.length + 50 * 2500;
    const w = await writeBackup(t.store, { host: 'gocd1', files: { 'db.log': log }, trees: [{ name: 'artifacts', source: src }] });
    const stored = await bucketBytes(rgw, t.bucket, 'fleet1/data/');
    // the jar (600 KiB) is stored whole; the 2 x 2.4 MiB of log (one blob list: deduplicated) and the reports shrink
    expect(stored.bytes).toBeGreaterThan(jar.length);
    expect(stored.bytes).toBeLessThan(jar.length + (log.length + 50 * 2500) / 4);
    console.log(`compression: ${plain} bytes of plaintext (log twice) stored in ${stored.bytes} bytes of packs`);
    const other = t.again();
    const dest = tmp('compress-restore');
    await other.fetchTree(w.ref, 'artifacts', path.join(dest, 'a'));
    expect(diffTrees(without(await snapshotTree(src), '.'), without(await snapshotTree(path.join(dest, 'a')), '.'))).toEqual([]);
    expect(
      (await readAll(await other.openFile(w.ref, 'db.log', { start: 123_456, end: 2_000_000 }))).equals(log.subarray(123_456, 2_000_001)),
    ).toBe(true);
    expect((await other.verify(w.ref)).ok).toBe(true);
    await t.store.close();
    await other.close();
  });
});

describe('S3 store encryption', () => {
  it('the server holds no plaintext file name, content or host name', async () => {
    const t = await makeTestStore(rgw);
    const src = tmp('plain');
    makeTree(src);
    await writeBackup(t.store, {
      host: 'gocd-secret-host',
      files: { 'config-dir.zip': 'CONFIG-ZIP-PLAINTEXT-cruise-config.xml' },
      trees: [{ name: 'artifacts', source: src }],
    });
    const objects = await bucketObjects(rgw, t.bucket);
    expect(objects.length).toBeGreaterThanOrEqual(5);
    const needles = [
      'PLAINTEXT-MARKER',
      'hunter2',
      'secret-plan',
      'TEST-report',
      'testsuite',
      'artifact.jar',
      'gocd-secret-host',
      'cruise-config',
      'config-dir.zip',
      'artifacts',
    ];
    for (const o of objects) {
      for (const n of needles) {
        expect(o.key.includes(n), `${n} in the name ${o.key}`).toBe(false);
        if (!o.key.includes('/keys/')) expect(o.body.includes(Buffer.from(n)), `${n} in ${o.key}`).toBe(false);
      }
    }
    // names are hashes: keys/<id>, data/<pp>/<sha256>, index/<sha256>, snapshots/<hmac>, config
    for (const o of objects)
      expect(o.key).toMatch(
        /^fleet1\/(config|keys\/[0-9a-f]{16}|data\/[0-9a-f]{2}\/[0-9a-f]{64}|index\/[0-9a-f]{64}|snapshots\/[0-9a-f]{64})$/,
      );
    // the key object holds only the wrapped key
    const key = objects.find((o) => o.key.includes('/keys/'))!;
    expect(key.body.includes(t.secret)).toBe(false);
    await t.store.close();
  });

  it('a store opened with the wrong key is refused with a clear error', async () => {
    const t = await makeTestStore(rgw);
    const wrong = t.again({ secret: randomBytes(32) });
    await expect(wrong.listHosts()).rejects.toMatchObject({
      code: 'BOXBACK_ERR_STORE_KEY',
      message: expect.stringMatching(/opens none of the store's 1 key/),
    });
    await wrong.close();
    await t.store.close();
  });
});

describe('S3 store delete', () => {
  it('delete drops the backup from listings; prune frees only what it alone held, after the grace period', async () => {
    const t = await makeTestStore(rgw, { packTarget: 100_000 });
    const src = tmp('del');
    makeTree(src);
    // only-a.bin goes first and fills a pack of its own
    const a = await writeBackup(t.store, {
      host: 'h',
      files: { 'only-a.bin': randomBytes(200_000) },
      trees: [{ name: 'artifacts', source: src }],
    });
    const b = await writeBackup(t.store, { host: 'h', previous: a.ref, trees: [{ name: 'artifacts', source: src }] });
    const unique = await t.store.uniqueBytes(a.ref);
    expect(unique).toBeGreaterThan(200_000);
    expect(unique).toBeLessThan(200_000 + 16_384); // its own manifest and content map too
    expect(await t.store.delete(a.ref)).toEqual({ deleted: true, freedBytes: unique });
    expect(await t.store.delete(a.ref)).toEqual({ deleted: false, freedBytes: 0 });
    expect(await t.store.listBackups('h')).toEqual([b.ref]);
    const before = await bucketBytes(rgw, t.bucket, 'fleet1/data/');
    const r1 = await t.store.prune({ graceMs: 0 });
    expect(r1).toMatchObject({ snapshots: 1, forgottenPacks: 1, deletedPacks: 0 }); // forgotten first, deleted later
    await new Promise((r) => setTimeout(r, 2500));
    const r2 = await t.store.prune({ graceMs: 0 });
    expect(r2).toMatchObject({ snapshots: 1, forgottenPacks: 0, deletedPacks: 1 });
    const after = await bucketBytes(rgw, t.bucket, 'fleet1/data/');
    expect(before.bytes - after.bytes).toBeGreaterThan(200_000);
    // the index objects (one per backup) merged into one; nothing lost by it
    expect((await bucketBytes(rgw, t.bucket, 'fleet1/index/')).objects).toBeGreaterThan(1);
    expect(await t.store.prune({ graceMs: 0, consolidateAbove: 1 })).toMatchObject({ indexObjects: 1, deletedPacks: 0 });
    expect((await bucketBytes(rgw, t.bucket, 'fleet1/index/')).objects).toBe(1);
    expect(await t.again().verify(b.ref)).toMatchObject({ ok: true });
    const dest = path.join(tmp('del-restore'), 'artifacts');
    await t.again().fetchTree(b.ref, 'artifacts', dest);
    expect(diffTrees(without(await snapshotTree(src), '.'), without(await snapshotTree(dest), '.'))).toEqual([]);
    await t.store.close();
  });
});
