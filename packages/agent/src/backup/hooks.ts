/**
 * Pre- and post-backup hooks, GoCD-compatible.
 *
 *   pre-backup   each command in order, before anything is written; onError fail stops the
 *                backup (the post hook still runs, with status failure); continue records a
 *                warning (the backup ends PartiallyFailed)
 *   post-backup  each command in order, on success AND on failure, with GoCD's variables:
 *                GOCD_BACKUP_TIMESTAMP (ISO-8601, e.g. 2018-08-29T14:00:35Z),
 *                GOCD_BACKUP_STATUS (success|failure), GOCD_BACKUP_BASE_DIR and
 *                GOCD_BACKUP_PATH (on success), GOCD_BACKUP_INITIATED_VIA=TIMER (scheduled)
 *                or GOCD_BACKUP_INITIATED_BY_USER; plus BOXBACK_* variables.
 */
import { BoxbackError, type Logger } from '@boxback/common';
import type { PlanCommandStep } from '../plan.js';
import { describeFailure, runCommand } from '../run-command.js';

export interface HookOutcome {
  warnings: string[];
  /** Set when a hook with onError fail failed. */
  failure?: BoxbackError;
}

export interface GocdEnvInput {
  at: Date;
  success: boolean;
  baseDir: string;
  backupPath?: string;
  initiatedBy: string;
  initiatedVia: string;
  backupId: string;
  host: string;
  jobId: string;
  error?: string;
}

/** The environment GoCD gives its post-backup script, plus boxback's own. */
export function gocdEnv(i: GocdEnvInput): Record<string, string> {
  const env: Record<string, string> = {
    GOCD_BACKUP_TIMESTAMP: i.at.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    GOCD_BACKUP_STATUS: i.success ? 'success' : 'failure',
    BOXBACK_BACKUP_ID: i.backupId,
    BOXBACK_HOST: i.host,
    BOXBACK_JOB_ID: i.jobId,
    BOXBACK_INITIATED_VIA: i.initiatedVia,
  };
  if (i.success) {
    env.GOCD_BACKUP_BASE_DIR = i.baseDir;
    if (i.backupPath) env.GOCD_BACKUP_PATH = i.backupPath;
  }
  if (i.initiatedVia === 'schedule' || i.initiatedVia === 'timer') env.GOCD_BACKUP_INITIATED_VIA = 'TIMER';
  else env.GOCD_BACKUP_INITIATED_BY_USER = i.initiatedBy || 'unknown';
  if (i.error) env.BOXBACK_BACKUP_ERROR = i.error;
  return env;
}

/**
 * Run hooks in order. A failing `fail` hook stops the list and is returned as `failure`
 * (pre hooks: the caller throws it); a failing `continue` hook adds a warning.
 */
export async function runHooks(
  which: 'pre-backup' | 'post-backup',
  steps: PlanCommandStep[],
  opts: { env?: Record<string, string>; signal?: AbortSignal; log: Logger; onStep?: (i: number, argv: string[]) => void },
): Promise<HookOutcome> {
  const out: HookOutcome = { warnings: [] };
  for (const [i, step] of steps.entries()) {
    opts.onStep?.(i, step.command);
    const timeoutMs = step.timeoutSeconds * 1000;
    const r = await runCommand(step.command, { timeoutMs, env: { ...opts.env, ...step.env }, signal: opts.signal });
    if (r.ok) {
      opts.log.info({ hook: which, command: step.command, durationMs: r.durationMs }, `${which} hook done`);
      continue;
    }
    const msg = describeFailure(`${which} hook`, step.command, r, timeoutMs);
    if (step.onError === 'continue') {
      opts.log.warn({ hook: which, msg }, `${which} hook failed; continuing (onError: continue)`);
      out.warnings.push(msg);
      continue;
    }
    opts.log.error({ hook: which, msg }, `${which} hook failed`);
    out.failure = new BoxbackError(r.timedOut ? 'BOXBACK_ERR_TIMEOUT' : 'BOXBACK_ERR_HOOK_FAILED', msg);
    break;
  }
  return out;
}
