// S3 store tests' shared steps: a fresh bucket made into an initialised store (small scrypt
// cost), a backup written through the BackupStore interface exactly as the agent will
// (begin -> pathFor/addFile -> syncTree -> commit(manifest)), and looks at the server side
// (every object with its bytes, the bucket's total size, open multipart uploads).
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import fs, { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { createLogger } from '../../packages/common/src/logger.js';
import { MANIFEST_FORMAT, type ManifestFile } from '../../packages/common/src/manifest.js';
import type { BackupRef, BackupStaging, TreeSyncResult } from '../../packages/common/src/store/backup-store.js';
import type { S3StoreConfig } from '../../packages/common/src/store/config.js';
import { S3BackupStore, type S3StoreOptions } from '../../packages/common/src/store/s3/s3-store.js';
import { initS3Store } from '../../packages/common/src/store/s3/store-keys.js';
import { adminS3, makeBucket, type RadosgwInfo } from './radosgw.js';

export const quiet = createLogger('s3-test', 'silent');

const made: string[] = [];

/** A temporary directory, removed by removeTestDirs (each S3 test file's afterAll). */
export function testDir(stem: string): string {
  const d = mkdtempSync(path.join(os.tmpdir(), `bb-s3-${stem}-`));
  made.push(d);
  return d;
}

export function removeTestDirs(): void {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
}

export interface TestStore {
  store: S3BackupStore;
  config: S3StoreConfig;
  bucket: string;
  secret: Buffer;
  opts: S3StoreOptions;
  /** Another store object on the same bucket (another host, or a controller). */
  again(over?: Partial<S3StoreOptions>, endpoint?: string): S3BackupStore;
}

export function s3Config(rgw: RadosgwInfo, bucket: string, over: Partial<S3StoreConfig> = {}): S3StoreConfig {
  return Object.freeze({
    kind: 's3',
    endpoint: rgw.endpoint,
    region: rgw.region,
    bucket,
    prefix: 'fleet1/',
    pathStyle: true,
    concurrency: 4,
    bandwidthLimit: 0,
    pruneGraceSeconds: 3600,
    ...over,
  }) as S3StoreConfig;
}

export const creds = (rgw: RadosgwInfo) => ({ accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey });

/** The run's radosgw credentials in a 0600 file as an agent or controller reads them (`credentialsFile`): its path. */
export function writeCredentialsFile(file: string, rgw: RadosgwInfo): string {
  writeFileSync(file, `AWS_ACCESS_KEY_ID=${rgw.accessKeyId}\nAWS_SECRET_ACCESS_KEY=${rgw.secretAccessKey}\n`, { mode: 0o600 });
  return file;
}

/**
 * `bucket` initialised as a store with a fresh passphrase, and the two 0600 files an agent or a
 * controller reads for it (`credentialsFile`, `keyFile`) written into `dir`.
 */
export async function initStoreFiles(
  rgw: RadosgwInfo,
  bucket: string,
  dir: string,
): Promise<{ secret: Buffer; credentialsFile: string; keyFile: string }> {
  const secret = Buffer.from(randomBytes(32).toString('hex'));
  await initS3Store(s3Config(rgw, bucket), secret, { credentials: creds(rgw), scryptN: 1024 });
  const credentialsFile = writeCredentialsFile(path.join(dir, 's3.cred'), rgw);
  const keyFile = path.join(dir, 'store.key');
  writeFileSync(keyFile, `${secret.toString()}\n`, { mode: 0o600 });
  return { secret, credentialsFile, keyFile };
}

/** A new bucket, initialised as a store; the store object opens it with `secret`. */
export async function makeTestStore(
  rgw: RadosgwInfo,
  opts: Partial<S3StoreOptions> = {},
  over: Partial<S3StoreConfig> = {},
): Promise<TestStore> {
  const bucket = await makeBucket(rgw, 'store');
  const config = s3Config(rgw, bucket, over);
  const secret = randomBytes(32);
  await initS3Store(config, secret, { credentials: creds(rgw), scryptN: 1024 });
  const all: S3StoreOptions = {
    credentials: creds(rgw),
    secret,
    log: quiet,
    scratchDir: testDir('scratch'),
    ...opts,
  };
  const again = (o: Partial<S3StoreOptions> = {}, endpoint?: string) =>
    new S3BackupStore(endpoint ? { ...config, endpoint } : config, { ...all, ...o });
  return { store: again(), config, bucket, secret, opts: all, again };
}

export interface TreeSpec {
  name: string;
  source: string;
  excludes?: string[];
  changed?: string[];
}

export interface WrittenBackup {
  ref: BackupRef;
  manifest: string;
  trees: Record<string, TreeSyncResult>;
  files: ManifestFile[];
}

/** Write a backup: `files` (stored name -> content) through pathFor/addFile, then each tree. */
export async function writeBackup(
  store: S3BackupStore,
  o: {
    host: string;
    at?: Date;
    files?: Record<string, Buffer | string>;
    /** Per file: where its independently compressed blocks start and end (addFile's `cuts`). */
    cuts?: Record<string, number[]>;
    trees?: TreeSpec[];
    previous?: BackupRef;
    beforeCommit?: (s: BackupStaging) => Promise<void>;
  },
): Promise<WrittenBackup> {
  const s = await store.begin({ host: o.host, startedAt: o.at ?? new Date(), jobId: `job-${randomBytes(3).toString('hex')}`, log: quiet });
  try {
    const files: ManifestFile[] = [];
    for (const [rel, content] of Object.entries(o.files ?? {})) {
      const data = Buffer.from(content);
      writeFileSync(s.pathFor(rel), data);
      const sha256 = createHash('sha256').update(data).digest('hex');
      await s.addFile(rel, sha256, { cuts: o.cuts?.[rel] });
      files.push({ path: rel, type: 'file', size: data.length, sha256, mode: 0o640, uid: 0, gid: 0, mtimeMs: Date.now() });
    }
    const trees: Record<string, TreeSyncResult> = {};
    for (const t of o.trees ?? []) {
      trees[t.name] = await s.syncTree({
        dir: t.name,
        source: t.source,
        excludes: t.excludes,
        previous: o.previous,
        changed: t.changed,
        out: { add: (e) => void files.push(e) },
      });
    }
    const manifest = JSON.stringify({
      format: MANIFEST_FORMAT,
      id: `${s.ref.host}@${s.ref.timestamp}`,
      host: s.ref.host,
      timestamp: s.ref.timestamp,
      files,
    });
    await o.beforeCommit?.(s);
    const { ref } = await s.commit(manifest);
    return { ref, manifest, trees, files };
  } catch (err) {
    await s.abort();
    throw err;
  }
}

/** Every object in the bucket with its bytes. */
export async function bucketObjects(rgw: RadosgwInfo, bucket: string): Promise<Array<{ key: string; body: Buffer }>> {
  const s3 = adminS3(rgw);
  try {
    const out: Array<{ key: string; body: Buffer }> = [];
    let token: string | undefined;
    do {
      const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
      for (const o of r.Contents ?? []) {
        const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: o.Key! }));
        out.push({ key: o.Key!, body: Buffer.from(await got.Body!.transformToByteArray()) });
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  } finally {
    s3.destroy();
  }
}

/** Total bytes stored in the bucket (the server's listing). */
export { bucketBytes } from './radosgw.js';

export async function openMultipartUploads(rgw: RadosgwInfo, bucket: string): Promise<number> {
  const s3 = adminS3(rgw);
  try {
    return ((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).length;
  } finally {
    s3.destroy();
  }
}

export async function putRaw(rgw: RadosgwInfo, bucket: string, key: string, body: Buffer): Promise<void> {
  const s3 = adminS3(rgw);
  try {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
  } finally {
    s3.destroy();
  }
}

/** A tree with small files, a big one, an empty one, a symlink, odd modes and owners, and a nested dir. */
export function makeTree(root: string, seed = 1, bigBytes = 3 * 1024 * 1024 + 12345): void {
  // Bytes like a jar's: incompressible (the store deflates what compresses), the same for a seed.
  const rnd = (n: number) =>
    createCipheriv('aes-256-ctr', createHash('sha256').update(`makeTree ${seed}`).digest(), Buffer.alloc(16)).update(Buffer.alloc(n));
  fs.mkdirSync(path.join(root, 'pipelines/build-42/reports'), { recursive: true });
  fs.mkdirSync(path.join(root, 'empty-dir'), { recursive: true });
  for (let i = 0; i < 30; i++)
    fs.writeFileSync(
      path.join(root, `pipelines/build-42/reports/TEST-report-${i}.xml`),
      `<testsuite name="suite-${i}" seed="${seed}"/>\n`.repeat(20 + i),
    );
  fs.writeFileSync(path.join(root, 'pipelines/build-42/artifact.jar'), rnd(bigBytes));
  fs.writeFileSync(path.join(root, 'empty.txt'), '');
  fs.writeFileSync(path.join(root, 'secret-plan.txt'), 'PLAINTEXT-MARKER-the-cruise-control-password-is-hunter2\n', { mode: 0o600 });
  fs.chmodSync(path.join(root, 'secret-plan.txt'), 0o600);
  fs.symlinkSync('pipelines/build-42/artifact.jar', path.join(root, 'latest.jar'));
  fs.chownSync(path.join(root, 'pipelines/build-42/reports/TEST-report-3.xml'), 1234, 5678);
  fs.chmodSync(path.join(root, 'pipelines/build-42'), 0o750);
  const t = new Date('2026-01-02T03:04:05.678Z');
  fs.utimesSync(path.join(root, 'pipelines/build-42/artifact.jar'), t, t);
}
