/**
 * The job runner: backups and restores run by agents, watched by the CLI.
 *
 * A backup job:
 *   1. CreateBackup makes one job row per host (Queued); a host with a Queued or Running
 *      job is refused with BUSY.
 *   2. The job waits for a permit of its request's bound, then of the fleet-wide bound.
 *   3. Running: the agent's Backup stream is read; each Progress is kept in memory, sent to
 *      watchers, and written to the catalog on a phase change or once a second.
 *   4. The result is recorded: the backup row (from the manifest), then the job row, then
 *      watchers get the result and their streams end.
 * A restore job is the same without the fleet bound (a restore is never queued behind
 * backups). SIGTERM: Queued jobs fail, Running ones get a grace period, then are left
 * Running in the catalog for `reconcile()` on the next start (see reconcile.ts).
 * Every job keeps a log in the catalog (`boxback job logs`): queued, each phase's start and
 * end, a cancel request, its end. Cancelling is job-control.ts.
 */
import { randomBytes } from 'node:crypto';
import {
  BoxbackError,
  asBoxbackError,
  emptyResult,
  formatTimestamp,
  type BackupStore,
  type JobEvent,
  type JobResult,
  type Logger,
  type Progress,
} from '@boxback/common';
import type { Agents } from './agent-client.js';
import { rowFromResult, rowFromResultInStore } from './backup-record.js';
import type { BackupRow, Catalog, HostRow, JobKind, JobRow, JobState } from './catalog/types.js';
import { ACTIVE_JOB_STATES } from './catalog/types.js';
import { AsyncQueue, nextTurn, Semaphore, TimeSlice } from './concurrency.js';

const FINAL_STATES = new Set<string>(['Completed', 'PartiallyFailed', 'Failed', 'RolledBack']);
const PERSIST_EVERY_MS = 1_000;

export interface ActiveJob {
  row: JobRow;
  progress?: Progress;
  abort: AbortController;
  /** Set when the job was failed before it got its permits. */
  cancelled: boolean;
  done: Promise<void>;
  lastPersistMs: number;
  /** The result its watchers were given (a watcher that comes after, while the job is still listed here, gets it at once). */
  result?: JobResult;
}

export interface BackupOptions {
  live: boolean;
  concurrency: number;
  requestedBy: string;
  via: 'cli' | 'schedule' | 'api';
  /** A label for the backup ('' or missing: none). */
  label?: string;
  /** A scheduled backup: the schedule and slot it was fired for (at most one job per slot and host). */
  slot?: { schedule: string; slotMs: number; attempt: number };
}

export interface RestoreOptions {
  dryRun: boolean;
  force: boolean;
  requestedBy: string;
  /** A restore drill: runs as a "drill" job; `afterResult` runs before the result is published. */
  drill?: boolean;
  /** Called with the agent's result before the job is recorded and its watchers are told. */
  afterResult?: (result: JobResult, row: JobRow) => Promise<void>;
}

/**
 * Random bytes for job ids, drawn a pool at a time: a fleet backup of 1000 hosts made 1000
 * `randomBytes` calls in one turn of the event loop (~18 ms of it).
 */
const idPool = { bytes: Buffer.alloc(0), at: 0 };
function idRandom(n: number): string {
  if (idPool.at + n > idPool.bytes.length) {
    idPool.bytes = randomBytes(5 * 256);
    idPool.at = 0;
  }
  const hex = idPool.bytes.toString('hex', idPool.at, idPool.at + n);
  idPool.at += n;
  return hex;
}

/**
 * A job's id: kind, second, 5 random bytes. A fleet backup of 1000 hosts makes 1000 ids in the
 * same second: with 3 bytes two of them collided in ~3% of fleet backups (birthday bound) and
 * CreateBackup --all failed with "already exists"; with 5 bytes ~1 in 2 million.
 */
export function newJobId(kind: JobKind): string {
  return `${kind}-${formatTimestamp(new Date())}-${idRandom(5)}`;
}

export function isFinal(state: string): boolean {
  return FINAL_STATES.has(state);
}

/** Past this many hosts CreateBackup gives the event loop a turn after reading them (one synchronous SQLite query). */
const MANY_HOSTS = 200;

/** The final JobResult of a finished job row (stored, or rebuilt from the row). */
export function resultOfRow(j: JobRow): JobResult {
  if (j.resultJson) {
    try {
      return { ...emptyResult(j.id), ...(JSON.parse(j.resultJson) as Partial<JobResult>) };
    } catch {
      // fall through
    }
  }
  return {
    ...emptyResult(j.id),
    status: j.state,
    backupId: j.backupId,
    errorCode: j.errorCode,
    errorMessage: j.errorMessage,
    dryRunReport: j.dryRunReport,
    durationMs: j.endedAtMs && j.startedAtMs ? j.endedAtMs - j.startedAtMs : 0,
  };
}

export class JobRunner {
  readonly fleet: Semaphore;
  private readonly active = new Map<string, ActiveJob>();
  /** The active job of each host (a host runs one job at a time): status asks per host. */
  private readonly activeByHost = new Map<string, ActiveJob>();
  private readonly watchers = new Map<string, Set<AsyncQueue<JobEvent>>>();
  private shuttingDown = false;
  private readonly finishListeners: Array<(row: JobRow, result: JobResult) => void> = [];
  /** Recorded as the owner of every job this runner creates (the controller's leadership id). */
  owner = '';

  constructor(
    private readonly catalog: Catalog,
    private readonly agents: Agents,
    private readonly log: Logger,
    fleetConcurrency: number,
    /** The backup store, where a manifest too large to send (JobResult.manifestJson empty) is read. */
    private readonly store?: BackupStore,
  ) {
    this.fleet = new Semaphore(fleetConcurrency);
  }

  /** Called after every job ends (metrics, retention, notifications); a listener never fails a job. */
  onFinish(fn: (row: JobRow, result: JobResult) => void): void {
    this.finishListeners.push(fn);
  }

  /** Resolves with the job's final row once it has ended (at once for a finished job). */
  async waitFor(jobId: string): Promise<JobRow | undefined> {
    const a = this.active.get(jobId);
    if (a) await a.done;
    return this.catalog.getJob(jobId);
  }

  /** The job of a host that is Queued or Running (this process's, else the catalog's). */
  async busyWith(host: string): Promise<string | undefined> {
    // A job that has its final state is over for the agent (its stream ended), while its
    // runner may still be writing the job's last event: a caller who saw it end is not refused.
    const a = this.activeJobFor(host);
    if (a && !FINAL_STATES.has(a.row.state)) return a.row.id;
    return (await this.catalog.listJobs({ host, states: ACTIVE_JOB_STATES, limit: 1 }))[0]?.id;
  }

  /** Jobs this process runs or watches now. */
  activeJobs(): ActiveJob[] {
    return [...this.active.values()];
  }

  activeJobFor(host: string): ActiveJob | undefined {
    return this.activeByHost.get(host);
  }

  private refuseIfShuttingDown(): void {
    if (this.shuttingDown)
      throw new BoxbackError('BOXBACK_ERR_SHUTTING_DOWN', 'the controller is shutting down and takes no new jobs; retry when it is back');
  }

  private async refuseBusy(hosts: string[]): Promise<void> {
    // the catalog's active jobs read once (1000 hosts: one query, not 1000 in one turn); each host
    // then judged as busyWith judges it
    const one = hosts.length === 1 ? { host: hosts[0] } : {};
    const inCatalog = new Map<string, string>();
    for (const j of await this.catalog.listJobs({ ...one, states: ACTIVE_JOB_STATES, limit: Number.MAX_SAFE_INTEGER }))
      if (!inCatalog.has(j.host)) inCatalog.set(j.host, j.id);
    const busy: string[] = [];
    for (const h of hosts) {
      const a = this.activeJobFor(h);
      const id = a && !FINAL_STATES.has(a.row.state) ? a.row.id : inCatalog.get(h);
      if (id) busy.push(`${h} (job ${id})`);
    }
    if (busy.length) {
      throw new BoxbackError(
        'BOXBACK_ERR_BUSY',
        `already running a backup or restore: ${busy.join(', ')}; wait for it (\`boxback job watch ID\`) and retry`,
      );
    }
  }

  private newRow(kind: JobKind, host: string, requestedBy: string, params: object): JobRow {
    return {
      id: newJobId(kind),
      kind,
      host,
      state: 'Queued',
      phase: '',
      progressJson: '',
      requestedBy,
      createdAtMs: Date.now(),
      startedAtMs: 0,
      endedAtMs: 0,
      errorCode: '',
      errorMessage: '',
      backupId: '',
      warningCount: 0,
      dryRunReport: '',
      paramsJson: JSON.stringify(params),
      resultJson: '',
      schedule: '',
      slotMs: 0,
      attempt: 0,
      owner: this.owner,
    };
  }

  /** Queue one backup job per host; returns the Queued rows at once. */
  async createBackups(hosts: HostRow[], opts: BackupOptions): Promise<JobRow[]> {
    this.refuseIfShuttingDown();
    if (hosts.length === 0) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', 'no hosts to back up: register one with `boxback hosts add`');
    // a fleet's host list was read in this turn (one synchronous query of every host, SQLite): the
    // active jobs' query and the rows below come after a turn of the event loop
    if (hosts.length > MANY_HOSTS) await nextTurn();
    await this.refuseBusy(hosts.map((h) => h.name));
    const bound = new Semaphore(opts.concurrency > 0 ? Math.min(opts.concurrency, this.fleet.permits) : this.fleet.permits);
    // the rows (a job id, the params' JSON) and then their writes, each with its "queued" log line
    // in the same write, in few catalog commits (the catalog groups writes made together: not one
    // fsync per host), with a turn of the event loop whenever a slice of time is used up (1000
    // hosts: status calls arriving meanwhile are answered, not kept behind every row)
    const slice = new TimeSlice();
    const made: Array<{ host: HostRow; row: JobRow }> = [];
    for (const host of hosts) {
      if (slice.over()) await slice.turn();
      const row = this.newRow('backup', host.name, opts.requestedBy, { live: opts.live, via: opts.via });
      if (opts.slot) Object.assign(row, opts.slot);
      made.push({ host, row });
    }
    const via = `requested by ${opts.requestedBy || 'unknown'} via ${opts.via}${opts.live ? ', live' : ''}`;
    const writes: Array<Promise<void>> = [];
    for (const { row } of made) {
      if (slice.over()) await slice.turn();
      writes.push(this.catalog.createJob(row, { jobId: row.id, atMs: row.createdAtMs, phase: '', state: 'queued', message: via }));
    }
    const created = await Promise.allSettled(writes);
    const queued = made.filter((_, i) => created[i].status === 'fulfilled');
    const rows: JobRow[] = [];
    for (const { host, row } of queued) {
      if (slice.over()) await slice.turn();
      rows.push(row);
      this.start(row, async (a) => {
        const releaseBound = await bound.acquire();
        const releaseFleet = await this.fleet.acquire();
        try {
          if (a.cancelled) return;
          await this.runBackup(a, host, opts);
        } finally {
          releaseFleet();
          releaseBound();
        }
      });
    }
    const failed = created.find((c): c is PromiseRejectedResult => c.status === 'rejected');
    if (failed) throw failed.reason;
    return rows;
  }

  /** Queue a restore of `backup` onto `target`. */
  async createRestore(backup: BackupRow, target: HostRow, opts: RestoreOptions): Promise<JobRow> {
    this.refuseIfShuttingDown();
    await this.refuseBusy([target.name]);
    const params = { backupPath: backup.path, dryRun: opts.dryRun, force: opts.force };
    const row = this.newRow(opts.drill ? 'drill' : 'restore', target.name, opts.requestedBy, params);
    row.backupId = backup.id;
    const message = `${backup.id} onto ${target.name}, requested by ${opts.requestedBy || 'unknown'}${opts.dryRun ? ', dry run' : ''}`;
    await this.catalog.createJob(row, { jobId: row.id, atMs: row.createdAtMs, phase: '', state: 'queued', message });
    this.start(row, async (a) => {
      if (!a.cancelled) await this.runRestore(a, target, backup, opts);
    });
    return row;
  }

  private start(row: JobRow, body: (a: ActiveJob) => Promise<void>): ActiveJob {
    const a: ActiveJob = { row, abort: new AbortController(), cancelled: false, done: Promise.resolve(), lastPersistMs: 0 };
    this.active.set(row.id, a);
    this.activeByHost.set(row.host, a);
    a.done = body(a)
      .catch((err) => this.log.error({ err, jobId: row.id }, 'job runner failed'))
      .finally(() => {
        this.active.delete(row.id);
        if (this.activeByHost.get(row.host) === a) this.activeByHost.delete(row.host);
      });
    return a;
  }

  /** Attach an externally driven job (reconciliation re-attach) so status and watchers see it. */
  attach(row: JobRow, body: (a: ActiveJob) => Promise<void>): ActiveJob {
    return this.start(row, body);
  }

  private async markRunning(a: ActiveJob): Promise<void> {
    a.row.state = 'Running';
    a.row.startedAtMs = Date.now();
    await this.catalog.updateJob(a.row.id, { state: 'Running', startedAtMs: a.row.startedAtMs });
  }

  /** Read an agent's job stream to its result; a broken stream becomes a Failed result. */
  private async drive(a: ActiveJob, stream: AsyncGenerator<JobEvent>): Promise<JobResult | undefined> {
    try {
      let result: JobResult | undefined;
      for await (const ev of stream) {
        if (ev.result) result = ev.result;
        else if (ev.progress) await this.onProgress(a, ev.progress);
      }
      if (!result) throw new BoxbackError('BOXBACK_ERR_INTERNAL', `the agent of ${a.row.host} ended the job stream without a result`);
      return result;
    } catch (err) {
      if (this.shuttingDown && a.abort.signal.aborted) return undefined; // left Running for reconcile
      const be = asBoxbackError(err);
      return {
        ...emptyResult(a.row.id),
        status: 'Failed',
        errorCode: be.code,
        errorMessage: be.message,
        durationMs: Date.now() - a.row.startedAtMs,
      };
    }
  }

  private async runBackup(a: ActiveJob, host: HostRow, opts: BackupOptions): Promise<void> {
    await this.markRunning(a);
    const log = this.log.child({ jobId: a.row.id, host: host.name });
    log.info({ live: opts.live }, 'backup started');
    const agent = this.agents.get(host);
    const req = { jobId: a.row.id, live: opts.live, initiatedBy: opts.requestedBy, initiatedVia: opts.via };
    const result = await this.drive(a, agent.backup(req, a.abort.signal));
    if (!result) return;
    try {
      const row = this.store
        ? await rowFromResultInStore(this.store, host.name, a.row.id, result)
        : rowFromResult(host.name, a.row.id, result);
      if (row) {
        const saved = await this.catalog.putBackup({ ...row, initiatedVia: opts.via });
        if (opts.label) await this.catalog.updateBackup(saved.id, { label: opts.label });
        if (result.status === 'Completed' && !saved.restorable) {
          result.warnings = [...result.warnings, 'the agent sent no readable manifest: the backup is not Restorable'];
          result.status = 'PartiallyFailed';
        }
      }
    } catch (err) {
      log.error({ err }, 'recording the backup failed');
      result.status = 'Failed';
      result.errorCode = 'BOXBACK_ERR_CATALOG';
      result.errorMessage = `the backup finished but could not be recorded in the catalog: ${(err as Error).message}`;
    }
    await this.finish(a, result);
    log.info({ status: result.status, backupId: result.backupId, error: result.errorMessage || undefined }, 'backup ended');
  }

  private async runRestore(a: ActiveJob, target: HostRow, backup: BackupRow, opts: RestoreOptions): Promise<void> {
    await this.markRunning(a);
    const log = this.log.child({ jobId: a.row.id, host: target.name, backupId: backup.id });
    log.info({ dryRun: opts.dryRun }, 'restore started');
    const agent = this.agents.get(target);
    // Another host's backup: name its host, so that the agent reads that part of the store for this restore only.
    const sourceHost = backup.host === target.name ? '' : backup.host;
    const req = { jobId: a.row.id, backupPath: backup.path, dryRun: opts.dryRun, force: opts.force, backupId: backup.id, sourceHost };
    const result = await this.drive(a, agent.restore(req, a.abort.signal));
    if (!result) return;
    result.backupId ||= backup.id;
    if (opts.afterResult) {
      try {
        await opts.afterResult(result, a.row);
      } catch (err) {
        log.error({ err }, 'after-restore step failed');
        result.warnings = [...result.warnings, `after the restore: ${(err as Error).message}`];
      }
    }
    await this.finish(a, result);
    log.info({ status: result.status, error: result.errorMessage || undefined }, 'restore ended');
  }

  /** Append a line to a job's log; a catalog failure is logged, never fails the job. */
  async logEvent(jobId: string, phase: string, state: string, message: string): Promise<void> {
    try {
      await this.catalog.appendJobEvent({ jobId, atMs: Date.now(), phase, state, message });
    } catch (err) {
      this.log.warn({ err, jobId }, 'writing the job log failed');
    }
  }

  async onProgress(a: ActiveJob, p: Progress): Promise<void> {
    const phaseChanged = a.progress?.phase !== p.phase || a.progress?.state !== p.state;
    if (phaseChanged && p.state !== 'running') await this.logEvent(a.row.id, p.phase, p.state, p.message);
    a.progress = p;
    a.row.phase = p.phase;
    this.emit(a.row.id, { progress: p });
    const now = Date.now();
    if (phaseChanged || now - a.lastPersistMs >= PERSIST_EVERY_MS) {
      a.lastPersistMs = now;
      a.row.progressJson = JSON.stringify(p);
      await this.catalog.updateJobProgress(a.row.id, p.phase, a.row.progressJson);
    }
  }

  /** Record a job's result and end its watchers' streams. */
  async finish(a: ActiveJob, result: JobResult): Promise<void> {
    const state = (isFinal(result.status) ? result.status : 'Failed') as JobState;
    result.status = state;
    result.jobId = a.row.id;
    const update = {
      state,
      endedAtMs: Date.now(),
      errorCode: result.errorCode,
      errorMessage: result.errorMessage,
      backupId: result.backupId || a.row.backupId,
      warningCount: result.warnings.length,
      dryRunReport: result.dryRunReport,
      // a failed job's phase is the step that failed, not the last event (a RESUME done, a stopped sibling)
      phase: ((state === 'Failed' || state === 'RolledBack') && result.failedStep) || (a.progress?.phase ?? a.row.phase),
      progressJson: a.progress ? JSON.stringify(a.progress) : a.row.progressJson,
      // the manifest lives in the backup row; keep the job row small
      resultJson: JSON.stringify({ ...result, manifestJson: '' }),
    };
    Object.assign(a.row, update);
    await this.catalog.updateJob(a.row.id, update);
    const failedIn = result.failedStep || (state === 'Failed' || state === 'RolledBack' ? update.phase : '');
    await this.logEvent(
      a.row.id,
      failedIn,
      state,
      [result.backupId, result.errorCode, result.errorMessage, ...result.warnings.map((w) => `warning: ${w}`)].filter(Boolean).join('; '),
    );
    a.result = { ...result, manifestJson: '' };
    this.emit(a.row.id, { result: a.result });
    for (const q of this.watchers.get(a.row.id) ?? []) q.end();
    this.watchers.delete(a.row.id);
    for (const fn of this.finishListeners) {
      try {
        fn(a.row, result);
      } catch (err) {
        this.log.error({ err, jobId: a.row.id }, 'job finish listener failed');
      }
    }
  }

  private emit(jobId: string, ev: JobEvent): void {
    for (const q of this.watchers.get(jobId) ?? []) q.push(ev);
  }

  /** WatchJob: the last progress, live events, then the result. A finished job yields its result at once. */
  async *watch(jobId: string, signal?: AbortSignal): AsyncGenerator<JobEvent> {
    // a job this process runs is followed from memory (a fleet backup's 1000 watchers read no row)
    const a = this.active.get(jobId);
    if (!a) {
      const row = await this.catalog.getJob(jobId);
      if (!row) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no job ${jobId}: list jobs with \`boxback status\``);
      yield { result: resultOfRow(row) };
      return;
    }
    if (a.result) {
      yield { result: a.result };
      return;
    }
    const q = new AsyncQueue<JobEvent>();
    let set = this.watchers.get(jobId);
    if (!set) this.watchers.set(jobId, (set = new Set()));
    set.add(q);
    const onAbort = () => q.end();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (a.progress) yield { progress: a.progress };
      for await (const ev of q) {
        yield ev;
        if (ev.result) return;
      }
      if (signal?.aborted) return; // the watcher went away
      // the queue ended without a result: the controller is shutting down
      throw new BoxbackError(
        'BOXBACK_ERR_SHUTTING_DOWN',
        `the controller is shutting down; job ${jobId} goes on on the agent — watch it again when the controller is back`,
      );
    } finally {
      signal?.removeEventListener('abort', onAbort);
      set.delete(q);
    }
  }

  /** SIGTERM: refuse new jobs, fail Queued ones, give Running ones `graceMs`, then leave them to reconciliation. */
  async shutdown(graceMs: number): Promise<void> {
    this.shuttingDown = true;
    for (const a of this.active.values()) {
      if (a.row.state === 'Queued') {
        a.cancelled = true;
        const r = {
          ...emptyResult(a.row.id),
          errorCode: 'BOXBACK_ERR_SHUTTING_DOWN',
          errorMessage: 'the controller shut down before the job started; start it again',
        };
        await this.finish(a, r);
      }
    }
    const all = () => Promise.all([...this.active.values()].map((a) => a.done));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all(), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    for (const a of this.active.values()) {
      this.log.warn({ jobId: a.row.id, host: a.row.host }, 'job still running at shutdown; it will be reconciled on the next start');
      a.abort.abort();
    }
    for (const qs of this.watchers.values()) for (const q of qs) q.end();
    await all();
  }
}
