// A server (or anyone with write access to the bucket) that changes objects: a flipped byte,
// an object swapped for another, a truncated object. Each is refused with
// BOXBACK_ERR_STORE_TAMPERED before anything is written where the restore would put it.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';

import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackupRef } from '../../packages/common/src/store/backup-store.js';
import { packKey } from '../../packages/common/src/store/s3/repo.js';
import { useOpenInPlace } from '../../packages/common/src/store/s3/sealed.js';
import { sharedRadosgw, type RadosgwInfo } from '../helpers/radosgw.js';
import {
  bucketObjects,
  makeTestStore,
  makeTree,
  putRaw,
  removeTestDirs,
  testDir,
  type TestStore,
  type WrittenBackup,
  writeBackup,
} from '../helpers/s3-store.js';

let rgw: RadosgwInfo;
afterAll(removeTestDirs);
beforeAll(async () => {
  rgw = await sharedRadosgw();
});

const tmp = testDir;

interface Setup {
  t: TestStore;
  a: WrittenBackup;
  b: WrittenBackup;
  /** The packs holding a's db.zip and its tree's artifact.jar, and b's. */
  packsA: Array<{ key: string; body: Buffer }>;
  packsB: Array<{ key: string; body: Buffer }>;
}

const JAR = 'artifacts/pipelines/build-42/artifact.jar';

/** The pack object that holds the first blob of a stored file (read with the store's own key). */
async function packOf(t: TestStore, ref: BackupRef, rel: string): Promise<string> {
  const repo = await t.store.repo();
  const h = (await repo.readSnapshot(repo.snapshotName(ref.host, ref.timestamp)))!;
  const contents = await repo.readContents(h);
  return packKey(repo.index.get(contents[rel][0])!.pack);
}

/** Two backups of different content, small packs: content packs apart from the manifest's. */
async function twoBackups(): Promise<Setup> {
  const t = await makeTestStore(rgw, { packTarget: 100_000 }, { prefix: '' });
  const srcA = tmp('ta');
  const srcB = tmp('tb');
  makeTree(srcA, 11, 400_000);
  makeTree(srcB, 12, 400_000);
  const a = await writeBackup(t.store, {
    host: 'h',
    files: { 'db.zip': randomBytes(300_000) },
    trees: [{ name: 'artifacts', source: srcA }],
  });
  const b = await writeBackup(t.store, {
    host: 'h',
    files: { 'db.zip': randomBytes(300_000) },
    trees: [{ name: 'artifacts', source: srcB }],
  });
  const objects = new Map((await bucketObjects(rgw, t.bucket)).map((o) => [o.key, o.body]));
  const get = async (ref: BackupRef) => {
    const keys = [await packOf(t, ref, 'db.zip'), await packOf(t, ref, JAR)];
    return keys.map((key) => ({ key, body: objects.get(key)! }));
  };
  return { t, a, b, packsA: await get(a.ref), packsB: await get(b.ref) };
}

/** Every way of reading `ref` is refused, and nothing lands at the destinations. */
async function expectRefused(s: Setup, ref = s.a.ref): Promise<void> {
  const store = s.t.again(); // a fresh process: nothing cached
  const scratch = tmp('scratch');
  await expect(store.localFile(ref, 'db.zip', { scratchDir: scratch })).rejects.toMatchObject({ code: 'BOXBACK_ERR_STORE_TAMPERED' });
  expect(readdirSync(scratch)).toEqual([]);
  // read at random positions (how a restore's EXTRACT reads a zip, straight from the store): refused too
  const raf = await store.openRandomAccess(ref, 'db.zip');
  const whole = async () => {
    const buf = Buffer.alloc(64 * 1024);
    for (let pos = 0; pos < raf.size;) pos += (await raf.read(buf, 0, buf.length, pos)).bytesRead || raf.size;
  };
  await expect(whole()).rejects.toMatchObject({ code: 'BOXBACK_ERR_STORE_TAMPERED' });
  await raf.close();
  const parent = tmp('dest');
  const dest = path.join(parent, 'artifacts');
  await expect(store.fetchTree(ref, 'artifacts', dest)).rejects.toMatchObject({
    code: 'BOXBACK_ERR_STORE_TAMPERED',
    message: expect.stringMatching(/refusing it/),
  });
  expect(existsSync(dest)).toBe(false);
  expect(readdirSync(parent)).toEqual([]);
  // a destination that already holds the live data keeps it
  mkdirSync(dest);
  writeFileSync(path.join(dest, 'live.txt'), 'live');
  await expect(store.fetchTree(ref, 'artifacts', dest)).rejects.toMatchObject({ code: 'BOXBACK_ERR_STORE_TAMPERED' });
  expect(readdirSync(dest)).toEqual(['live.txt']);
  const v = await store.verify(ref);
  expect(v.ok).toBe(false);
  expect(v.problems.join('\n')).toMatch(/refusing it/);
  await store.close();
}

describe('S3 store tampering', () => {
  it('a flipped byte in a pack is refused', async () => {
    const s = await twoBackups();
    for (const p of s.packsA) {
      const bad = Buffer.from(p.body);
      bad[Math.floor(bad.length / 2)] ^= 0x40;
      await putRaw(rgw, s.t.bucket, p.key, bad);
    }
    await expectRefused(s);
    // the same with the agent's addon opening blobs in their GET buffers (as the daemon does)
    const { nativeAddon: addon } = await import('../../packages/agent/src/native.js');
    expect(addon?.gcmAvailable?.()).toBe(true);
    useOpenInPlace(addon!.gcmOpenFrames!.bind(addon));
    try {
      await expectRefused(s);
    } finally {
      useOpenInPlace(undefined);
    }
    // the other backup is untouched and restores
    const other = s.t.again();
    expect(await other.verify(s.b.ref)).toMatchObject({ ok: true });
    await other.close();
  });

  it('a pack swapped for another is refused', async () => {
    const s = await twoBackups();
    for (const [i, p] of s.packsA.entries()) await putRaw(rgw, s.t.bucket, p.key, s.packsB[i].body);
    await expectRefused(s);
  });

  it('a truncated pack is refused, and a quick verify sees it', async () => {
    const s = await twoBackups();
    for (const p of s.packsA) await putRaw(rgw, s.t.bucket, p.key, p.body.subarray(0, p.body.length - 70_000));
    await expectRefused(s);
    const q = await s.t.again().verify(s.a.ref, { quick: true });
    expect(q.ok).toBe(false);
    expect(q.problems.join('\n')).toMatch(/truncated/);
  });

  it("a snapshot swapped for another backup's is refused; a changed byte in a manifest too", async () => {
    const s = await twoBackups();
    const objects = await bucketObjects(rgw, s.t.bucket);
    // a changed byte in a manifest's pack: the manifest is refused
    const snaps = objects.filter((o) => o.key.startsWith('snapshots/'));
    expect(snaps).toHaveLength(2);
    await putRaw(rgw, s.t.bucket, snaps[0].key, snaps[1].body);
    const store = s.t.again();
    const errs = await Promise.all([store.readManifestText(s.a.ref).catch((e) => e), store.readManifestText(s.b.ref).catch((e) => e)]);
    expect(errs.filter((e) => e?.code === 'BOXBACK_ERR_STORE_TAMPERED')).toHaveLength(1);
    await store.close();
    // a changed byte in the pack that holds the intact backup's manifest: refused, verify says so
    const intact = typeof errs[0] === 'string' ? s.a.ref : s.b.ref;
    const repo = await s.t.store.repo();
    const h = (await repo.readSnapshot(repo.snapshotName(intact.host, intact.timestamp)))!;
    const loc = repo.index.get(h.manifest.blobs[0])!;
    const key = packKey(loc.pack);
    const bad = Buffer.from(objects.find((o) => o.key === key)!.body);
    bad[loc.offset + 40] ^= 1;
    await putRaw(rgw, s.t.bucket, key, bad);
    const fresh = s.t.again();
    await expect(fresh.readManifestText(intact)).rejects.toMatchObject({ code: 'BOXBACK_ERR_STORE_TAMPERED' });
    const v = await fresh.verify(intact);
    expect(v).toMatchObject({ ok: false, filesChecked: 0 });
    expect(v.problems[0]).toMatch(/manifest.*refusing it/);
    await fresh.close();
  });
});
