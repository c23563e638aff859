/**
 * Step SYNC_TREES: each synced tree (artifacts, test reports) is written from the store
 * into a fresh staging sibling of its target with `store.fetchTree`, so the target ends up
 * holding exactly the backup. The trees are fetched `store.treesAtOnce` at a time (local: side
 * by side, a cold copy of small files waits on the disk's latency and the other tree's reads
 * fill its gaps); the first failure stops the others and is the one thrown.
 *   local  cp of the stored tree when it holds exactly the manifest's entries, else
 *          rsync -a --numeric-ids --files-from=<the manifest's entries> <backup>/<dir>/
 *          <target>.boxback-staging-<job>/ (a real copy, no hard links into the store: the
 *          restored box can never alter a backup; a file the manifest does not list is not copied);
 *          then every copied file hashed against the manifest (VERIFY only looked at the stored
 *          files' sizes: each is read from disk once); a mismatch is VERIFY_FAILED, reported
 *          as the VERIFY step's failure
 *   s3     each file downloaded and checked against the manifest's SHA-256, symlinks,
 *          modes and mtimes as stored
 * Numeric ids are kept as the backup has them; the CHOWN step maps or replaces them.
 */
import { BoxbackError, asBoxbackError, limiter, type BackupRef, type BackupStore } from '@boxback/common';
import type { JobContext } from '../job.js';
import type { TreeTarget } from './targets.js';
import { timed } from './timed.js';

export async function syncTrees(
  ctx: JobContext,
  store: BackupStore,
  ref: BackupRef,
  trees: TreeTarget[],
  stagingOf: (t: TreeTarget) => string,
): Promise<void> {
  const bytesTotal = trees.reduce((s, t) => s + t.bytes, 0);
  const filesTotal = trees.reduce((s, t) => s + t.files, 0);
  let bytesDone = 0;
  let filesDone = 0;
  ctx.emit({ phase: 'SYNC_TREES', state: 'started', bytesTotal, filesTotal });
  // store.treesAtOnce at a time; the first failure stops the others and is the one thrown.
  const stop = new AbortController();
  const signal = AbortSignal.any([ctx.signal, stop.signal]);
  let first: unknown;
  const results = await Promise.allSettled(
    gated(trees, store.treesAtOnce ?? 1, async (t) => {
      if (stop.signal.aborted) throw first;
      ctx.emit({ phase: 'SYNC_TREES', bytesDone, bytesTotal, filesDone, filesTotal, message: `${t.name} -> ${t.target}` });
      try {
        await timed(ctx, `fetch_${t.name}`, () => store.fetchTree(ref, t.dir, stagingOf(t), { signal }));
      } catch (err) {
        first ??= fetchError(ctx, t, err);
        stop.abort(first);
        throw first;
      }
      bytesDone += t.bytes;
      filesDone += t.files;
      ctx.emit({ phase: 'SYNC_TREES', bytesDone, bytesTotal, filesDone, filesTotal, message: `${t.name} done` });
    }),
  );
  if (results.some((r) => r.status === 'rejected')) throw first;
  ctx.emit({ phase: 'SYNC_TREES', state: 'done', bytesDone, bytesTotal, filesDone, filesTotal });
}

/** `fn` over `items`, at most `n` at once: one promise per item. */
function gated<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void>[] {
  const gate = limiter(n);
  return items.map((x) => gate(() => fn(x)));
}

/** What a failed fetch of tree `t` throws: a cancel as it is, a copied file that differs from the manifest as it is (the verification's failure), else SYNC_FAILED naming the tree. */
function fetchError(ctx: JobContext, t: TreeTarget, err: unknown): unknown {
  if (ctx.signal.aborted) return err;
  if (err instanceof BoxbackError && err.code === 'BOXBACK_ERR_VERIFY_FAILED') return err;
  const be = asBoxbackError(err, 'BOXBACK_ERR_SYNC_FAILED');
  return new BoxbackError(be.code, `restoring tree ${t.name}: ${be.message}`, be.details, { cause: err });
}
