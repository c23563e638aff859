/**
 * Step ROLLBACK, when any step after the first move fails:
 *   1. stop the services (they may be running on the restored data); if they will not
 *      stop, nothing is moved back (never swap under a live process)
 *   2. undo the record's moves in reverse: host files, clean-up removals, restored
 *      databases (each by its dataset driver: the safety database renamed back), then the swapped files and
 *      directories get their safety copies back; the restored data moved aside is
 *      deleted (it is still in the backup)
 *   3. start the services, whatever happened above (services are never left stopped),
 *      and check their health once more (a warning if the old data is not healthy either)
 * Each undo looks at the disk, not at what the record hoped, so it is safe to run again
 * after a crash half-way. If any undo fails: BOXBACK_ERR_ROLLBACK_FAILED, and every
 * safety copy is kept for a person to sort out (boxback status lists them).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, fsyncDir, removeTree, type Logger } from '@boxback/common';
import type { AgentConfig } from '../config.js';
import type { JobContext } from '../job.js';
import { driverOf, planDataset } from '../datasets/registry.js';
import { startServices, stopServices } from '../services.js';
import { checkHealth } from './health.js';
import { exists, saveRecord, sibling, type Move, type RestoreRecord } from './record.js';

/** A move apply made (a database): its driver undoes it. */
async function undoDatabase(config: AgentConfig, m: Move, log: Logger): Promise<void> {
  const { d, index } = planDataset(config.plan, m.dataset);
  await driverOf(d).undo?.(m, d, index, log);
}

async function undoMove(config: AgentConfig, m: Move, jobId: string, log: Logger): Promise<void> {
  if (m.kind === 'database') return undoDatabase(config, m, log);
  if (m.staging && (await exists(m.staging))) await removeTree(m.staging);
  if (m.safety === null) {
    // Nothing was there before: remove what the restore put there.
    if (await exists(m.target)) await removeTree(m.target);
    return;
  }
  if (!(await exists(m.safety))) return; // never moved, or already put back
  if (m.kind === 'file' || m.kind === 'hostfile') {
    await fsp.rename(m.safety, m.target); // atomic replace of the new file by the old one
  } else {
    const rejected = sibling.rejected(m.target, jobId);
    if (await exists(m.target)) await fsp.rename(m.target, rejected);
    await fsp.rename(m.safety, m.target);
    await removeTree(rejected);
  }
  await fsyncDir(path.dirname(m.target));
}

/** Undo every move of a record, last first. Throws a ROLLBACK_FAILED listing what could not be undone. */
export async function undoMoves(
  config: AgentConfig,
  rec: RestoreRecord,
  log: Logger,
  onMove?: (done: number, total: number, m: Move) => void,
): Promise<void> {
  const problems: string[] = [];
  const moves = [...rec.moves].reverse();
  let done = 0;
  for (const m of moves) {
    try {
      await undoMove(config, m, rec.jobId, log);
      log.info({ target: m.target, kind: m.kind }, 'put back');
    } catch (err) {
      problems.push(`${m.target}: ${(err as Error).message}`);
      log.error({ err, target: m.target }, 'could not put back');
    }
    done++;
    onMove?.(done, moves.length, m);
  }
  for (const p of rec.staging) {
    await removeTree(p).catch((err: Error) => problems.push(`${p}: ${err.message}`));
  }
  if (problems.length) {
    rec.status = 'rollback-failed';
    rec.error = problems.join('; ');
    await saveRecord(config.stateDir, rec);
    throw new BoxbackError(
      'BOXBACK_ERR_ROLLBACK_FAILED',
      `rollback could not put everything back, safety copies kept: ${problems.join('; ')}`,
      { problems },
    );
  }
  rec.status = 'rolled-back';
  await saveRecord(config.stateDir, rec);
}

/**
 * Roll a failed restore back and start the services. Throws BOXBACK_ERR_ROLLBACK_FAILED
 * when the box could not be put back as it was (services are still started).
 */
export async function rollback(ctx: JobContext, rec: RestoreRecord, failedStep: string): Promise<string[]> {
  const log = ctx.log;
  rec.failedStep = failedStep;
  ctx.emit({ phase: 'ROLLBACK', state: 'started', filesTotal: rec.moves.length, message: `after ${failedStep} failed` });
  let failure: unknown;
  try {
    if (rec.moves.length > 0) {
      await stopServices(ctx.config.plan.services, log).catch((err: unknown) => {
        throw new BoxbackError(
          'BOXBACK_ERR_ROLLBACK_FAILED',
          `services would not stop for the rollback, nothing was put back: ${(err as Error).message}`,
        );
      });
    }
    await undoMoves(ctx.config, rec, log, (done, total, m) =>
      ctx.emit({ phase: 'ROLLBACK', filesDone: done, filesTotal: total, message: m.target }),
    );
  } catch (err) {
    failure = err;
    if (rec.status !== 'rollback-failed') {
      rec.status = 'rollback-failed';
      rec.error = (err as Error).message;
      await saveRecord(ctx.config.stateDir, rec).catch(() => undefined);
    }
  }
  try {
    await startServices(ctx.config.plan.services, log);
  } catch (err) {
    failure ??= new BoxbackError(
      'BOXBACK_ERR_ROLLBACK_FAILED',
      `the old data is back but the services did not start: ${(err as Error).message}`,
    );
  }
  const warnings: string[] = [];
  if (!failure) {
    // Best effort: say so when the old data does not come up healthy either.
    await checkHealth(ctx, 'ROLLBACK').catch((err: unknown) => {
      warnings.push(`after the rollback the services are running but not healthy: ${(err as Error).message}`);
    });
  }
  ctx.emit({ phase: 'ROLLBACK', state: failure ? 'failed' : 'done', filesDone: rec.moves.length, filesTotal: rec.moves.length });
  if (!failure) return warnings;
  throw failure instanceof BoxbackError && failure.code === 'BOXBACK_ERR_ROLLBACK_FAILED'
    ? failure
    : new BoxbackError('BOXBACK_ERR_ROLLBACK_FAILED', (failure as Error).message);
}
