/**
 * Step SWAP: put the staged copies in place, keeping what was there as the safety copy.
 *   directory: rename <target> -> <target>.boxback-safety-<job>, then staging -> <target>
 *   file:      hard-link <target> -> <target>.boxback-safety-<job>, then rename staging
 *              over <target> (a reader sees the old file or the new one, never neither)
 * Every move is written to the restore record (fsynced, one save for all) before the first
 * is made, so rollback knows what to put back even after a crash.
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

/** The move for one staged copy (nothing changed yet); refuses a target of the wrong type. */
async function planMove(ctx: JobContext, s: Staged): Promise<Move> {
  const had = await exists(s.target);
  if (had) {
    const st = await fsp.lstat(s.target);
    if (s.kind === 'dir' && !st.isDirectory())
      throw new BoxbackError('BOXBACK_ERR_RESTORE_FAILED', `${s.target} is not a directory; refusing to replace it`);
    if (s.kind === 'file' && !st.isFile())
      throw new BoxbackError('BOXBACK_ERR_RESTORE_FAILED', `${s.target} is not a regular file; refusing to replace it`);
  }
  return { kind: s.kind, target: s.target, safety: had ? sibling.safety(s.target, ctx.jobId) : null, staging: s.staging, state: 'planned' };
}

/** Make one recorded move: the old target aside as its safety copy, the staged copy into place. */
async function makeMove(move: Move): Promise<void> {
  if (move.safety) {
    if (move.kind === 'dir') {
      try {
        await fsp.rename(move.target, move.safety);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EBUSY' || code === 'EXDEV') {
          throw new BoxbackError(
            'BOXBACK_ERR_RESTORE_FAILED',
            `${move.target} cannot be renamed (${code}): is it a mount point? Restore needs to swap it whole`,
            {},
            { cause: err },
          );
        }
        throw err;
      }
    } else {
      await keepFileCopy(move.target, move.safety);
    }
  }
  await fsp.rename(move.staging!, move.target);
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

/**
 * Every move is planned (each target's type checked) and written to the record in ONE fsynced
 * save before the first is made; then the renames; then one fsync per parent directory. Rollback and crash recovery look at the disk, not at `state`, so a
 * move recorded but not made (or made but still marked planned) is undone correctly.
 */
export async function swapAll(ctx: JobContext, rec: RestoreRecord, staged: Staged[]): Promise<void> {
  ctx.emit({ phase: 'SWAP', state: 'started', filesTotal: staged.length });
  const moves: Move[] = [];
  for (const s of staged) moves.push(await planMove(ctx, s));
  rec.moves.push(...moves);
  await saveRecord(ctx.config.stateDir, rec);
  let done = 0;
  for (const m of moves) {
    await makeMove(m);
    done++;
    ctx.log.info({ target: m.target }, 'swapped in');
    ctx.emit({ phase: 'SWAP', filesDone: done, filesTotal: staged.length, message: m.target });
  }
  await Promise.all([...new Set(moves.map((m) => path.dirname(m.target)))].map((d) => fsyncDir(d)));
  // Marked done here, written by the record's next save (a later step's move, the completion, a
  // rollback): nothing reads `state` of these moves to decide anything, the disk tells.
  for (const m of moves) m.state = 'done';
  ctx.emit({ phase: 'SWAP', state: 'done', filesDone: done, filesTotal: staged.length });
}
