/**
 * Step timings of a restore in the agent's log: one line 'restore step timed' with `step` and
 * `ms` per timed piece (verify_sha256, verify_zips, extract_<archive>, fetch_<tree>, chown,
 * flush, swap). The bench (bench/lib/deployed.mjs) reads them from the daemon's log.
 */
import type { JobContext } from '../job.js';

export async function timed<T>(ctx: Pick<JobContext, 'log'>, name: string, fn: () => Promise<T>): Promise<T> {
  const started = Date.now();
  const r = await fn();
  ctx.log.info({ step: name, ms: Date.now() - started }, 'restore step timed');
  return r;
}
