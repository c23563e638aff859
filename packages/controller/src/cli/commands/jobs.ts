/**
 * `boxback jobs` and `boxback job get|watch|cancel|logs ID`.
 *
 * cancel: CancelJob (the controller asks the job's agent) -> follow the job to its end
 *         (--no-wait: return at once) -> one line: how it ended. Exit 0 when it ended
 *         cancelled (a backup: services resumed, nothing Restorable; a restore: RolledBack);
 *         when it ended some other way first: 8 (not possible) if it completed, else the
 *         failed job's exit code (5, or 6 when its agent did not answer).
 * logs:   the job's log from the catalog; --follow then prints each phase change live.
 */
import type { Command } from 'commander';
import { ExitCode, type JobResult, type wire } from '@boxback/common';
import { jobExitCode, positiveInt, tableOptions, type CliContext } from '../context.js';
import { humanAge, humanDuration, table } from '../format.js';
import { followJobs, resultLine, type WatchedJob } from '../watch.js';
import { toJson } from '../json.js';

export type JobMsg = wire.Job;

const FAILED = new Set(['Failed', 'RolledBack']);

/** How long a job ran (or has been running). */
function took(j: JobMsg, now = Date.now()): string {
  if (!j.startedAtMs) return '-';
  return humanDuration((j.endedAtMs || now) - j.startedAtMs);
}

/** "Failed (cancelled)" reads better than Failed with BOXBACK_ERR_CANCELLED further right. */
export function stateText(j: Pick<JobMsg, 'state' | 'errorCode'>): string {
  return j.state === 'Failed' && j.errorCode === 'BOXBACK_ERR_CANCELLED' ? 'Failed (cancelled)' : j.state;
}

export function jobsTable(jobs: JobMsg[]): string {
  if (!jobs.length) return 'no jobs match';
  return table(jobs, [
    { header: 'Job ID', get: (j) => j.id, priority: 20 },
    { header: 'Kind', get: (j) => j.kind, priority: 15 },
    { header: 'Host', get: (j) => j.host, priority: 15 },
    { header: 'State', get: stateText, priority: 18 },
    { header: 'Phase', get: (j) => j.phase || '-', priority: 8 },
    { header: 'Created', get: (j) => humanAge(j.createdAtMs), priority: 7 },
    { header: 'Took', get: (j) => took(j), align: 'right', priority: 6 },
    { header: 'By', get: (j) => j.requestedBy || '-', priority: 3 },
    { header: 'Backup', get: (j) => j.backupId || '-', priority: 5 },
    { header: 'Error', get: (j) => j.errorMessage || '-', priority: 4 },
  ]);
}

export function jobDetails(j: JobMsg): string {
  const p = j.progress;
  const rows: Array<[string, string]> = [
    ['Job ID', j.id],
    ['Kind', j.kind],
    ['Host', j.host],
    ['State', stateText(j)],
    ['Phase', j.phase || '-'],
    ['Requested by', j.requestedBy || '-'],
    ['Created', j.createdAtMs ? `${new Date(j.createdAtMs).toISOString()} (${humanAge(j.createdAtMs)})` : '-'],
    ['Took', took(j)],
    ['Backup', j.backupId || '-'],
  ];
  if (p && !j.endedAtMs) rows.push(['Progress', `${p.phase} ${p.state}${p.message ? `: ${p.message}` : ''}`]);
  if (j.warningCount) rows.push(['Warnings', String(j.warningCount)]);
  if (j.errorCode || j.errorMessage) rows.push(['Error', `${j.errorCode ? `${j.errorCode}: ` : ''}${j.errorMessage}`]);
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

/** "18:40:01  QUIESCE  started  stopping go-server" (local time, one line per entry). */
export function logLine(e: Pick<wire.JobLogEntry, 'atMs' | 'phase' | 'state' | 'message'>): string {
  const d = new Date(e.atMs);
  const p = (n: number) => String(n).padStart(2, '0');
  const t = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  return [t, (e.phase || 'job').padEnd(20), e.state.padEnd(16), e.message].join('  ').trimEnd();
}

async function follow(ctx: CliContext, j: WatchedJob): Promise<JobResult> {
  const [r] = await followJobs(ctx.client(), [j], { json: ctx.json, tty: ctx.tty });
  return r;
}

export function registerJobCommands(program: Command, ctx: CliContext): void {
  tableOptions(program.command('jobs'))
    .description('list jobs, newest first (backups, restores, drills)')
    .option('--host <name>', 'only this host')
    .option('--kind <kind>', 'only backup, restore, drill or verify jobs')
    .option(
      '--state <state...>',
      'only jobs in these states: active (Queued and Running), Queued, Running, Completed, PartiallyFailed, Failed, RolledBack',
    )
    .option('--limit <n>', 'at most N jobs', positiveInt('--limit'), 50)
    .action(async (o: { host?: string; kind?: string; state?: string[]; limit: number }) => {
      const r = await ctx.client().call('ListJobs', { host: o.host ?? '', kind: o.kind ?? '', states: o.state ?? [], limit: o.limit });
      ctx.out(r.jobs, () => jobsTable(r.jobs));
    });

  const job = program.command('job').description('follow, inspect, cancel and read the log of one job');
  job
    .command('watch <id>')
    .description(
      'follow a job: progress, then its result (exit 5 when it failed, 6 when its agent did not answer); Ctrl-C stops watching, the job goes on',
    )
    .action(async (id: string) => {
      const j = await ctx.client().call('GetJob', { id });
      const r = await follow(ctx, j);
      ctx.failOnJobs([r]);
      ctx.out({ job: j, result: r }, () => resultLine(j, r, j.host.length) + (r.dryRunReport ? `\n\n${r.dryRunReport.trimEnd()}` : ''));
    });
  job
    .command('get <id>')
    .description('show one job (exit 5 when it failed; 6 when it failed because its agent did not answer)')
    .action(async (id: string) => {
      const j = await ctx.client().call('GetJob', { id });
      if (FAILED.has(j.state)) ctx.exitCode = jobExitCode(j.errorCode);
      ctx.out(j, () => jobDetails(j));
    });
  job
    .command('cancel <id>')
    .description('cancel a queued or running job: a backup resumes the services and keeps nothing, a restore rolls back')
    .option('--no-wait', 'ask for the cancel and return; do not wait for the job to end')
    .action(async (id: string, o: { wait: boolean }) => {
      const j = await ctx.client().call('CancelJob', { id }, 30_000);
      if (!o.wait) {
        ctx.out({ job: j }, () => `cancelling ${j.id} on ${j.host}; follow with \`boxback job watch ${j.id}\``);
        return;
      }
      ctx.info(`cancelling ${j.kind} job ${j.id} on ${j.host}`);
      const r = await follow(ctx, j);
      const cancelled = r.errorCode === 'BOXBACK_ERR_CANCELLED' || r.status === 'RolledBack';
      if (!cancelled) {
        ctx.exitCode = FAILED.has(r.status) ? jobExitCode(r.errorCode) : ExitCode.NOT_POSSIBLE;
        ctx.finalError = `boxback: ${FAILED.has(r.status) ? r.errorCode || 'BOXBACK_ERR_JOB_FAILED' : 'BOXBACK_ERR_JOB_ENDED'}: job ${j.id} ended ${r.status} before the cancel took effect`;
      }
      ctx.out({ job: j, result: r, cancelled }, () => {
        if (!cancelled) return `${j.id} ended ${r.status} before the cancel took effect${r.errorMessage ? `: ${r.errorMessage}` : ''}`;
        const what =
          r.status === 'RolledBack'
            ? 'rolled back: the previous data is back and the services run'
            : j.kind === 'backup'
              ? 'cancelled: the services run again and no backup was kept'
              : 'cancelled';
        return `${j.id} ${what}${r.failedStep ? ` (stopped in ${r.failedStep})` : ''}`;
      });
    });
  job
    .command('logs <id>')
    .description("a job's log: queued, each phase's start and end, cancel requests, how it ended")
    .option('-f, --follow', 'then print each phase change until the job ends')
    .action(async (id: string, o: { follow?: boolean }) => {
      const r = await ctx.client().call('GetJobLogs', { id });
      ctx.out(r, () => (r.entries.length ? r.entries.map(logLine).join('\n') : `no log lines for ${id} yet`));
      if (!o.follow || !r.job || r.job.endedAtMs) return;
      let last = r.entries.length ? `${r.entries[r.entries.length - 1].phase}/${r.entries[r.entries.length - 1].state}` : '';
      const res = await followJobs(ctx.client(), [r.job], {
        json: ctx.json,
        tty: false,
        print: () => undefined,
        onProgress: (p) => {
          const key = `${p.phase}/${p.state}`;
          if (key === last || p.state === 'running') return;
          last = key;
          process.stdout.write(
            `${ctx.json ? toJson(p, true) : logLine({ atMs: p.atMs, phase: p.phase, state: p.state, message: p.message })}\n`,
          );
        },
      });
      const end = res[0];
      ctx.failOnJobs(res);
      process.stdout.write(
        `${ctx.json ? toJson(end, true) : logLine({ atMs: Date.now(), phase: end.failedStep, state: end.status, message: [end.backupId, end.errorMessage].filter(Boolean).join('; ') })}\n`,
      );
    });
}
