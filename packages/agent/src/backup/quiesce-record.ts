/**
 * The quiesce lease: services are never left quiesced.
 *
 *   acquire   1. write <stateDir>/quiesce.json (job, mode, services, deadline) and fsync it,
 *                BEFORE anything is stopped, so a crashed agent knows what to undo
 *             2. arm a deadline timer: when the lease expires the services are resumed
 *                and `expired` is aborted (the window's work stops)
 *   release   3. resume (once, however many callers), clear the timer, remove the record
 *             (kept when resuming failed, so the next start-up retries)
 *   start-up  recoverQuiesce: a record left by a crashed agent is resumed and logged;
 *             stale `.tmp-backup_*` directories in the store are removed.
 *
 * See docs/design/quiesce-lease.md.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, asBoxbackError, fsyncDir, writeFileAtomic, type Logger, type QuiesceMode } from '@boxback/common';
import type { AgentConfig } from '../config.js';
import { exitQuiesce } from './quiesce.js';
import { agentStore } from '../store.js';

export const QUIESCE_RECORD = 'quiesce.json';

export interface QuiesceRecord {
  jobId: string;
  /** The agent process that quiesced. */
  pid: number;
  mode: QuiesceMode;
  services: string[];
  planFile: string;
  startedAtMs: number;
  deadlineMs: number;
}

let held: QuiesceLease | undefined;

/** The quiesce lease now held, if any (for GetInfo). */
export function currentQuiesce(): { deadlineMs: number } | undefined {
  return held && !held.released ? { deadlineMs: held.record.deadlineMs } : undefined;
}

function recordFile(stateDir: string): string {
  return path.join(stateDir, QUIESCE_RECORD);
}

export async function readQuiesceRecord(stateDir: string): Promise<QuiesceRecord | undefined> {
  let text: string;
  try {
    text = await fsp.readFile(recordFile(stateDir), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return JSON.parse(text) as QuiesceRecord;
  } catch {
    // A torn record cannot happen (atomic write), but an unreadable one still means "resume".
    return { jobId: 'unknown', pid: 0, mode: 'stop', services: [], planFile: '', startedAtMs: 0, deadlineMs: 0 };
  }
}

async function removeRecord(stateDir: string): Promise<void> {
  await fsp.rm(recordFile(stateDir), { force: true });
  await fsyncDir(stateDir).catch(() => undefined);
}

export interface LeaseOptions {
  config: AgentConfig;
  jobId: string;
  mode: QuiesceMode;
  /** Services to stop and resume (stop mode: the ones running before the backup). */
  services: string[];
  log: Logger;
  /** Resume function (defaults to exitQuiesce with the config's plan). */
  resume?: () => Promise<void>;
}

export class QuiesceLease {
  private timer: NodeJS.Timeout | undefined;
  private resuming: Promise<void> | undefined;
  private readonly expiry = new AbortController();
  released = false;
  resumedAtMs = 0;

  private constructor(
    readonly record: QuiesceRecord,
    private readonly opts: LeaseOptions,
  ) {}

  /** Aborted (with a BOXBACK_ERR_TIMEOUT) when the lease runs out before release. */
  get expired(): AbortSignal {
    return this.expiry.signal;
  }

  /** Record the lease durably, then arm its deadline. Call before quiescing anything. */
  static async acquire(opts: LeaseOptions): Promise<QuiesceLease> {
    const { config } = opts;
    const now = Date.now();
    const leaseMs = config.plan.quiesce.leaseSeconds * 1000;
    const record: QuiesceRecord = {
      jobId: opts.jobId,
      pid: process.pid,
      mode: opts.mode,
      services: opts.services,
      planFile: config.planFile,
      startedAtMs: now,
      deadlineMs: now + leaseMs,
    };
    await fsp.mkdir(config.stateDir, { recursive: true, mode: 0o700 });
    await writeFileAtomic(recordFile(config.stateDir), `${JSON.stringify(record, null, 2)}\n`, 0o600);
    const lease = new QuiesceLease(record, opts);
    lease.timer = setTimeout(() => lease.onExpired(leaseMs), leaseMs);
    lease.timer.unref();
    held = lease;
    return lease;
  }

  /**
   * At the deadline the window's work is aborted (commands and copies are killed) and the
   * job's finally-block resumes at once. Should that not happen within the grace period (a
   * stop command still running, a stuck step), the timer resumes by itself.
   */
  private onExpired(leaseMs: number): void {
    if (this.released) return;
    const secs = Math.round(leaseMs / 1000);
    this.opts.log.warn({ leaseSeconds: secs }, 'quiesce lease expired: stopping the window and resuming services');
    this.expiry.abort(
      new BoxbackError(
        'BOXBACK_ERR_TIMEOUT',
        `the quiesce lease of ${secs}s expired before the consistent copy was done; services were resumed (raise quiesce.leaseSeconds in the plan)`,
      ),
    );
    const graceMs = 5000 + this.opts.config.plan.services.reduce((s, svc) => s + svc.stopTimeoutSeconds * 1000, 0);
    this.timer = setTimeout(() => {
      if (this.released || this.resuming) return;
      this.opts.log.error(
        { graceMs },
        'the backup did not leave the window after the lease expired: resuming services from the lease timer',
      );
      this.resume().catch((err: unknown) => this.opts.log.error({ err }, 'resuming services from the lease timer failed'));
    }, graceMs);
    this.timer.unref();
  }

  /** Resume once; every caller awaits the same attempt. */
  resume(): Promise<void> {
    this.resuming ??= (async () => {
      const resume = this.opts.resume ?? (() => exitQuiesce(this.opts.config.plan, this.opts.mode, this.opts.log, this.opts.services));
      await resume();
      this.resumedAtMs = Date.now();
    })();
    return this.resuming;
  }

  /** Resume (if not done yet), disarm the timer and drop the record. Throws when resuming failed (record kept). */
  async release(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    try {
      await this.resume();
    } catch (err) {
      this.opts.log.error({ err }, 'resuming services failed; the quiesce record is kept and retried at the next agent start');
      throw asBoxbackError(err, 'BOXBACK_ERR_RESUME_FAILED');
    }
    this.released = true;
    if (held === this) held = undefined;
    await removeRecord(this.opts.config.stateDir);
  }
}

/** On start-up: resume services a crashed agent left quiesced (recorded on disk), then log it. */
export async function recoverQuiesce(config: AgentConfig, log: Logger): Promise<void> {
  await agentStore(config, log)
    .removeInterrupted(config.name, log)
    .catch((err) => log.warn({ err }, 'could not remove stale temporary backup directories'));
  let rec: QuiesceRecord | undefined;
  try {
    rec = await readQuiesceRecord(config.stateDir);
  } catch (err) {
    log.error({ err }, `cannot read ${recordFile(config.stateDir)}`);
    return;
  }
  if (!rec) return;
  const age = rec.startedAtMs ? Math.round((Date.now() - rec.startedAtMs) / 1000) : undefined;
  log.warn(
    { record: rec, ageSeconds: age },
    `found services quiesced (${rec.mode}) by job ${rec.jobId} of a previous agent (pid ${rec.pid}); resuming them`,
  );
  try {
    await exitQuiesce(config.plan, rec.mode, log, Array.isArray(rec.services) && rec.jobId !== 'unknown' ? rec.services : undefined);
  } catch (err) {
    log.error(
      { err },
      'resuming services left quiesced by a previous agent failed; check them now (the record is kept and retried at the next start)',
    );
    return;
  }
  await removeRecord(config.stateDir);
  log.warn({ jobId: rec.jobId, mode: rec.mode, services: rec.services }, 'services left quiesced by a previous agent were resumed');
}
