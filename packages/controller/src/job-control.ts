/**
 * Job control over the ControllerService: list jobs, read a job's log, cancel a job.
 *
 * Cancel (CancelJob):
 *   1. the job must exist and not have ended (BOXBACK_ERR_JOB_ENDED otherwise);
 *   2. "cancel requested by X" goes into the job's log;
 *   3. a Queued job of this controller ends at once (Failed, BOXBACK_ERR_CANCELLED): it never
 *      reached an agent;
 *   4. a Running job: its host's agent is asked to cancel it (CancelJob on the agent, so any
 *      controller can cancel any job). The agent aborts the job's signal; a backup resumes
 *      the services and removes its partial directory (nothing Restorable is left), a
 *      restore rolls back. The job's own stream then carries the outcome to its watchers.
 *      An agent that has not picked the job up yet is asked again for a few seconds.
 * The caller follows the job (WatchJob) to see it end.
 */
import { BoxbackError, emptyResult, type wire } from '@boxback/common';
import type { Caller } from './auth.js';
import type { JobRow, JobState } from './catalog/types.js';
import { jobMsg } from './convert.js';
import type { Ctx } from './handlers.js';
import { isFinal } from './jobs.js';

type Req<N extends keyof wire.ControllerServiceRpcs> = wire.ControllerServiceRpcs[N]['req'];

const STATES: readonly JobState[] = ['Queued', 'Running', 'Completed', 'PartiallyFailed', 'Failed', 'RolledBack'];
const KINDS = ['backup', 'restore', 'drill', 'verify'];
const CANCEL_RETRY_MS = 300;
const CANCEL_TRIES = 15;

/** "active" stands for Queued and Running; any state is accepted in any case. */
export function parseStates(states: readonly string[]): JobState[] {
  const out = new Set<JobState>();
  for (const raw of states) {
    const s = raw.trim().toLowerCase();
    if (!s) continue;
    if (s === 'active') {
      out.add('Queued');
      out.add('Running');
      continue;
    }
    const hit = STATES.find((x) => x.toLowerCase() === s);
    if (!hit) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `no job state "${raw}": want active or one of ${STATES.join(', ')}`);
    out.add(hit);
  }
  return [...out];
}

export async function listJobs(ctx: Ctx, r: Req<'ListJobs'>) {
  const kind = String(r.kind ?? '').trim();
  if (kind && !KINDS.includes(kind))
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `no job kind "${kind}": want one of ${KINDS.join(', ')}`);
  const rows = await ctx.catalog.listJobs({
    host: r.host || undefined,
    kinds: kind ? [kind] : undefined,
    states: parseStates(r.states ?? []),
    limit: r.limit > 0 ? Math.min(r.limit, 10_000) : 50,
  });
  const live = new Map(ctx.jobs.activeJobs().map((a) => [a.row.id, a]));
  return {
    jobs: rows.map((j) => {
      const a = live.get(j.id);
      return a ? jobMsg(a.row, a.progress) : jobMsg(j);
    }),
  };
}

async function mustJob(ctx: Ctx, id: string): Promise<JobRow> {
  if (!id) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', 'no job ID given: list jobs with `boxback jobs`');
  const j = await ctx.catalog.getJob(id);
  if (!j) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no job "${id}": list jobs with \`boxback jobs\``);
  return j;
}

export async function jobLogs(ctx: Ctx, r: Req<'GetJobLogs'>) {
  const j = await mustJob(ctx, r.id);
  const events = await ctx.catalog.listJobEvents(j.id);
  return { job: jobMsg(j), entries: events.map((e) => ({ atMs: e.atMs, phase: e.phase, state: e.state, message: e.message })) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function cancelJob(ctx: Ctx, r: Req<'CancelJob'>, who: Caller) {
  const row = await mustJob(ctx, r.id);
  if (isFinal(row.state))
    throw new BoxbackError('BOXBACK_ERR_JOB_ENDED', `job ${row.id} already ended (${row.state}); there is nothing to cancel`);
  const by = who.name;
  await ctx.jobs.logEvent(row.id, row.phase, 'cancel', `cancel requested by ${by}`);
  const local = ctx.jobs.activeJobs().find((a) => a.row.id === row.id);
  if (local && local.row.state === 'Queued') {
    local.cancelled = true;
    await ctx.jobs.finish(local, {
      ...emptyResult(row.id),
      errorCode: 'BOXBACK_ERR_CANCELLED',
      errorMessage: `cancelled by ${by} before it started`,
    });
    return jobMsg(local.row);
  }
  const host = await ctx.catalog.getHost(row.host);
  if (!host) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `job ${row.id} runs on ${row.host}, which is no longer registered`);
  const agent = ctx.agents.get(host);
  for (let i = 0; i < CANCEL_TRIES; i++) {
    const res = await agent.cancelJob(row.id, by);
    if (res.cancelling) {
      ctx.log.info({ jobId: row.id, host: row.host, by }, 'job cancel sent to the agent');
      return jobMsg(local?.row ?? row, local?.progress);
    }
    const now = await ctx.catalog.getJob(row.id);
    if (now && isFinal(now.state))
      throw new BoxbackError('BOXBACK_ERR_JOB_ENDED', `job ${row.id} ended (${now.state}) before the cancel reached it`);
    if (res.runningJobId && res.runningJobId !== row.id && !local) break;
    await sleep(CANCEL_RETRY_MS);
  }
  if (local) {
    // the agent never picked the job up: drop the call (the agent then has nothing to run)
    local.abort.abort();
    return jobMsg(local.row, local.progress);
  }
  throw new BoxbackError(
    'BOXBACK_ERR_JOB_ENDED',
    `the agent of ${row.host} does not run job ${row.id}; reconciliation records how it ended (\`boxback job get ${row.id}\`)`,
  );
}
