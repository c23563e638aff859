// Before every timed run (ours, the plain tools', restic's): the same starting state for each.
//
//   sync            nothing left dirty: no one's flush (our fsyncs, the plain tools' sync)
//                   pays for what an earlier step wrote
//   drop_caches     where the bench may (root): the clean page cache dropped, so every run
//                   reads its inputs from disk
//
// Why the second: left alone, the cache held whatever the previous step and the host left.
// This VM's host pages out file pages unused for 60 s (DAMON, `pageout` of cold unmapped
// pages), so the first of two runs over the same data read it from disk and the second from
// memory: the order of the rows decided part of their ratios. Dentries and inodes stay
// (drop_caches=1), as they would on a box whose trees are walked every day.
import { writeFileSync } from 'node:fs';
import { run } from './procs.mjs';

/** How the page cache stood before each timed run: for the report. */
export let pageCache = 'not settled yet';

export async function settle() {
  await run('sync', []);
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '1');
    pageCache = 'dropped before each timed run (sync; drop_caches=1)';
  } catch {
    pageCache = 'as the previous step left it (not root: drop_caches not writable)';
  }
}

/** Read every file under `dirs` once (their pages cached): a warm-cache baseline. */
export const warm = (dirs) => run('sh', ['-c', 'find "$@" -type f -exec cat {} + > /dev/null', 'sh', ...dirs]);
