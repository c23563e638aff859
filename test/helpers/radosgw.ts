// The radosgw harness for the tests: scripts/lib/radosgw.mjs (shared with the bench) plus the
// run's shared gateway (vitest globalSetup, test/helpers/radosgw-setup.ts) read by inject().
import type { RadosgwInfo } from '../../scripts/lib/radosgw.mjs';

export {
  TEST_ACCESS_KEY,
  TEST_SECRET_KEY,
  adminS3,
  bucketBytes,
  freePort,
  makeBucket,
  rgwAdmin,
  setBucketQuota,
  startExtraGateway,
  startRadosgw,
  type ExtraGateway,
  type Radosgw,
  type RadosgwInfo,
} from '../../scripts/lib/radosgw.mjs';

/** The run's shared radosgw (vitest globalSetup), or a clear failure when the run did not start it. */
export async function sharedRadosgw(): Promise<RadosgwInfo> {
  const { inject } = await import('vitest');
  const info = inject('radosgw');
  if (!info) throw new Error('radosgw was not started for this run: name an S3 test file (test/s3/...) or set BOXBACK_TEST_RADOSGW=1');
  return info;
}
