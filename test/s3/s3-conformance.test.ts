// The S3 backend against the BackupStore conformance suite (test/helpers/store-conformance.ts),
// on the run's real radosgw, and the registry's `kind: s3`.
import { chmodSync, writeFileSync } from 'node:fs';

import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { S3BackupStore, compileStoreConfig, openStore, storeConfigSchema, type BackupRef } from '@boxback/common';
import { describeBackupStoreConformance } from '../helpers/store-conformance.js';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { packKey } from '../../packages/common/src/store/s3/repo.js';
import { adminS3, sharedRadosgw } from '../helpers/radosgw.js';
import { makeTestStore, putRaw, removeTestDirs, testDir } from '../helpers/s3-store.js';

describeBackupStoreConformance('s3', async () => {
  const rgw = await sharedRadosgw();
  const t = await makeTestStore(rgw);
  return {
    // the built package's class: the suite checks errors against @boxback/common's BoxbackError
    store: new S3BackupStore(t.config, t.opts),
    // one byte of the stored ciphertext of the file's first blob, behind the store's back
    flipByte: async (ref: BackupRef, rel: string) => {
      const repo = await t.again().repo();
      const h = (await repo.readSnapshot(repo.snapshotName(ref.host, ref.timestamp)))!;
      const loc = repo.locate((await repo.readContents(h))[rel][0])!;
      const key = `${t.config.prefix}${packKey(loc.pack)}`;
      const s3 = adminS3(rgw);
      const body = Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: t.bucket, Key: key }))).Body!.transformToByteArray());
      s3.destroy();
      body[loc.offset + Math.floor(loc.length / 2)] ^= 0xff; // inside the blob, however small it compressed
      await putRaw(rgw, t.bucket, key, body);
    },
    cleanup: async () => removeTestDirs(),
  };
});

describe('registry: kind s3', () => {
  afterAll(removeTestDirs);
  it('maps a compiled s3 store config to an S3BackupStore that opens with its 0600 key and credentials files', async () => {
    const rgw = await sharedRadosgw();
    const t = await makeTestStore(rgw);
    const dir = testDir('reg');
    writeFileSync(path.join(dir, 'store.key'), t.secret, { mode: 0o600 });
    writeFileSync(path.join(dir, 's3.cred'), `AWS_ACCESS_KEY_ID=${rgw.accessKeyId}\nAWS_SECRET_ACCESS_KEY=${rgw.secretAccessKey}\n`, {
      mode: 0o600,
    });
    const raw = storeConfigSchema.parse({
      kind: 's3',
      endpoint: rgw.endpoint,
      bucket: t.bucket,
      prefix: t.config.prefix,
      pathStyle: true,
      credentialsFile: 's3.cred',
      keyFile: 'store.key',
    });
    const store = openStore(compileStoreConfig(raw, path.join(dir, 'agent.yaml')), { scratchDir: dir });
    expect(store).toBeInstanceOf(S3BackupStore);
    expect(store.describe()).toEqual({ kind: 's3', location: `s3 ${rgw.endpoint}/${t.bucket}/${t.config.prefix}` });
    expect(JSON.stringify(store.describe())).not.toContain(rgw.secretAccessKey);
    expect(await store.listHosts()).toEqual([]);
    await store.close?.();
    // a key file others can read is refused, never used
    chmodSync(path.join(dir, 'store.key'), 0o644);
    const loose = openStore(compileStoreConfig(raw, path.join(dir, 'agent.yaml')));
    await expect(loose.listHosts()).rejects.toMatchObject({
      code: 'BOXBACK_ERR_CONFIG_INVALID',
      message: expect.stringMatching(/readable by others/),
    });
    await loose.close?.();
  });
});
