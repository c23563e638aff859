// A controller whose store is on S3 (the run's radosgw) rebuilds a lost catalog from it: real
// controller daemon, real `boxback` CLI, secrets in 0600 files. Backups are written into the
// bucket through the BackupStore interface (as an agent writes them); the controller starts
// with a catalog that has none: `boxback backups` lists the same IDs, Restorable, with the
// sizes and consistency of their manifests, and the hosts are registered with no address.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MANIFEST_FORMAT } from '../../packages/common/src/manifest.js';
import { S3BackupStore } from '../../packages/common/src/store/s3/s3-store.js';
import { initS3Store } from '../../packages/common/src/store/s3/store-keys.js';
import { startCluster } from '../../scripts/lib/cluster.mjs';
import { makeBucket, sharedRadosgw, type RadosgwInfo } from '../helpers/radosgw.js';
import { bucketBytes, creds, quiet, s3Config } from '../helpers/s3-store.js';

type Cluster = Awaited<ReturnType<typeof startCluster>>;
let rgw: RadosgwInfo;
let dir: string;
let cluster: Cluster;

/** One committed backup of `host` with one file, its manifest carrying totals and consistency. */
async function backupOf(store: S3BackupStore, host: string, at: Date, content: Buffer): Promise<string> {
  const s = await store.begin({ host, startedAt: at, jobId: `job-${randomBytes(3).toString('hex')}`, log: quiet });
  writeFileSync(s.pathFor('db.zip'), content);
  const sha256 = createHash('sha256').update(content).digest('hex');
  await s.addFile('db.zip', sha256);
  const id = `${s.ref.host}@${s.ref.timestamp}`;
  const manifest = {
    format: MANIFEST_FORMAT,
    id,
    host,
    timestamp: s.ref.timestamp,
    createdAt: at.toISOString(),
    consistency: 'quiesced',
    totals: { bytes: content.length, files: 1 },
    files: [{ path: 'db.zip', type: 'file', size: content.length, sha256, mode: 0o640, uid: 0, gid: 0, mtimeMs: at.getTime() }],
  };
  await s.commit(JSON.stringify(manifest));
  return id;
}

beforeAll(async () => {
  rgw = await sharedRadosgw();
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-s3-scan-'));
  cluster = await startCluster({ dir });
}, 300_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a controller with an S3 store rebuilds its catalog from it', () => {
  it('at start-up against a catalog with no backups: same IDs, Restorable, sizes; hosts with no address', async () => {
    const bucket = await makeBucket(rgw, 'scan');
    const config = s3Config(rgw, bucket);
    const secret = Buffer.from(randomBytes(32).toString('hex'));
    await initS3Store(config, secret, { credentials: creds(rgw), scryptN: 1024 });
    const store = new S3BackupStore(config, { credentials: creds(rgw), secret, log: quiet });
    const made = [
      await backupOf(store, 'gocd-a', new Date('2026-12-01T02:00:00Z'), randomBytes(70_000)),
      await backupOf(store, 'gocd-a', new Date('2026-12-02T02:00:00Z'), randomBytes(90_000)),
      await backupOf(store, 'gocd-b', new Date('2026-12-02T03:00:00Z'), randomBytes(50_000)),
    ];
    await store.close();

    await cluster.controller.stop();
    writeFileSync(path.join(dir, 's3.cred'), `AWS_ACCESS_KEY_ID=${rgw.accessKeyId}\nAWS_SECRET_ACCESS_KEY=${rgw.secretAccessKey}\n`, {
      mode: 0o600,
    });
    writeFileSync(path.join(dir, 'store.key'), `${secret.toString()}\n`, { mode: 0o600 });
    const yaml = readFileSync(cluster.controllerYaml, 'utf8').replace(
      /^store: store$/m,
      `store:\n  kind: s3\n  endpoint: ${rgw.endpoint}\n  bucket: ${bucket}\n  prefix: fleet1/\n  pathStyle: true\n  credentialsFile: s3.cred\n  keyFile: store.key\n  pruneGraceSeconds: 0\nretention:\n  default: { keepManual: 1 }`,
    );
    expect(yaml).toContain('kind: s3');
    writeFileSync(cluster.controllerYaml, yaml);
    await cluster.restartController();

    const r = await cluster.cli(['--json', 'backups']);
    expect(r.code, r.stderr).toBe(0);
    const p = JSON.parse(r.stdout) as
      | Array<{ id: string; restorable: boolean; sizeBytes: number; consistency: string }>
      | { backups: Array<{ id: string; restorable: boolean; sizeBytes: number; consistency: string }> };
    const listed = (Array.isArray(p) ? p : p.backups).map((b) => ({
      id: b.id,
      restorable: b.restorable,
      size: Number(b.sizeBytes),
      consistency: b.consistency,
    }));
    expect(listed.sort((a, b) => a.id.localeCompare(b.id))).toEqual(
      [
        { id: made[0], size: 70_000 },
        { id: made[1], size: 90_000 },
        { id: made[2], size: 50_000 },
      ]
        .map((b) => ({ ...b, restorable: true, consistency: 'quiesced' }))
        .sort((a, b) => a.id.localeCompare(b.id)),
    );

    const hosts = await cluster.cli(['hosts', 'list']);
    expect(hosts.stdout).toMatch(/gocd-a\s+\(none: found in the store\)/);
    expect(hosts.stdout).toMatch(/gocd-b\s+\(none: found in the store\)/);

    const scan = await cluster.cli(['store', 'scan']);
    expect(scan.code, scan.stderr).toBe(0);
    expect(scan.stdout).toContain(`scanned s3 ${rgw.endpoint}/${bucket}/fleet1/: 2 host(s) with backups`);
    expect(scan.stdout).toContain('added 0 backup(s) to the catalog');
    // no secret in what a person reads
    expect(scan.stdout + hosts.stdout + r.stdout).not.toContain(secret.toString());

    // retention (keepManual 1) deletes gocd-a's older backup, and the controller's store prune
    // then frees its bytes in the bucket (grace period 0 here); the other two still verify
    const dataBefore = await bucketBytes(rgw, bucket, 'fleet1/data/');
    const pr = await cluster.cli(['backups', 'prune', '--host', 'gocd-a', '--yes']);
    expect(pr.code, pr.stderr).toBe(0);
    const left = JSON.parse((await cluster.cli(['--json', 'backups'])).stdout) as
      Array<{ id: string }> | { backups: Array<{ id: string }> };
    expect((Array.isArray(left) ? left : left.backups).map((b) => b.id).sort()).toEqual([made[1], made[2]].sort());
    // the store's prune is two-stage (forget, then sweep once the record is older than the grace
    // period): a second `backups prune`, with nothing left to delete, still prunes the store
    let dataAfter = await bucketBytes(rgw, bucket, 'fleet1/data/');
    for (let i = 0; i < 5 && dataBefore.bytes - dataAfter.bytes < 70_000; i++) {
      await new Promise((r) => setTimeout(r, 2500));
      const again = await cluster.cli(['backups', 'prune', '--host', 'gocd-a', '--yes']);
      expect(again.code, again.stderr).toBe(0);
      dataAfter = await bucketBytes(rgw, bucket, 'fleet1/data/');
    }
    expect(dataBefore.bytes - dataAfter.bytes).toBeGreaterThanOrEqual(70_000);
    const audit = await cluster.cli(['--json', 'audit']);
    expect(audit.stdout).toContain('PruneStore');
    for (const id of [made[1], made[2]]) {
      const v = await cluster.cli(['backup', 'verify', id]);
      expect(v.code, v.stderr + v.stdout).toBe(0);
    }
  }, 300_000);
});
