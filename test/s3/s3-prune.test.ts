// Prune on a real radosgw: an interrupted backup (a process SIGKILLed mid-upload) is never
// listed and its orphans are collected once its lock is stale; a prune racing a backup
// never costs a committed backup an object; key management.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';

import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addStoreKey,
  initS3Store,
  listStoreKeys,
  LOST_KEY_WARNING,
  removeStoreKey,
} from '../../packages/common/src/store/s3/store-keys.js';
import { diffTrees, snapshotTree } from '../helpers/journal-trees.js';
import { sharedRadosgw, type RadosgwInfo } from '../helpers/radosgw.js';
import {
  bucketBytes,
  creds,
  makeTestStore,
  makeTree,
  openMultipartUploads,
  removeTestDirs,
  testDir,
  writeBackup,
} from '../helpers/s3-store.js';

let rgw: RadosgwInfo;
afterAll(removeTestDirs);
beforeAll(async () => {
  rgw = await sharedRadosgw();
  execFileSync('npx', ['tsc', '-b', 'packages/common'], { stdio: 'ignore' }); // the killed process runs the built code
});

const tmp = testDir;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const without = (m: Map<string, unknown>, k: string) => new Map([...m].filter(([x]) => x !== k)) as typeof m;

describe('S3 prune', () => {
  it('an agent SIGKILLed mid-backup: never listed; its lock goes stale and prune collects its orphans', async () => {
    const t = await makeTestStore(rgw, { lockLeaseMs: 8000 }); // the killed agent's lock was written once, at its begin
    const kept = tmp('kept');
    makeTree(kept, 1, 500_000);
    const good = await writeBackup(t.store, { host: 'gocd1', trees: [{ name: 'artifacts', source: kept }] });
    const dataBefore = await bucketBytes(rgw, t.bucket, 'fleet1/data/');

    const src = tmp('killed');
    makeTree(src, 2, 6 * 1024 * 1024);
    const job = path.join(tmp('job'), 'job.json');
    writeFileSync(
      job,
      JSON.stringify({
        config: t.config,
        credentials: creds(rgw),
        secretHex: t.secret.toString('hex'),
        host: 'gocd1',
        source: src,
        scratchDir: tmp('ks'),
      }),
      { mode: 0o600 },
    );
    const child = spawn(process.execPath, [path.resolve('test/helpers/s3-interrupted-backup.mjs'), job], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (b) => (out += String(b)));
    const signal = await new Promise((r) => child.on('exit', (_c, s) => r(s)));
    expect(signal).toBe('SIGKILL');
    expect(out).toContain('uploaded');

    const after = await bucketBytes(rgw, t.bucket, 'fleet1/data/');
    expect(after.bytes - dataBefore.bytes).toBeGreaterThan(3 * 1024 * 1024); // its packs reached the server
    expect(await t.again().listBackups('gocd1')).toEqual([good.ref]);
    expect((await bucketBytes(rgw, t.bucket, 'fleet1/locks/')).objects).toBe(1);

    // while its lock is fresh, a prune leaves its packs alone
    const early = await t.again().prune({ graceMs: 0 });
    expect(early).toMatchObject({ liveLocks: 1, deletedPacks: 0 });
    await sleep(8000 + 2500);
    const r = await t.again().prune({ graceMs: 0 });
    expect(r).toMatchObject({ staleLocks: 1, liveLocks: 0, snapshots: 1 });
    expect(r.deletedPacks).toBeGreaterThan(0);
    expect(await bucketBytes(rgw, t.bucket, 'fleet1/data/')).toEqual(dataBefore);
    expect((await bucketBytes(rgw, t.bucket, 'fleet1/locks/')).objects).toBe(0);
    expect(await openMultipartUploads(rgw, t.bucket)).toBe(0);
    expect(await t.again().verify(good.ref)).toMatchObject({ ok: true });
  });

  it('prune racing a backup: the backup reuses content a deleted backup held, prunes run before and during its commit, nothing is lost', async () => {
    const t = await makeTestStore(rgw, { packTarget: 200_000 });
    const src = tmp('race');
    makeTree(src, 4, 2 * 1024 * 1024);
    const old = await writeBackup(t.store, { host: 'gocd1', trees: [{ name: 'artifacts', source: src }] });
    const pruner = t.again();
    let prunes = 0;
    let racing = true;
    const loop = (async () => {
      while (racing) {
        await pruner.prune({ graceMs: 0 });
        prunes++;
        await sleep(50);
      }
    })();
    // the backup starts while `old` still exists, so it reuses old's packs; old is deleted and
    // pruned (its packs forgotten) before the backup commits
    const backup = t.again();
    const w = await writeBackup(backup, {
      host: 'gocd2',
      trees: [{ name: 'artifacts', source: src }],
      beforeCommit: async () => {
        await t.again().delete(old.ref);
        const n = prunes;
        while (prunes < n + 2) await sleep(50);
        await sleep(2500); // forgotten records get old enough to sweep, were the backup not running
        const r = await t.again().prune({ graceMs: 0 });
        expect(r.liveLocks).toBe(1);
      },
    });
    expect(w.trees.artifacts.bytesTransferred).toBe(0); // all of it reused
    await sleep(2500);
    racing = false;
    await loop;
    for (let i = 0; i < 2; i++) {
      await t.again().prune({ graceMs: 0 });
      await sleep(2100);
    }
    expect(prunes).toBeGreaterThan(2);
    const fresh = t.again();
    expect(await fresh.listBackups('gocd2')).toEqual([w.ref]);
    expect(await fresh.verify(w.ref)).toMatchObject({ ok: true, problems: [] });
    const dest = path.join(tmp('race-restore'), 'artifacts');
    await fresh.fetchTree(w.ref, 'artifacts', dest);
    expect(diffTrees(without(await snapshotTree(src), '.'), without(await snapshotTree(dest), '.'))).toEqual([]);
  });
});

describe('S3 store keys', () => {
  it('init warns that a lost key loses the backups; a second key opens the store; the last key cannot be removed', async () => {
    const t = await makeTestStore(rgw);
    await expect(initS3Store(t.config, randomBytes(32), { credentials: creds(rgw), scryptN: 1024 })).rejects.toMatchObject({
      code: 'BOXBACK_ERR_ALREADY_EXISTS',
    });
    expect(LOST_KEY_WARNING).toMatch(/every backup in this store is lost/);
    const w = await writeBackup(t.store, { host: 'h', files: { 'a.txt': 'hello' } });
    const second = Buffer.from('correct horse battery staple');
    const id2 = await addStoreKey(t.config, t.secret, second, { credentials: creds(rgw), scryptN: 1024, label: 'ops safe' });
    const keys = await listStoreKeys(t.config, { credentials: creds(rgw) });
    expect(keys.map((k) => k.label)).toEqual(['first key', 'ops safe']);
    expect(JSON.stringify(keys)).not.toContain(second.toString());
    const bySecond = t.again({ secret: second });
    expect(await bySecond.readManifestText(w.ref)).toBe(w.manifest);
    // drop the first key: the second still opens everything
    await removeStoreKey(t.config, second, keys[0].id, { credentials: creds(rgw) });
    await expect(t.again().listHosts()).rejects.toMatchObject({ code: 'BOXBACK_ERR_STORE_KEY' });
    expect(await t.again({ secret: second }).listBackups('h')).toEqual([w.ref]);
    await expect(removeStoreKey(t.config, second, id2, { credentials: creds(rgw) })).rejects.toMatchObject({
      code: 'BOXBACK_ERR_STORE_KEY',
      message: expect.stringMatching(/last key/),
    });
  });
});
