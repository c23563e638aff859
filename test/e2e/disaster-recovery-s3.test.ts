// Disaster recovery from an S3 store alone, with the real controller and two real agents whose
// store is `kind: s3` on the run's radosgw (credentials and the store key in 0600 files), the
// real `boxback` CLI: box A is backed up; box A is then lost (its agent stopped, every file of
// it deleted, and no local store directory exists anywhere); `boxback backup restore
// gocd-a@latest --target gocd-b` puts A's bytes on box B, with B's host file rewritten for B's
// own hostname and address, and B's service healthy. Then a flipped byte in the pack holding
// db.zip (which a restore unzips straight from the bucket, no download): the restore is
// refused before STOP, box B unchanged (no safety copy: nothing was swapped), still healthy.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packKey } from '../../packages/common/src/store/s3/repo.js';
import { S3BackupStore } from '../../packages/common/src/store/s3/s3-store.js';
import { freePort, startCluster } from '../../scripts/lib/cluster.mjs';
import { createSampleBox } from '../../scripts/lib/sample-box.mjs';
import { liveParts as live, snapshotTree as snapshot } from '../../scripts/lib/tree-snapshot.mjs';
import { makeBucket, sharedRadosgw, type RadosgwInfo } from '../helpers/radosgw.js';
import { bucketObjects, creds, initStoreFiles, putRaw, quiet, s3Config } from '../helpers/s3-store.js';

type Box = Awaited<ReturnType<typeof createSampleBox>>;
type Cluster = Awaited<ReturnType<typeof startCluster>>;

let rgw: RadosgwInfo;
let dir: string;
let cluster: Cluster;
let boxA: Box;
let boxB: Box;
let bucket: string;
let secret: Buffer;

beforeAll(async () => {
  rgw = await sharedRadosgw();
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-dr-s3-'));
  bucket = await makeBucket(rgw, 'dr');
  const files = await initStoreFiles(rgw, bucket, dir);
  secret = files.secret;
  const { credentialsFile: credFile, keyFile } = files;
  const storeYaml = `{ kind: s3, endpoint: ${JSON.stringify(rgw.endpoint)}, bucket: ${bucket}, prefix: fleet1/, pathStyle: true, credentialsFile: ${JSON.stringify(credFile)}, keyFile: ${JSON.stringify(keyFile)} }`;

  boxA = await createSampleBox({
    root: path.join(dir, 'box-a'),
    port: await freePort(),
    seed: 11,
    hostname: 'gocd-a',
    address: '10.2.0.5',
  });
  boxB = await createSampleBox({
    root: path.join(dir, 'box-b'),
    port: await freePort(),
    seed: 12,
    hostname: 'gocd-b',
    address: '10.2.0.6',
    artifacts: 2,
  });
  await boxA.start();
  await boxB.start();
  cluster = await startCluster({ dir, storeYaml });
  // No local store anywhere: the controller's and the agents' configs name only the bucket.
  rmSync(cluster.store, { recursive: true, force: true });
  await cluster.addAgent({ name: 'gocd-a', box: boxA });
  await cluster.addAgent({ name: 'gocd-b', box: boxB });
  for (const n of ['gocd-a', 'gocd-b']) {
    const r = await cluster.cli(['hosts', 'add', n, '--address', cluster.agents[n].address]);
    expect(r.code, r.stderr).toBe(0);
  }
}, 300_000);

afterAll(async () => {
  await cluster?.stop();
  await boxA?.stop().catch(() => undefined);
  await boxB?.stop().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Every directory under `root` whose name says it is a store or a backup (none may exist). */
function localBackupDirs(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = path.join(d, name);
      if (!statSync(p, { throwIfNoEntry: false })?.isDirectory()) continue;
      if (name === 'store' || name.startsWith('backup_') || name.includes('.boxback-download-')) out.push(path.relative(root, p));
      else walk(p);
    }
  };
  walk(root);
  return out;
}

describe('disaster recovery from an S3 store', () => {
  it('restores lost box A onto box B from the bucket alone: same bytes, host files for B, healthy', async () => {
    const before = snapshot(boxA.root, live(boxA));
    const b = await cluster.cli(['backup', 'create', '--host', 'gocd-a', '--yes']);
    expect(b.code, b.stderr).toBe(0);
    expect(localBackupDirs(dir)).toEqual([]);

    // Box A is gone: its service and agent stopped, every file of it deleted.
    await boxA.stop();
    await cluster.agents['gocd-a'].daemon.stop('SIGTERM');
    rmSync(boxA.root, { recursive: true, force: true });
    expect(existsSync(boxA.root)).toBe(false);

    const r = await cluster.cli(['backup', 'restore', 'gocd-a@latest', '--target', 'gocd-b', '--yes', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const { result } = JSON.parse(r.stdout);
    expect(result.status).toBe('Completed');

    const env = readFileSync(boxB.envFile, 'utf8');
    expect(env).toContain('-Dgo.server.hostname=gocd-b');
    expect(env).toContain('-Dgo.server.ip=10.2.0.6');
    expect(env).not.toContain('10.2.0.5');
    const envRel = path.relative(boxA.root, boxA.envFile);
    const got = snapshot(boxB.root, live(boxB));
    const want = { ...before };
    delete want[envRel];
    delete got[envRel];
    expect(got).toEqual(want);
    expect(await boxB.healthy()).toBe(true);
    // The downloads were released; still no local copy of any backup.
    expect(localBackupDirs(dir)).toEqual([]);
  });

  it('a flipped byte in the pack holding db.zip is refused before STOP: box B unchanged and healthy', async () => {
    // where db.zip's blobs are, read with the store's own key
    const store = new S3BackupStore(s3Config(rgw, bucket), { credentials: creds(rgw), secret, log: quiet });
    const [ref] = (await store.listBackups('gocd-a')).slice(-1);
    const repo = await store.repo();
    const h = (await repo.readSnapshot(repo.snapshotName(ref.host, ref.timestamp)))!;
    const blobs = (await repo.readContents(h))['db.zip'];
    const loc = repo.index.get(blobs[0])!; // the first blob: the database's bytes, read by EXTRACT (VERIFY reads only the end)
    await store.close();
    const key = `fleet1/${packKey(loc.pack)}`;
    const pack = (await bucketObjects(rgw, bucket)).find((o) => o.key === key)!;
    const bad = Buffer.from(pack.body);
    bad[loc.offset + Math.floor(loc.length / 2)] ^= 0x20;
    await putRaw(rgw, bucket, key, bad);

    const before = snapshot(boxB.root, live(boxB));
    // the first restore's safety copies (kept until confirmed), and nothing of this one's after it
    const aside = () => readdirSync(path.dirname(boxB.db)).filter((n) => n.includes('.boxback-'));
    const asideBefore = aside();
    const r = await cluster.cli(['backup', 'restore', 'gocd-a@latest', '--target', 'gocd-b', '--yes', '--json']);
    expect(r.code).not.toBe(0);
    const { result } = JSON.parse(r.stdout);
    expect(result.status).toBe('Failed');
    expect(['VERIFY', 'EXTRACT']).toContain(result.failedStep);
    expect(result.errorMessage).toMatch(/db\.zip|refusing it/);
    expect(snapshot(boxB.root, live(boxB))).toEqual(before);
    expect(aside()).toEqual(asideBefore);
    expect(await boxB.healthy()).toBe(true);
    await putRaw(rgw, bucket, key, pack.body);
  });
});
