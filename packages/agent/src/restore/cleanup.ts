/**
 * Step CLEANUP: the plan's restore.cleanup steps, in order, after the swap and before the
 * services start (CircleCI: `rm -rf /opt/nomad`; a command that fails builds a live backup
 * left "Running").
 *   remove:  each path is renamed aside as a safety copy (recorded), not deleted, so a
 *            rollback can put it back; confirm deletes it with the other safety copies
 *   command: run with the step's timeout
 * onError: fail -> the restore rolls back; continue -> a warning in the result.
 */
import { promises as fsp } from 'node:fs';
import { BoxbackError, asBoxbackError, fsyncDir } from '@boxback/common';
import path from 'node:path';
import type { JobContext } from '../job.js';
import type { Plan } from '../plan.js';
import { describeFailure, runCommand } from '../run-command.js';
import { exists, saveRecord, sibling, type RestoreRecord } from './record.js';

type CleanupStep = Plan['restore']['cleanup'][number];

async function removeAside(ctx: JobContext, rec: RestoreRecord, target: string): Promise<boolean> {
  if (!(await exists(target))) return false;
  const safety = sibling.safety(target, ctx.jobId);
  rec.moves.push({ kind: 'remove', target, safety, state: 'planned' });
  await saveRecord(ctx.config.stateDir, rec);
  await fsp.rename(target, safety);
  await fsyncDir(path.dirname(target));
  rec.moves[rec.moves.length - 1].state = 'done';
  await saveRecord(ctx.config.stateDir, rec);
  return true;
}

async function runStep(ctx: JobContext, rec: RestoreRecord, step: CleanupStep): Promise<void> {
  if (step.remove) {
    for (const p of step.remove) {
      if (await removeAside(ctx, rec, path.resolve(p))) ctx.log.info({ step: step.name, path: p }, 'removed (kept as safety copy)');
    }
    return;
  }
  const timeoutMs = step.timeoutSeconds * 1000;
  const r = await runCommand(step.command!, { timeoutMs, signal: ctx.signal, env: { BOXBACK_JOB_ID: ctx.jobId } });
  // a cancel is never "continued" past: the restore rolls back
  if (ctx.signal.aborted) throw asBoxbackError(ctx.signal.reason, 'BOXBACK_ERR_CANCELLED');
  if (!r.ok)
    throw new BoxbackError(
      r.timedOut ? 'BOXBACK_ERR_TIMEOUT' : 'BOXBACK_ERR_RESTORE_FAILED',
      describeFailure(`clean-up step ${step.name}`, step.command!, r, timeoutMs),
    );
}

export async function runCleanup(ctx: JobContext, rec: RestoreRecord): Promise<string[]> {
  const steps = ctx.config.plan.restore.cleanup;
  const warnings: string[] = [];
  ctx.emit({ phase: 'CLEANUP', state: 'started', filesTotal: steps.length });
  let done = 0;
  for (const step of steps) {
    ctx.emit({ phase: 'CLEANUP', filesDone: done, filesTotal: steps.length, message: step.name });
    try {
      await runStep(ctx, rec, step);
    } catch (err) {
      if (step.onError !== 'continue' || ctx.signal.aborted) throw err;
      const msg = `clean-up step ${step.name} failed and was skipped (onError: continue): ${(err as Error).message}`;
      ctx.log.warn(msg);
      warnings.push(msg);
    }
    done++;
  }
  ctx.emit({ phase: 'CLEANUP', state: 'done', filesDone: done, filesTotal: steps.length });
  return warnings;
}
