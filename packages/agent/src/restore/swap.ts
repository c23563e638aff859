/**
 * Step SWAP: put the staged copies in place, keeping what was there as the safety copy.
 *   directory: rename <target> -> <target>.boxback-safety-<job>, then staging -> <target>
 *   file:      hard-link <target> -> <target>.boxback-safety-<job>, then rename staging
 *              over <target> (a reader sees the old file or the new one, never neither)
 * Each move is written to the restore record (fsynced) before it is made, and marked
 * done after, so rollback knows what to put back even after a crash.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, fsyncDir } from '@boxback/common';
import type { JobContext } from '../job.js';
import { runCommand } from '../run-command.js';
import { exists, saveRecord, sibling, type Move, type RestoreRecord } from './record.js';

export interface Staged {
  kind: 'dir' | 'file';
  target: string;
  staging: string;
}

/** Keep a copy of a file under `safety` without a moment where `file` is missing. */
export async function keepFileCopy(file: string, safety: string): Promise<void> {
  try {
    await fsp.link(file, safety);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EPERM' && code !== 'EXDEV' && code !== 'EMLINK') throw err;
    await fsp.copyFile(file, safety, fsp.constants.COPYFILE_EXCL);
    const st = await fsp.stat(file);
    await fsp.chown(safety, st.uid, st.gid);
    await fsp.chmod(safety, st.mode & 0o7777);
  }
}

async function swapOne(ctx: JobContext, rec: RestoreRecord, s: Staged): Promise<void> {
  const had = await exists(s.target);
  if (had) {
    const st = await fsp.lstat(s.target);
    if (s.kind === 'dir' && !st.isDirectory())
      throw new BoxbackError('BOXBACK_ERR_RESTORE_FAILED', `${s.target} is not a directory; refusing to replace it`);
    if (s.kind === 'file' && !st.isFile())
      throw new BoxbackError('BOXBACK_ERR_RESTORE_FAILED', `${s.target} is not a regular file; refusing to replace it`);
  }
  const move: Move = {
    kind: s.kind,
    target: s.target,
    safety: had ? sibling.safety(s.target, ctx.jobId) : null,
    staging: s.staging,
    state: 'planned',
  };
  rec.moves.push(move);
  await saveRecord(ctx.config.stateDir, rec);
  if (move.safety) {
    if (s.kind === 'dir') {
      try {
        await fsp.rename(s.target, move.safety);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EBUSY' || code === 'EXDEV') {
          throw new BoxbackError(
            'BOXBACK_ERR_RESTORE_FAILED',
            `${s.target} cannot be renamed (${code}): is it a mount point? Restore needs to swap it whole`,
            {},
            { cause: err },
          );
        }
        throw err;
      }
    } else {
      await keepFileCopy(s.target, move.safety);
    }
  }
  await fsp.rename(s.staging, s.target);
  await fsyncDir(path.dirname(s.target));
  move.state = 'done';
  await saveRecord(ctx.config.stateDir, rec);
}

/** Flush the staged copies to disk before the swap: one syncfs per filesystem, not an fsync per file. */
export async function flushStaged(staged: Staged[], signal?: AbortSignal): Promise<void> {
  const seen = new Set<number>();
  for (const s of staged) {
    const dir = path.dirname(s.staging);
    const dev = (await fsp.stat(dir)).dev;
    if (seen.has(dev)) continue;
    seen.add(dev);
    const r = await runCommand(['sync', '-f', dir], { timeoutMs: 3_600_000, signal });
    if (!r.ok)
      throw new BoxbackError(
        'BOXBACK_ERR_RESTORE_FAILED',
        `flushing the staged copies under ${dir} to disk failed: ${r.outputTail || r.exitCode}`,
      );
  }
}

export async function swapAll(ctx: JobContext, rec: RestoreRecord, staged: Staged[]): Promise<void> {
  ctx.emit({ phase: 'SWAP', state: 'started', filesTotal: staged.length });
  let done = 0;
  for (const s of staged) {
    await swapOne(ctx, rec, s);
    done++;
    ctx.log.info({ target: s.target }, 'swapped in');
    ctx.emit({ phase: 'SWAP', filesDone: done, filesTotal: staged.length, message: s.target });
  }
  ctx.emit({ phase: 'SWAP', state: 'done', filesDone: done, filesTotal: staged.length });
}
