/**
 * Restore a stored backup onto this box (issue 4). One file per step, run in this order:
 *
 *   VERIFY         read the manifest, map its parts onto this box's plan       targets.ts
 *   VERSION_CHECK  refuse a backup newer than the installed product (--force)  version-check.ts
 *                  and each dataset driver's preflight (a pg_dump from a newer
 *                  PostgreSQL major than the target server's; the dump read back) datasets/
 *                  A part the backup copied live-unverified is said here, and in the result
 *   -- dry run: VERIFY every checksum and zip CRC, report the steps and every host
 *      file's diff, change nothing, stop here --                               dry-run.ts
 *   VERIFY         every backup file against the manifest, every zip opens     verify.ts
 *                  (tree files: their sizes; their bytes as SYNC_TREES fetches them)
 *     beside it, writing only staging siblings (nothing swapped until VERIFY passed):
 *   EXTRACT        each driver's stage: zips into staging siblings, safely,   datasets/zip.ts
 *                  every CRC checked                                          extract.ts
 *   SYNC_TREES     the trees' listed entries (rsync --files-from) into staging trees.ts
 *   CHOWN          owners of trees (and uid/gid maps) on the staged copies   ownership.ts
 *                  (a zip's owner is set as it is extracted), then syncfs
 *   STOP           stop the services and make sure they are dead               stop.ts
 *   SWAP           staged copies into place, old ones kept as safety copies    swap.ts
 *   RESTORE_DATABASE  each engine driver's apply (a pg_dump into the plan's database:
 *                  the old one renamed aside as the safety database, a new one
 *                  loaded in one transaction; the move is recorded first)     datasets/
 *   HOST_FILES     source hostname/addresses -> this box's, in host files only host-files.ts
 *   CLEANUP        the plan's clean-up steps                                   cleanup.ts
 *   START          start the services                                          services.ts
 *   HEALTH_CHECK   poll the health check until its deadline                    health.ts
 *
 * Verification, staging, owners and everything before STOP happen while the services
 * still run, so the downtime is only STOP..HEALTH_CHECK. Where each part goes is decided
 * by THIS box's plan (targets.ts). Design note: docs/design/restore.md. Outcomes:
 *   - a failure before STOP: staging removed, the box untouched           -> Failed
 *   - STOP fails: services started again, the box untouched               -> Failed
 *   - a failure from SWAP on: ROLLBACK (rollback.ts) puts everything back -> RolledBack
 *   - the rollback fails too: safety copies kept, services started        -> Failed, ROLLBACK_FAILED
 * Every move is in <stateDir>/restores/<job>.json; safety-copies.ts lists, confirms and
 * prunes the copies, and rolls back a restore a crashed agent left half-done.
 */
import {
  BoxbackError,
  asBoxbackError,
  emptyResult,
  refFromPath,
  removeTree,
  type JobResult,
  type Manifest,
  type RestoreRequest,
} from '@boxback/common';
import type { JobContext } from '../job.js';
import { agentStore } from '../store.js';
import { BackupFiles, scratchDirFor } from './backup-files.js';
import type { RestoreEnv } from '../datasets/driver.js';
import { driverOf } from '../datasets/registry.js';
import { startServices } from '../services.js';
import { runCleanup } from './cleanup.js';
import { dryRunReport } from './dry-run.js';
import { checkHealth } from './health.js';
import { rewriteHostFiles } from './host-files.js';
import { applyOwnership, type ChownWork } from './ownership.js';
import { readManifestOutline } from './outline.js';
import { newRecord, saveRecord, sibling, type RestoreRecord } from './record.js';
import { rollback } from './rollback.js';
import { activeRestores } from './safety-copies.js';
import { stopAndConfirm } from './stop.js';
import { flushStaged, swapAll, type Staged } from './swap.js';
import { checkJobId, liveUnverified, mapTargets, type RestoreTargets } from './targets.js';
import { timed } from './timed.js';
import { syncTrees } from './trees.js';
import { verifyBackup } from './verify.js';
import { checkVersion } from './version-check.js';

interface Run {
  ctx: JobContext;
  step: string;
  warnings: string[];
}

async function step<T>(run: Run, name: string, fn: () => Promise<T>): Promise<T> {
  if (run.ctx.signal.aborted)
    throw asBoxbackError(
      run.ctx.signal.reason ?? new BoxbackError('BOXBACK_ERR_CANCELLED', 'the restore was cancelled'),
      'BOXBACK_ERR_CANCELLED',
    );
  run.step = name;
  try {
    return await fn();
  } catch (err) {
    run.ctx.emit({ phase: name, state: 'failed', message: (err as Error).message });
    throw err;
  }
}

/** The environment the dataset drivers see. */
function driverEnv(run: Run, force: boolean): RestoreEnv {
  const { ctx } = run;
  return {
    config: ctx.config,
    jobId: ctx.jobId,
    signal: ctx.signal,
    log: ctx.log,
    force,
    emit: (u) => ctx.emit({ phase: run.step, ...u }),
  };
}

/** EXTRACT: each part its driver stages (the zips) into staging siblings. */
async function extractAll(run: Run, rec: RestoreRecord, targets: RestoreTargets, staged: Staged[], chown: ChownWork[]): Promise<number> {
  const { ctx } = run;
  const bytesTotal = targets.datasets.reduce((s, d) => s + d.bytes, 0);
  const filesTotal = targets.datasets.reduce((s, d) => s + d.entries, 0);
  let bytesDone = 0;
  let filesDone = 0;
  let last = 0;
  const onProgress = (b: number, f: number) => {
    bytesDone += b;
    filesDone += f;
    if (Date.now() - last > 250) {
      last = Date.now();
      ctx.emit({ phase: 'EXTRACT', bytesDone, bytesTotal, filesDone, filesTotal });
    }
  };
  ctx.emit({ phase: 'EXTRACT', state: 'started', bytesTotal, filesTotal });
  for (const part of targets.parts) {
    const stage = driverOf(part).stage;
    if (!stage) continue;
    ctx.emit({ phase: 'EXTRACT', bytesDone, bytesTotal, filesDone, filesTotal, message: part.archive });
    const out = await timed(ctx, `extract_${part.archive}`, () => stage(part, { ...driverEnv(run, false), rec, onProgress }));
    staged.push(...out.staged);
    chown.push(...out.chown);
    run.warnings.push(...out.warnings);
  }
  ctx.emit({ phase: 'EXTRACT', state: 'done', bytesDone, bytesTotal, filesDone, filesTotal });
  return bytesDone;
}

/**
 * Everything before STOP: nothing on the box changes but staging siblings. EXTRACT and
 * SYNC_TREES run side by side (inflating is CPU, rsync mostly I/O); the first failure stops
 * the other and is the one reported. Every staging path is recorded before either starts
 * (runRestore), so neither saves the record meanwhile.
 */
async function stageAll(
  run: Run,
  rec: RestoreRecord,
  files: BackupFiles,
  manifest: Manifest,
  targets: RestoreTargets,
): Promise<{ staged: Staged[]; bytes: number }> {
  const staged: Staged[] = [];
  const chown: ChownWork[] = [];
  const stop = new AbortController();
  const side = (name: string): Run => ({
    ctx: { ...run.ctx, signal: AbortSignal.any([run.ctx.signal, stop.signal]) },
    step: name,
    warnings: run.warnings,
  });
  const lanes = [side('EXTRACT'), side('SYNC_TREES')];
  let firstFailed = -1;
  const results = await Promise.allSettled(
    [
      step(lanes[0], 'EXTRACT', () => extractAll(lanes[0], rec, targets, staged, chown)),
      step(lanes[1], 'SYNC_TREES', () =>
        syncTrees(lanes[1].ctx, files.store, files.ref, targets.trees, (t) => sibling.staging(t.target, run.ctx.jobId)),
      ),
    ].map((p, i) =>
      p.catch((err: unknown) => {
        if (!stop.signal.aborted) firstFailed = i;
        stop.abort(err);
        throw err;
      }),
    ),
  );
  // Report the lane that failed first (its error stopped the other one, which may rethrow it).
  const rejected = results.map((x, i) => ({ x, i })).filter(({ x }) => x.status === 'rejected');
  if (rejected.length) {
    const first = rejected.find(({ i }) => i === firstFailed) ?? rejected[0];
    run.step = lanes[first.i].step;
    throw (first.x as PromiseRejectedResult).reason;
  }
  let bytes = (results[0] as PromiseFulfilledResult<number>).value;
  for (const t of targets.trees) {
    const staging = sibling.staging(t.target, run.ctx.jobId);
    staged.push({ kind: 'dir', target: t.target, staging });
    chown.push({ path: staging, owner: t.owner, mapIds: true, label: t.name });
    bytes += t.bytes;
  }
  await step(run, 'CHOWN', async () => {
    await timed(run.ctx, 'chown', () => applyOwnership(run.ctx, chown));
    await timed(run.ctx, 'flush', () => flushStaged(staged, run.ctx.signal));
  });
  return { staged, bytes };
}

/**
 * VERIFY beside EXTRACT, SYNC_TREES and CHOWN: both only read the backup and write staging
 * siblings, so the box is untouched until both are done and the verification passed. A
 * failed verification stops the staging, and is what the result reports. The tree files a
 * store checks as it fetches them (local: each staged copy hashed; s3: each download) are
 * only sized by VERIFY; a mismatch found by SYNC_TREES is reported as VERIFY's failure.
 */
async function verifyAndStage(
  run: Run,
  rec: RestoreRecord,
  files: BackupFiles,
  manifest: Manifest,
  targets: RestoreTargets,
): Promise<{ staged: Staged[]; bytes: number }> {
  const { ctx } = run;
  const stopStaging = new AbortController();
  const stageRun: Run = {
    ctx: { ...ctx, signal: AbortSignal.any([ctx.signal, stopStaging.signal]) },
    step: 'EXTRACT',
    warnings: run.warnings,
  };
  const [verified, staging] = await Promise.allSettled([
    timed(ctx, 'verify', () => verifyBackup(ctx, files, manifest, targets, false)).catch((err: unknown) => {
      stopStaging.abort(err);
      ctx.emit({ phase: 'VERIFY', state: 'failed', message: (err as Error).message });
      throw err;
    }),
    stageAll(stageRun, rec, files, manifest, targets),
  ]);
  if (verified.status === 'rejected') {
    run.step = 'VERIFY';
    throw verified.reason;
  }
  if (staging.status === 'rejected') {
    // A fetched tree file that differs from the manifest (the local store hashes the copies
    // it makes, VERIFY only their sizes): the verification's failure. (A zip entry's CRC is
    // EXTRACT's, as the docs' outcomes table says.)
    const verifyFailed =
      stageRun.step === 'SYNC_TREES' && staging.reason instanceof BoxbackError && staging.reason.code === 'BOXBACK_ERR_VERIFY_FAILED';
    run.step = verifyFailed ? 'VERIFY' : stageRun.step;
    if (verifyFailed) ctx.emit({ phase: 'VERIFY', state: 'failed', message: (staging.reason as Error).message });
    throw staging.reason;
  }
  return staging.value;
}

/** The parts whose driver loads them into an engine after SWAP. */
const applied = (targets: RestoreTargets) => targets.parts.filter((p) => !!driverOf(p).apply);

/** RESTORE_DATABASE: each engine part loaded by its driver, every move recorded before it is made. */
async function restoreDatabases(run: Run, rec: RestoreRecord, targets: RestoreTargets, force: boolean): Promise<void> {
  const { ctx } = run;
  const parts = applied(targets);
  ctx.emit({ phase: 'RESTORE_DATABASE', state: 'started', filesTotal: parts.length });
  let done = 0;
  for (const part of parts) {
    const d = ctx.config.plan.datasets[part.index];
    const warnings = await driverOf(part).apply!(part, d, {
      ...driverEnv(run, force),
      rec,
      save: () => saveRecord(ctx.config.stateDir, rec),
      progress: (m) => ctx.emit({ phase: 'RESTORE_DATABASE', filesDone: done, filesTotal: parts.length, message: m }),
    });
    run.warnings.push(...warnings);
    done++;
  }
  ctx.emit({ phase: 'RESTORE_DATABASE', state: 'done', filesDone: done, filesTotal: parts.length });
}

/** VERSION_CHECK, still before STOP: each driver reaches its engine and reads its archive back. */
async function preflightAll(run: Run, targets: RestoreTargets, force: boolean): Promise<void> {
  for (const part of targets.parts) {
    const preflight = driverOf(part).preflight;
    if (preflight) run.warnings.push(...(await preflight(part, run.ctx.config.plan.datasets[part.index], driverEnv(run, force))));
  }
}

/** SWAP .. HEALTH_CHECK, with the services stopped. */
async function applyAll(
  run: Run,
  rec: RestoreRecord,
  manifest: Manifest,
  targets: RestoreTargets,
  staged: Staged[],
  force: boolean,
): Promise<void> {
  const { ctx } = run;
  await step(run, 'SWAP', () => timed(ctx, 'swap', () => swapAll(ctx, rec, staged)));
  if (applied(targets).length) await step(run, 'RESTORE_DATABASE', () => restoreDatabases(run, rec, targets, force));
  await step(run, 'HOST_FILES', async () => {
    const r = await rewriteHostFiles(ctx, rec, manifest);
    run.warnings.push(...r.warnings);
  });
  await step(run, 'CLEANUP', async () => run.warnings.push(...(await runCleanup(ctx, rec))));
  await step(run, 'START', async () => {
    ctx.emit({ phase: 'START', state: 'started', message: ctx.config.plan.services.map((s) => s.name).join(', ') });
    await startServices(ctx.config.plan.services, ctx.log);
    ctx.emit({ phase: 'START', state: 'done' });
  });
  await step(run, 'HEALTH_CHECK', () => checkHealth(ctx));
}

async function removeStaging(rec: RestoreRecord): Promise<void> {
  for (const p of rec.staging) await removeTree(p).catch(() => undefined);
}

/** Turn a failure into the result: roll back when the box was changed, else clean up. */
async function finishFailed(
  run: Run,
  rec: RestoreRecord | undefined,
  phase: 'before-stop' | 'stopping' | 'after-stop',
  err: unknown,
  result: JobResult,
): Promise<void> {
  const { ctx } = run;
  const be = asBoxbackError(err, 'BOXBACK_ERR_RESTORE_FAILED');
  result.status = 'Failed';
  result.failedStep = run.step;
  result.errorCode = be.code;
  result.errorMessage = be.message;
  ctx.log.error({ step: run.step, code: be.code, err: be.message }, 'restore step failed');
  if (phase === 'after-stop' && rec) {
    try {
      run.warnings.push(...(await rollback(ctx, rec, run.step)));
      result.status = 'RolledBack';
      result.errorMessage = `${run.step} failed: ${be.message}; the previous data was put back and the services started`;
    } catch (rbErr) {
      const rb = asBoxbackError(rbErr, 'BOXBACK_ERR_ROLLBACK_FAILED');
      result.errorCode = rb.code;
      result.errorMessage = `${run.step} failed: ${be.message}; then the rollback failed: ${rb.message}`;
      ctx.log.error({ err: rb.message }, 'ROLLBACK FAILED: safety copies kept, check the box');
    }
    return;
  }
  if (phase === 'stopping') {
    await startServices(ctx.config.plan.services, ctx.log).catch((e: unknown) => {
      result.warnings.push(`services did not start again after the failed stop: ${(e as Error).message}`);
    });
  }
  if (rec) {
    await removeStaging(rec);
    rec.status = 'failed';
    rec.failedStep = run.step;
    rec.error = be.message;
    rec.staging = [];
    await saveRecord(ctx.config.stateDir, rec).catch(() => undefined);
  }
}

export async function runRestore(ctx: JobContext, req: RestoreRequest): Promise<JobResult> {
  const started = Date.now();
  const result: JobResult = { ...emptyResult(ctx.jobId), backupPath: req.backupPath, backupId: req.backupId };
  const run: Run = { ctx, step: 'VERIFY', warnings: [] };
  let rec: RestoreRecord | undefined;
  let files: BackupFiles | undefined;
  let phase: 'before-stop' | 'stopping' | 'after-stop' = 'before-stop';
  activeRestores.add(ctx.jobId);
  try {
    checkJobId(ctx.jobId);
    const store = agentStore(ctx.config, ctx.log);
    const ref = refFromPath(req.backupPath);
    const { manifest, targets } = await step(run, 'VERIFY', async () => {
      ctx.emit({ phase: 'VERIFY', state: 'started', message: 'reading the manifest' });
      // Its top-level files only: the trees' entries are read again where needed (outline.ts).
      const m = await readManifestOutline(store, ref);
      files = new BackupFiles(store, ref, m, scratchDirFor(ctx.config, ctx.jobId), ctx.signal);
      const f = files;
      return { manifest: m, targets: await mapTargets(m, ctx.config.plan, f) };
    });
    const bf = files!;
    result.backupId = manifest.id;
    run.warnings.push(...targets.warnings);
    for (const w of liveUnverified(targets.parts)) ctx.emit({ phase: 'VERIFY', message: `warning: ${w}` });
    const version = await step(run, 'VERSION_CHECK', () => checkVersion(ctx, store, ref, manifest, req.force));
    run.warnings.push(...version.warnings);
    if (req.dryRun) {
      const verified = await step(run, 'VERIFY', () => verifyBackup(ctx, bf, manifest, targets, true));
      result.dryRunReport = await dryRunReport(ctx, manifest, targets, verified, version, req.force);
      result.status = 'Completed';
      return result;
    }
    // Still VERSION_CHECK, still before STOP: nothing has changed yet.
    await step(run, 'VERSION_CHECK', () => preflightAll(run, targets, req.force));
    rec = newRecord(ctx.jobId, manifest.id, req.backupPath);
    // Every staging sibling the job may make, recorded in one save before any is made:
    // downloads (a remote store) beside the targets, each tree's and each extracted part's.
    // (A save per part, two fsyncs each, waited 0.1-0.6 s apiece behind SYNC_TREES' writes.)
    rec.staging.push(bf.scratchDir, ...targets.trees.map((t) => sibling.staging(t.target, ctx.jobId)));
    for (const part of targets.parts) rec.staging.push(...(driverOf(part).stagingPaths?.(part, ctx.jobId) ?? []));
    await saveRecord(ctx.config.stateDir, rec);
    const { staged, bytes } = await verifyAndStage(run, rec, bf, manifest, targets);
    // EXTRACT is done: only the dumps RESTORE_DATABASE loads are still needed on the box.
    await bf.releaseExcept(applied(targets).map((p) => p.archive));
    result.sizeBytes = bytes + applied(targets).reduce((s, d) => s + d.bytes, 0);
    phase = 'stopping';
    await step(run, 'STOP', () => stopAndConfirm(ctx));
    phase = 'after-stop';
    // The trees are about to be swapped: their watchers stop here and scan the new trees once
    // the restore is over (the finally below), not beside its last steps (agent-memory.md).
    ctx.journals?.hold(`restore of ${manifest.id} (job ${ctx.jobId}) is replacing the trees`);
    await applyAll(run, rec, manifest, targets, staged, req.force);
    rec.status = 'completed';
    await saveRecord(ctx.config.stateDir, rec);
    result.status = 'Completed';
    ctx.log.info({ backupId: manifest.id, warnings: run.warnings.length }, 'restore completed');
  } catch (err) {
    await finishFailed(run, rec, phase, err, result);
  } finally {
    if (phase === 'after-stop') {
      // The trees were replaced (or put back by the rollback) under the watchers: what the
      // journals recorded no longer describes them. The next backup of each makes a full pass.
      ctx.journals?.invalidateAll(`restore of ${result.backupId || req.backupPath} (job ${ctx.jobId}) replaced the trees`);
    }
    // Downloaded archives and dumps are needed until RESTORE_DATABASE (and a rollback) is done.
    await files?.releaseAll();
    activeRestores.delete(ctx.jobId);
    result.warnings = [...run.warnings, ...result.warnings];
    result.durationMs = Date.now() - started;
  }
  return result;
}
