// The test harness itself: the run's radosgw answers S3 with the test user's keys, a bucket
// quota is enforced, a second gateway can be killed without touching the shared one, and the
// fault proxy fails, cuts and forwards requests.
import { GetObjectCommand, PutObjectCommand, S3ServiceException } from '@aws-sdk/client-s3';
import { beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { adminS3, makeBucket, setBucketQuota, sharedRadosgw, startExtraGateway, type RadosgwInfo } from '../helpers/radosgw.js';

let rgw: RadosgwInfo;
beforeAll(async () => {
  rgw = await sharedRadosgw();
});

describe('radosgw harness', () => {
  it('stores and returns an object', async () => {
    const bucket = await makeBucket(rgw);
    const s3 = adminS3(rgw);
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'a/b', Body: 'hello' }));
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'a/b' }));
    expect(await got.Body!.transformToString()).toBe('hello');
    s3.destroy();
  });

  it('enforces a bucket quota', async () => {
    const bucket = await makeBucket(rgw, 'quota');
    await setBucketQuota(rgw, bucket, 64 * 1024);
    const s3 = adminS3(rgw);
    const big = Buffer.alloc(40 * 1024, 1);
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'one', Body: big }));
    const err = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'two', Body: big })).catch((e) => e);
    expect(err).toBeInstanceOf(S3ServiceException);
    expect((err as S3ServiceException).name).toBe('QuotaExceeded');
    s3.destroy();
  });

  it('runs a second gateway that can be killed', async () => {
    const gw = await startExtraGateway(rgw);
    const bucket = await makeBucket(rgw);
    const s3 = adminS3(rgw, gw.endpoint);
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'x', Body: 'via second gateway' }));
    await gw.stop();
    const err = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'x' })).catch((e) => e);
    expect(String(err)).toMatch(/ECONNREFUSED|socket|connect/i);
    s3.destroy();
    const shared = adminS3(rgw);
    const got = await shared.send(new GetObjectCommand({ Bucket: bucket, Key: 'x' }));
    expect(await got.Body!.transformToString()).toBe('via second gateway');
    shared.destroy();
  });

  it('proxy forwards, fails with 503 and cuts connections', async () => {
    const bucket = await makeBucket(rgw);
    const proxy = await startFaultProxy(rgw.endpoint);
    const s3 = adminS3(rgw, proxy.endpoint, 1);
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'p', Body: 'through the proxy' }));
    proxy.failNext(1, 503);
    const e1 = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'p' })).catch((e) => e);
    expect((e1 as S3ServiceException).$metadata?.httpStatusCode).toBe(503);
    proxy.cutNext(1);
    const e2 = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'p' })).catch((e) => e);
    expect(String(e2)).toMatch(/socket hang up|ECONNRESET/i);
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'p' }));
    expect(await got.Body!.transformToString()).toBe('through the proxy');
    expect(proxy.counts()).toMatchObject({ failed: 1, cut: 1 });
    s3.destroy();
    await proxy.close();
  });
});
