// The archive cache (packages/agent/src/backup/archive-cache.ts): an agent whose store is S3
// keeps its last database archive on the box, so that the next backup copies the unchanged
// 1 MiB blocks' compressed bytes instead of deflating the whole database again. What an
// operator would check: the second backup of a grown database reuses its unchanged blocks, and
// what lands in the bucket is still the database (its db.zip, read back from S3, unzips to the
// live file's bytes); a damaged cache (a flipped byte) costs a deflate, never a wrong backup.
import { execFileSync } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '@boxback/common';
import { runBackup } from '../../packages/agent/src/backup/backup.js';
import { agentStore } from '../../packages/agent/src/store.js';
import { makeBackupBox, req, type BackupBox } from '../helpers/backup-box.js';
import { makeBucket, sharedRadosgw, type RadosgwInfo } from '../helpers/radosgw.js';
import { initStoreFiles, s3Config } from '../helpers/s3-store.js';

const MiB = 1024 * 1024;
let rgw: RadosgwInfo;
let dir: string;
let b: BackupBox;

beforeAll(async () => {
  rgw = await sharedRadosgw();
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-archive-cache-'));
  const bucket = await makeBucket(rgw, 'cache');
  const { credentialsFile, keyFile } = await initStoreFiles(rgw, bucket, dir);
  b = await makeBackupBox({ dbBytes: 6 * MiB, store: { ...s3Config(rgw, bucket), credentialsFile, keyFile } });
}, 120_000);

afterAll(async () => {
  await b?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cacheDir = () => path.join(b.stateDir, 'archive-cache');

async function backup(jobId: string) {
  await sleep(1000); // a new second: a new backup timestamp
  const res = await runBackup(b.job(jobId).ctx, req({ jobId }));
  expect(res.errorMessage).toBe('');
  expect(res.status).toBe('Completed');
  const m = JSON.parse(res.manifestJson) as Manifest;
  return { res, m, reused: Number(m.datasets.find((d) => d.name === 'database')!.extra?.reusedBytes ?? 0) };
}

/** db.zip of a backup, read back from the bucket and unzipped: the database file's bytes. */
async function storedDatabase(backupPath: string): Promise<Buffer> {
  const store = agentStore(b.config);
  const ref = (await store.listBackups(b.name)).find((r) => backupPath.endsWith(r.timestamp))!;
  const out = mkdtempSync(path.join(dir, 'zip-'));
  await pipeline(await store.openFile(ref, 'db.zip'), createWriteStream(path.join(out, 'db.zip')));
  execFileSync('unzip', ['-q', path.join(out, 'db.zip'), '-d', out]);
  return readFileSync(path.join(out, 'cruise.mv.db'));
}

/**
 * The stored database is the live one as it was at the backup: at least `atLeast` bytes, and a
 * prefix of the live file now (the stand-in server only appends to it while it runs).
 */
async function expectDatabase(backupPath: string, atLeast: number): Promise<void> {
  const snap = await storedDatabase(backupPath);
  await b.box.stop();
  try {
    const live = readFileSync(b.box.dbFile);
    expect(snap.length).toBeGreaterThanOrEqual(atLeast);
    expect(live.subarray(0, snap.length).equals(snap)).toBe(true);
  } finally {
    await b.box.start();
  }
}

describe('archive cache of an S3-stored agent', () => {
  it('the next backup reuses the unchanged blocks from the cache; a damaged cache is deflated again, and every db.zip in the bucket is the database', async () => {
    const first = await backup('c1');
    expect(first.reused).toBe(0);
    const meta = JSON.parse(readFileSync(path.join(cacheDir(), 'cache.json'), 'utf8')) as {
      ref: string;
      archives: Record<string, { size: number }>;
    };
    expect(meta.ref).toBe(first.res.backupPath);
    expect(readdirSync(path.join(cacheDir(), 'current')).sort()).toEqual(['boxback-blocks.json', 'db.zip']);
    expect(existsSync(path.join(b.stateDir, 's3-scratch'))).toBe(true);
    expect(readdirSync(path.join(b.stateDir, 's3-scratch'))).toEqual([]); // the scratch copy is gone; the cache holds a link

    // An interrupted backup's staged links (the agent killed before its commit ended) go at the next stage.
    mkdirSync(path.join(cacheDir(), '.next-killed-job'));
    writeFileSync(path.join(cacheDir(), '.next-killed-job', 'db.zip'), 'stale');
    // A CI day: the database grows by 1.5 MiB; its 6 whole MiB are unchanged.
    appendFileSync(b.box.dbFile, Buffer.alloc(1536 * 1024, 'a record of a later day\n'));
    const second = await backup('c2');
    expect(second.reused).toBe(6 * MiB);
    await expectDatabase(second.res.backupPath, 7.5 * MiB);

    // A flipped byte in the cached archive's third block: that block is deflated again (its
    // CRC-32 does not match), the others are reused, and the stored archive is still right.
    const cached = path.join(cacheDir(), 'current', 'db.zip');
    const blocks = JSON.parse(readFileSync(path.join(cacheDir(), 'current', 'boxback-blocks.json'), 'utf8')) as {
      archives: Record<string, Record<string, [string, number, number, number, number, number][]>>;
    };
    const third = blocks.archives['db.zip']['cruise.mv.db'][2];
    const fd = openSync(cached, 'r+');
    const at = third[2] + Math.floor(third[3] / 2);
    const one = Buffer.alloc(1);
    readSync(fd, one, 0, 1, at);
    writeSync(fd, Buffer.from([one[0] ^ 0xff]), 0, 1, at);
    closeSync(fd);
    appendFileSync(b.box.dbFile, Buffer.alloc(512 * 1024, 'and another day\n'));
    const damaged = await backup('c3');
    expect(damaged.reused).toBe(6 * MiB); // 7 whole MiB now, one of them deflated again
    await expectDatabase(damaged.res.backupPath, 8 * MiB);
    expect(JSON.parse(readFileSync(path.join(cacheDir(), 'cache.json'), 'utf8')).ref).toBe(damaged.res.backupPath);

    // No staged links are left beside the cache.
    expect(readdirSync(cacheDir()).sort()).toEqual(['cache.json', 'current']);
  }, 180_000);
});
