// vitest globalSetup: one radosgw for the whole run, shared by every S3 test file through
// inject('radosgw'), stopped (by pid) when the run ends. It starts only when the run may need it:
// no file filter on the command line (the whole suite), or a filter naming an S3 test.
import type { TestProject } from 'vitest/node';
import { startRadosgw, type Radosgw, type RadosgwInfo } from './radosgw.js';

declare module 'vitest' {
  export interface ProvidedContext {
    radosgw: RadosgwInfo | null;
  }
}

function runNeedsRadosgw(): boolean {
  const args = process.argv.slice(2).filter((a) => !a.startsWith('-') && a !== 'run' && a !== 'watch');
  const filters = args.filter((a) => /[/.]|test/.test(a));
  if (process.env.BOXBACK_TEST_RADOSGW === '1') return true;
  return filters.length === 0 || filters.some((f) => /s3|radosgw/i.test(f));
}

let rgw: Radosgw | null = null;

export async function setup(project: TestProject): Promise<void> {
  rgw = runNeedsRadosgw() ? await startRadosgw() : null;
  project.provide(
    'radosgw',
    rgw
      ? { endpoint: rgw.endpoint, region: rgw.region, accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey, conf: rgw.conf }
      : null,
  );
}

export async function teardown(): Promise<void> {
  await rgw?.stop();
  rgw = null;
}
