/**
 * Safety copies: what a restore moved aside, kept until `boxback restore confirm ID`
 * (confirmRestore) or until older than the plan's restore.safetyCopyMaxAgeHours
 * (pruneSafetyCopies, run at agent start). Listed for `boxback status` from the restore
 * records. At agent start, pruneSafetyCopies also rolls back any restore a crashed agent
 * left in progress (its record says exactly what was moved), then starts the services.
 * A restored database's safety copy is a database (<db>_boxback_safety_<job>): listed as
 * its driver names it (postgresql://host:port/<name>), dropped on confirm and prune.
 */
import { removeTree, type Logger, type SafetyCopyInfo } from '@boxback/common';
import type { AgentConfig } from '../config.js';
import { runCommand } from '../run-command.js';
import { startServices, stopServices } from '../services.js';
import { exists, readRecords, saveRecord, type RestoreRecord } from './record.js';
import { driverOf, planDataset } from '../datasets/registry.js';
import { undoMoves } from './rollback.js';

/** Restore jobs running in this process: their records are not to be touched. */
export const activeRestores = new Set<string>();

async function existingSafetyPaths(rec: RestoreRecord): Promise<string[]> {
  const out: string[] = [];
  for (const m of rec.moves) if (m.kind !== 'database' && m.safety && (await exists(m.safety))) out.push(m.safety);
  return out;
}

/**
 * Safety databases a completed restore (or a failed rollback) left (a rolled-back one renamed
 * them back). Whether they still exist is the server's to say: the drop is "if exists".
 */
function safetyDatabases(config: AgentConfig, rec: RestoreRecord): Array<{ label: string; drop: (log: Logger) => Promise<void> }> {
  if (rec.status !== 'completed' && rec.status !== 'rollback-failed') return [];
  return rec.moves
    .filter((m) => m.kind === 'database' && m.safety && m.state === 'done')
    .map((m) => {
      const safety = m.safety!;
      let label = `database ${safety}`;
      try {
        const { d, index } = planDataset(config.plan, m.dataset);
        label = driverOf(d).safetyLabel?.(m, d, index) ?? label;
      } catch {
        /* the plan no longer names it: listed by name only */
      }
      const drop = async (log: Logger) => {
        const { d, index } = planDataset(config.plan, m.dataset);
        await driverOf(d).dropSafety?.(m, d, index, log);
      };
      return { label, drop };
    });
}

async function sizeOf(paths: string[]): Promise<number> {
  if (paths.length === 0) return 0;
  const r = await runCommand(['du', '-s', '-b', '-c', '--', ...paths], { timeoutMs: 120_000 });
  const total = /^(\d+)\s+total$/m.exec(r.outputTail);
  return total ? Number(total[1]) : 0;
}

export async function listSafetyCopies(config: AgentConfig): Promise<SafetyCopyInfo[]> {
  const out: SafetyCopyInfo[] = [];
  for (const rec of await readRecords(config.stateDir)) {
    if (rec.status === 'confirmed' || activeRestores.has(rec.jobId)) continue;
    const paths = await existingSafetyPaths(rec);
    const dbs = safetyDatabases(config, rec).map((d) => d.label);
    if (paths.length === 0 && dbs.length === 0) continue;
    if (rec.sizeBytes === undefined) {
      rec.sizeBytes = await sizeOf(paths);
      await saveRecord(config.stateDir, rec).catch(() => undefined);
    }
    out.push({
      jobId: rec.jobId,
      backupId: rec.backupId,
      createdAtMs: rec.createdAtMs,
      sizeBytes: rec.sizeBytes,
      paths: [...paths, ...dbs],
    });
  }
  return out;
}

async function dropCopies(config: AgentConfig, rec: RestoreRecord, log: Logger): Promise<{ removed: number; freedBytes: number }> {
  const paths = await existingSafetyPaths(rec);
  const freedBytes = rec.sizeBytes ?? (await sizeOf(paths));
  for (const p of paths) await removeTree(p);
  const dbs = safetyDatabases(config, rec);
  for (const d of dbs) await d.drop(log);
  rec.status = 'confirmed';
  rec.sizeBytes = 0;
  await saveRecord(config.stateDir, rec);
  log.info({ jobId: rec.jobId, removed: paths.length + dbs.length, freedBytes }, 'safety copies removed');
  return { removed: paths.length + dbs.length, freedBytes };
}

/** Drop the safety copies of one restore job ('' = all). A restore still running is left alone. */
export async function confirmRestore(config: AgentConfig, jobId: string, log: Logger): Promise<{ removed: number; freedBytes: number }> {
  let removed = 0;
  let freedBytes = 0;
  for (const rec of await readRecords(config.stateDir)) {
    if (jobId && rec.jobId !== jobId) continue;
    if (rec.status === 'confirmed' || rec.status === 'in-progress' || activeRestores.has(rec.jobId)) continue;
    const r = await dropCopies(config, rec, log);
    removed += r.removed;
    freedBytes += r.freedBytes;
  }
  return { removed, freedBytes };
}

/** Roll back restores a crashed agent left half-done (not ones running in this process). */
export async function recoverInterruptedRestores(config: AgentConfig, log: Logger): Promise<number> {
  let n = 0;
  for (const rec of await readRecords(config.stateDir)) {
    if (rec.status !== 'in-progress' || activeRestores.has(rec.jobId)) continue;
    n++;
    log.warn({ jobId: rec.jobId, moves: rec.moves.length }, 'a restore was interrupted; rolling it back');
    rec.failedStep ??= 'INTERRUPTED';
    try {
      if (rec.moves.length) await stopServices(config.plan.services, log);
      await undoMoves(config, rec, log);
    } catch (err) {
      log.error({ err, jobId: rec.jobId }, 'rolling back the interrupted restore failed; safety copies kept');
    }
    await startServices(config.plan.services, log).catch((err: unknown) =>
      log.error({ err }, 'services did not start after recovering a restore'),
    );
  }
  return n;
}

/** Remove safety copies older than the plan's age limit (and recover interrupted restores first). */
export async function pruneSafetyCopies(config: AgentConfig, log: Logger): Promise<void> {
  await recoverInterruptedRestores(config, log);
  const maxAgeMs = config.plan.restore.safetyCopyMaxAgeHours * 3_600_000;
  for (const rec of await readRecords(config.stateDir)) {
    if (rec.status !== 'completed' || activeRestores.has(rec.jobId)) continue;
    if (Date.now() - rec.createdAtMs < maxAgeMs) continue;
    log.info({ jobId: rec.jobId, ageHours: Math.round((Date.now() - rec.createdAtMs) / 3_600_000) }, 'pruning old safety copies');
    await dropCopies(config, rec, log);
  }
}
