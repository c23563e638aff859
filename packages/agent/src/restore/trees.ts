/**
 * Step SYNC_TREES: each synced tree (artifacts, test reports) is copied back from the
 * backup with the real rsync into a staging sibling of its target:
 *   rsync -a --numeric-ids <backup>/<dir>/ <target>.boxback-staging-<job>/
 * A fresh staging directory, so the target ends up holding exactly the backup. Numeric
 * ids are kept as the backup has them; the CHOWN step maps or replaces them. The copy is
 * real (no hard links into the store), so the restored box can never alter a backup.
 */
import { BoxbackError } from '@boxback/common';
import type { JobContext } from '../job.js';
import { describeFailure, runCommand } from '../run-command.js';
import type { TreeTarget } from './targets.js';

export async function syncTree(ctx: JobContext, t: TreeTarget, staging: string): Promise<void> {
  const argv = ['rsync', '-a', '--numeric-ids', `${t.backupDir}/`, `${staging}/`];
  const timeoutMs = 24 * 3_600_000;
  const r = await runCommand(argv, { timeoutMs, signal: ctx.signal });
  if (!r.ok) {
    throw new BoxbackError(
      r.timedOut ? 'BOXBACK_ERR_TIMEOUT' : 'BOXBACK_ERR_SYNC_FAILED',
      describeFailure(`restoring tree ${t.name}`, argv, r, timeoutMs),
    );
  }
}

export async function syncTrees(ctx: JobContext, trees: TreeTarget[], stagingOf: (t: TreeTarget) => string): Promise<void> {
  const bytesTotal = trees.reduce((s, t) => s + t.bytes, 0);
  const filesTotal = trees.reduce((s, t) => s + t.files, 0);
  let bytesDone = 0;
  let filesDone = 0;
  ctx.emit({ phase: 'SYNC_TREES', state: 'started', bytesTotal, filesTotal });
  for (const t of trees) {
    ctx.emit({ phase: 'SYNC_TREES', bytesDone, bytesTotal, filesDone, filesTotal, message: `${t.name} -> ${t.target}` });
    await syncTree(ctx, t, stagingOf(t));
    bytesDone += t.bytes;
    filesDone += t.files;
  }
  ctx.emit({ phase: 'SYNC_TREES', state: 'done', bytesDone, bytesTotal, filesDone, filesTotal });
}
