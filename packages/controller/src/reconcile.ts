/**
 * Reconciliation at controller start: no job stays Queued or Running forever.
 *   1. Queued jobs never reached an agent: Failed ("start it again").
 *   2. Running jobs: ask the host's agent (GetInfo, a few tries).
 *      - unreachable: Failed with BOXBACK_ERR_UNREACHABLE naming the host and address;
 *      - still running this job: re-attach, poll GetInfo every `pollMs` (progress goes to
 *        watchers and status) until the agent is done with it, then conclude;
 *      - done with it: conclude.
 *   3. Conclude a backup: a complete backup directory of that host, newer than the job's
 *      start and not in the catalog, is recorded and the job Completed; otherwise Failed.
 *      Conclude a restore: a safety copy held for the job means it went through (Completed,
 *      with a warning that the controller did not see its result); otherwise Failed.
 */
import { emptyResult, mapLimit, refFromPath, type AgentInfo, type BackupStore, type JobResult, type Logger } from '@boxback/common';
import type { Agents } from './agent-client.js';
import { listStoreBackups, rowFromStore } from './backup-record.js';
import type { Catalog, HostRow, JobRow } from './catalog/types.js';
import type { ActiveJob, JobRunner } from './jobs.js';

export interface ReconcileDeps {
  catalog: Catalog;
  agents: Agents;
  jobs: JobRunner;
  log: Logger;
  store: BackupStore;
  pollMs?: number;
  tries?: number;
  /** Jobs to leave alone (this process's own, or those of a controller still running). */
  skip?: (row: JobRow) => boolean | Promise<boolean>;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });

function failed(jobId: string, code: string, message: string): JobResult {
  return { ...emptyResult(jobId), status: 'Failed', errorCode: code, errorMessage: message };
}

async function askAgent(d: ReconcileDeps, host: HostRow): Promise<AgentInfo | Error> {
  let last: Error = new Error('no answer');
  for (let i = 0; i < (d.tries ?? 3); i++) {
    try {
      return await d.agents.get(host).getInfo(3_000);
    } catch (err) {
      last = err as Error;
      await sleep(1_000);
    }
  }
  return last;
}

function viaOf(row: JobRow): string {
  try {
    return String((JSON.parse(row.paramsJson) as { via?: string }).via ?? 'cli');
  } catch {
    return 'cli';
  }
}

async function concludeBackup(d: ReconcileDeps, row: JobRow): Promise<JobResult> {
  const since = row.startedAtMs - 2_000;
  const known = new Set((await d.catalog.listBackups(row.host)).map((b) => b.path));
  for (const rel of (await listStoreBackups(d.store, row.host)).reverse()) {
    if (known.has(rel)) continue;
    const b = await rowFromStore(d.store, refFromPath(rel), row.id).catch(() => undefined);
    if (!b || b.createdAtMs < since) continue;
    await d.catalog.putBackup({ ...b, initiatedVia: viaOf(row) });
    return {
      ...emptyResult(row.id),
      status: 'Completed',
      backupId: b.id,
      backupPath: b.path,
      sizeBytes: b.sizeBytes,
      warnings: ['the controller restarted during this backup; it was found complete in the store afterwards'],
    };
  }
  return failed(
    row.id,
    'BOXBACK_ERR_JOB_FAILED',
    `the controller restarted during this backup and the agent of ${row.host} no longer runs it; no finished backup from it is in the store — start it again`,
  );
}

function concludeRestore(row: JobRow, info: AgentInfo): JobResult {
  if (info.safetyCopies.some((s) => s.jobId === row.id)) {
    return {
      ...emptyResult(row.id),
      status: 'Completed',
      backupId: row.backupId,
      warnings: [
        'the controller restarted during this restore and did not see its result; the agent keeps its safety copy (check the host, then `boxback restore confirm`)',
      ],
    };
  }
  return failed(
    row.id,
    'BOXBACK_ERR_JOB_FAILED',
    `the controller restarted during this restore and the agent of ${row.host} no longer runs it; its outcome is unknown — check the host's services`,
  );
}

async function conclude(d: ReconcileDeps, a: ActiveJob, info: AgentInfo): Promise<void> {
  const r = a.row.kind === 'backup' ? await concludeBackup(d, a.row) : concludeRestore(a.row, info);
  await d.jobs.finish(a, r);
  d.log.info({ jobId: a.row.id, host: a.row.host, status: r.status }, 'job reconciled');
}

/** Poll a job the agent still runs until it is done, then conclude it. */
async function followAgent(d: ReconcileDeps, host: HostRow, a: ActiveJob): Promise<void> {
  const pollMs = d.pollMs ?? 2_000;
  let misses = 0;
  while (!a.abort.signal.aborted) {
    await sleep(pollMs, a.abort.signal);
    if (a.abort.signal.aborted) return; // shutting down: stays Running for the next start
    let info: AgentInfo;
    try {
      info = await d.agents.get(host).getInfo(3_000);
      misses = 0;
    } catch (err) {
      if (++misses < 30) continue;
      await d.jobs.finish(
        a,
        failed(a.row.id, 'BOXBACK_ERR_UNREACHABLE', `${(err as Error).message}; lost track of the job after a controller restart`),
      );
      return;
    }
    if (info.runningJobId !== a.row.id) return conclude(d, a, info);
    if (info.runningProgress) await d.jobs.onProgress(a, { ...info.runningProgress, jobId: a.row.id });
  }
}

/**
 * Resolve every job a previous controller left Queued or Running (but those `skip` names). Returns once each job is
 * finished or re-attached (re-attached ones are followed in the background).
 */
export async function reconcileJobs(d: ReconcileDeps): Promise<number> {
  const left: JobRow[] = [];
  for (const row of await d.catalog.listJobs({ states: ['Queued', 'Running'], limit: 100_000 })) {
    if (!(await d.skip?.(row))) left.push(row);
  }
  await mapLimit(left, 16, async (row) => {
    const host = await d.catalog.getHost(row.host);
    let decided!: () => void;
    const decision = new Promise<void>((resolve) => (decided = resolve));
    const a = d.jobs.attach(row, async (x) => {
      try {
        if (row.state === 'Queued') {
          await d.jobs.finish(
            x,
            failed(row.id, 'BOXBACK_ERR_JOB_FAILED', 'the controller stopped before this job started; start it again'),
          );
          return;
        }
        if (!host) {
          await d.jobs.finish(x, failed(row.id, 'BOXBACK_ERR_NOT_FOUND', `host ${row.host} was removed while its job was running`));
          return;
        }
        const info = await askAgent(d, host);
        if (info instanceof Error) {
          await d.jobs.finish(
            x,
            failed(
              row.id,
              'BOXBACK_ERR_UNREACHABLE',
              `${info.message}; the controller restarted during this job and could not learn its outcome — check the host`,
            ),
          );
          return;
        }
        if (info.runningJobId !== row.id) {
          await conclude(d, x, info);
          return;
        }
        d.log.info({ jobId: row.id, host: row.host }, 'job still running on its agent: re-attached');
        decided();
        await followAgent(d, host, x);
      } finally {
        decided();
      }
    });
    await Promise.race([decision, a.done]);
  });
  return left.length;
}
