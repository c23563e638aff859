/**
 * A CPU profile of each job, for finding where a backup or a restore spends its time: with
 * BOXBACK_JOB_CPU_PROFILE_DIR set in the agent's environment, each job is profiled by the
 * in-process inspector and written to `<dir>/<job id>.cpuprofile` (open it in Chrome's
 * DevTools or speedscope). Off unless set; a profile that cannot be written is logged, and
 * the job's own result is never changed by it. `npm run bench -- --job-prof DIR` sets it.
 */
import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import path from 'node:path';
import type { Logger } from '@boxback/common';

export async function profiledJob<T>(jobId: string, log: Logger, fn: () => Promise<T>): Promise<T> {
  const dir = process.env.BOXBACK_JOB_CPU_PROFILE_DIR;
  if (!dir) return fn();
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 250 });
  await session.post('Profiler.start');
  try {
    return await fn();
  } finally {
    try {
      const { profile } = await session.post('Profiler.stop');
      const file = path.join(dir, `${jobId.replace(/[^A-Za-z0-9._-]/g, '_')}.cpuprofile`);
      await writeFile(file, JSON.stringify(profile));
      log.info({ file }, 'job CPU profile written');
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'job CPU profile not written');
    }
    session.disconnect();
  }
}
