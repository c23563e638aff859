// Faults between the store and the server, through a loopback proxy that fails or cuts
// requests, a gateway killed mid-upload, wrong credentials, a missing bucket and a bucket at
// its quota: retryable failures are retried and the backup succeeds; the others end in a
// clear typed error, nothing of the failed backup is ever listed, and no multipart upload is
// left open.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, writeFileSync } from 'node:fs';

import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadS3Credentials } from '../../packages/common/src/store/s3/client.js';
import { S3BackupStore } from '../../packages/common/src/store/s3/s3-store.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { setBucketQuota, sharedRadosgw, startExtraGateway, type RadosgwInfo } from '../helpers/radosgw.js';
import {
  makeTestStore,
  makeTree,
  openMultipartUploads,
  quiet,
  removeTestDirs,
  s3Config,
  testDir,
  writeBackup,
} from '../helpers/s3-store.js';

let rgw: RadosgwInfo;
let proxy: FaultProxy;
beforeAll(async () => {
  rgw = await sharedRadosgw();
  proxy = await startFaultProxy(rgw.endpoint);
});
afterAll(async () => {
  removeTestDirs();
  await proxy?.close();
});

const tmp = testDir;
// multipart from 5 MiB on, parts of 5 MiB: a 7 MiB file makes a multipart pack
const small = { multipartThreshold: 5 * 1024 * 1024, partSize: 5 * 1024 * 1024, packTarget: 6 * 1024 * 1024, baseDelayMs: 20 };

describe('S3 store faults', () => {
  it('500 and 503 answers are retried and the backup succeeds, multipart parts included', async () => {
    const t = await makeTestStore(rgw, small);
    const store = t.again({}, proxy.endpoint);
    await store.listHosts(); // opened through the proxy
    const before = proxy.counts();
    proxy.failNext(3, 503);
    const big = randomBytes(7 * 1024 * 1024);
    const w = await writeBackup(store, { host: 'h', files: { 'db.zip': big, 'v.txt': 'x' } });
    expect(proxy.counts().failed - before.failed).toBe(3);
    expect(store.client.counters.retries).toBeGreaterThanOrEqual(3);
    proxy.failNext(2, 500);
    const src = tmp('f');
    makeTree(src);
    await writeBackup(store, { host: 'h', previous: w.ref, trees: [{ name: 'artifacts', source: src }] });
    expect(await t.again().listBackups('h')).toHaveLength(2);
    expect(await t.again().verify(w.ref)).toMatchObject({ ok: true });
    expect(await openMultipartUploads(rgw, t.bucket)).toBe(0);
    await store.close();
  });

  it('cut connections are retried; a network that stays down ends in STORE_UNREACHABLE with nothing listed', async () => {
    const t = await makeTestStore(rgw, small);
    const store = t.again({ maxAttempts: 3 }, proxy.endpoint);
    await store.listHosts();
    proxy.cutNext(2);
    await writeBackup(store, { host: 'h', files: { 'a.bin': randomBytes(100_000) } });
    expect(proxy.counts().cut).toBeGreaterThanOrEqual(2);
    // the network goes down in the middle of the next backup
    const err = await writeBackup(store, {
      host: 'h',
      files: { 'b.bin': randomBytes(7 * 1024 * 1024) },
      beforeCommit: async () => proxy.cutAll(true),
    }).catch((e) => e);
    proxy.cutAll(false);
    expect(err).toMatchObject({ code: 'BOXBACK_ERR_STORE_UNREACHABLE', message: expect.stringMatching(/failed 3 times/) });
    expect(await t.again().listBackups('h')).toHaveLength(1);
    // a multipart upload cannot be aborted while the network is down: the next backup does it
    await writeBackup(store, { host: 'h', files: { 'c.bin': randomBytes(1000) } });
    expect(await openMultipartUploads(rgw, t.bucket)).toBe(0);
    expect(await t.again().listBackups('h')).toHaveLength(2);
    await store.close();
  });

  it('a gateway killed mid-upload: STORE_UNREACHABLE, nothing listed, the store still good through another gateway', async () => {
    const t = await makeTestStore(rgw, { ...small, maxAttempts: 2 });
    const gw = await startExtraGateway(rgw);
    const store = t.again({}, gw.endpoint);
    const src = tmp('kill');
    makeTree(src, 5, 12 * 1024 * 1024);
    let killed = false;
    const err = await (async () => {
      const s = await store.begin({ host: 'h', startedAt: new Date(), jobId: 'j', log: quiet });
      try {
        await s.syncTree({
          dir: 'artifacts',
          source: src,
          out: { add: () => undefined },
          onProgress: (p) => {
            if (!killed && p.bytesDone > 2 * 1024 * 1024) {
              killed = true;
              void gw.stop();
            }
          },
        });
        await s.commit('{}');
      } catch (e) {
        await s.abort();
        return e;
      }
    })();
    expect(killed).toBe(true);
    expect(err).toMatchObject({ code: 'BOXBACK_ERR_STORE_UNREACHABLE' });
    expect(await t.again().listBackups('h')).toEqual([]);
    await store.close();
  });

  it('a body that is not the SHA-256 signed into its PUT is refused by the server, not stored', async () => {
    const t = await makeTestStore(rgw);
    const body = randomBytes(100_000);
    const other = createHash('sha256').update('something else').digest('hex');
    await expect(t.store.client.put('data/zz/changed', body, other)).rejects.toMatchObject({ code: 'BOXBACK_ERR_STORE_UNREACHABLE' });
    expect(await t.store.client.head('data/zz/changed')).toBeNull();
    const right = createHash('sha256').update(body).digest('hex');
    await t.store.client.put('data/zz/right', body, right);
    await t.store.client.put('data/zz/hashed-here', body);
    expect((await t.store.client.get('data/zz/right'))!.equals(body)).toBe(true);
    expect((await t.store.client.get('data/zz/hashed-here'))!.equals(body)).toBe(true);
    await t.store.close();
  });

  it('wrong credentials: STORE_ACCESS_DENIED, the secret in no message', async () => {
    const t = await makeTestStore(rgw);
    const wrong = t.again({ credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: 'not-the-secret-0123456789' } });
    const err = await wrong.listHosts().catch((e) => e);
    expect(err).toMatchObject({ code: 'BOXBACK_ERR_STORE_ACCESS_DENIED', message: expect.stringMatching(/refused the credentials/) });
    expect(err.message).not.toMatch(/not-the-secret|boxbacktestsecret/);
    const unknown = t.again({ credentials: { accessKeyId: 'NOSUCHKEY', secretAccessKey: rgw.secretAccessKey } });
    await expect(unknown.listHosts()).rejects.toMatchObject({ code: 'BOXBACK_ERR_STORE_ACCESS_DENIED' });
    await wrong.close();
    await unknown.close();
  });

  it('a missing bucket: STORE_NO_BUCKET', async () => {
    const store = new S3BackupStore(s3Config(rgw, 'no-such-bucket-here'), {
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
      secret: randomBytes(32),
      log: quiet,
    });
    await expect(store.listHosts()).rejects.toMatchObject({
      code: 'BOXBACK_ERR_STORE_NO_BUCKET',
      message: expect.stringMatching(/bucket does not exist/),
    });
    await store.close();
  });

  it('a bucket at its quota: STORE_QUOTA, nothing listed, no open multipart upload, the earlier backup intact', async () => {
    const t = await makeTestStore(rgw, small);
    const first = await writeBackup(t.store, { host: 'h', files: { 'a.bin': randomBytes(200_000) } });
    await setBucketQuota(rgw, t.bucket, 3 * 1024 * 1024);
    const err = await writeBackup(t.store, { host: 'h', files: { 'big.bin': randomBytes(9 * 1024 * 1024) } }).catch((e) => e);
    expect(err).toMatchObject({ code: 'BOXBACK_ERR_STORE_QUOTA', message: expect.stringMatching(/quota/) });
    const fresh = t.again();
    expect(await fresh.listBackups('h')).toEqual([first.ref]);
    expect(await fresh.verify(first.ref)).toMatchObject({ ok: true });
    expect(await openMultipartUploads(rgw, t.bucket)).toBe(0);
    await fresh.close();
  });
});

describe('S3 credentials', () => {
  it('come from a 0600 file; a file others can read is refused; the environment is the fallback', () => {
    const dir = tmp('cred');
    const f = path.join(dir, 's3.cred');
    writeFileSync(f, '# boxback S3 credentials\nAWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY = "s3cr3t"\n', { mode: 0o600 });
    expect(loadS3Credentials(f)).toEqual({ accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 's3cr3t' });
    chmodSync(f, 0o644);
    expect(() => loadS3Credentials(f)).toThrow(/readable by others \(mode 644\); chmod 600 it/);
    expect(loadS3Credentials(undefined, { AWS_ACCESS_KEY_ID: 'A', AWS_SECRET_ACCESS_KEY: 'B' })).toEqual({
      accessKeyId: 'A',
      secretAccessKey: 'B',
    });
    expect(() => loadS3Credentials(undefined, {})).toThrow(/no AWS_ACCESS_KEY_ID/);
  });
});
