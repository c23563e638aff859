/**
 * The consistent copy: what the quiesce window covers, and nothing more.
 *
 *   for each dataset that needs the window (quiesce: true), at most 4 at a time, what
 *     directory dataset  cp --reflink=auto -a -T <path> <stage>/<name>
 *     file dataset       cp --reflink=auto -a <file>... <stage>/<name>/
 *   would do, done in this process (stage-copy.ts: no child process inside the window); a
 *   dataset holding a fifo, socket or device is copied by that cp command instead
 *   The stage lies inside the backup's temporary directory, i.e. on the store's filesystem:
 *   a reflink (btrfs, xfs) costs no data copy, and the archives are then written from the
 *   stage after the services are back.
 *   Every copy runs under the job's signal and the lease's: an abort or an expired lease kills cp.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, type Logger } from '@boxback/common';
import type { PlanDataset } from '../plan.js';
import { describeFailure, runCommand } from '../run-command.js';
import { UnsupportedEntry, copyInto } from './stage-copy.js';

export interface StagedDataset {
  /** Directory dataset: the staged directory (its content is the archive's top level). */
  dir?: string;
  /** File dataset: the staged files. */
  files?: string[];
}

export interface StageOptions {
  stageRoot: string;
  signal: AbortSignal;
  /** Milliseconds each copy may take at most (the lease's remaining time). */
  timeoutMs: number;
  log: Logger;
}

/** Throw the error a failed cp deserves: a full disk is BOXBACK_ERR_DISK_FULL. */
function cpError(argv: string[], r: Awaited<ReturnType<typeof runCommand>>, timeoutMs: number, name: string): BoxbackError {
  const msg = describeFailure(`copying dataset ${name}`, argv, r, timeoutMs);
  if (/No space left on device|Disk quota exceeded/i.test(r.outputTail)) return new BoxbackError('BOXBACK_ERR_DISK_FULL', msg);
  if (r.timedOut) return new BoxbackError('BOXBACK_ERR_TIMEOUT', msg);
  return new BoxbackError('BOXBACK_ERR_ARCHIVE_FAILED', msg);
}

/**
 * The in-process copy of `sources` into `dest` (a directory dataset: `sources` is its path
 * and `dest` its copy; files: each into `dest`/). False when an entry needs cp (then nothing
 * is left of the attempt).
 */
async function copyInProcess(
  d: Pick<PlanDataset, 'name'>,
  sources: { from: string; to: string }[],
  dest: string,
  o: StageOptions,
): Promise<boolean> {
  const timeout = AbortSignal.timeout(o.timeoutMs);
  const signal = AbortSignal.any([o.signal, timeout]);
  try {
    for (const s of sources) await copyInto(s.from, s.to, signal);
    return true;
  } catch (err) {
    await fsp.rm(dest, { recursive: true, force: true });
    if (err instanceof UnsupportedEntry) {
      o.log.info({ dataset: d.name, why: err.message }, `dataset ${d.name}: copied with cp -a`);
      return false;
    }
    o.signal.throwIfAborted();
    const e = err as NodeJS.ErrnoException;
    const msg = `copying dataset ${d.name} into the stage failed: ${e.message}`;
    if (timeout.aborted) throw new BoxbackError('BOXBACK_ERR_TIMEOUT', `copying dataset ${d.name} took longer than ${o.timeoutMs} ms`);
    if (e.code === 'ENOSPC' || e.code === 'EDQUOT') throw new BoxbackError('BOXBACK_ERR_DISK_FULL', msg);
    throw new BoxbackError('BOXBACK_ERR_ARCHIVE_FAILED', msg);
  }
}

/** Copy one dataset into the stage (`<stageRoot>/<name>`). */
export async function stageDataset(d: Pick<PlanDataset, 'name' | 'path' | 'files'>, o: StageOptions): Promise<StagedDataset> {
  await fsp.mkdir(o.stageRoot, { recursive: true });
  const dest = path.join(o.stageRoot, d.name);
  if (d.path) {
    await fsp.lstat(d.path).catch(() => {
      throw new BoxbackError('BOXBACK_ERR_ARCHIVE_FAILED', `dataset ${d.name}: ${d.path} does not exist`);
    });
    if (await copyInProcess(d, [{ from: d.path, to: dest }], dest, o)) return { dir: dest };
    const argv = ['cp', '--reflink=auto', '-a', '-T', d.path, dest];
    const r = await runCommand(argv, { timeoutMs: o.timeoutMs, signal: o.signal });
    if (!r.ok) {
      o.signal.throwIfAborted();
      throw cpError(argv, r, o.timeoutMs, d.name);
    }
    return { dir: dest };
  }
  await fsp.mkdir(dest, { recursive: true });
  const files = d.files!.map((f) => ({ from: f, to: path.join(dest, path.basename(f)) }));
  if (await copyInProcess(d, files, dest, o)) return { files: files.map((f) => f.to) };
  await fsp.mkdir(dest, { recursive: true });
  const argv = ['cp', '--reflink=auto', '-a', ...d.files!, `${dest}/`];
  const r = await runCommand(argv, { timeoutMs: o.timeoutMs, signal: o.signal });
  if (!r.ok) {
    o.signal.throwIfAborted();
    throw cpError(argv, r, o.timeoutMs, d.name);
  }
  return { files: d.files!.map((f) => path.join(dest, path.basename(f))) };
}
