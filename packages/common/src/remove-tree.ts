/**
 * Removing a directory tree that may hold 100k+ entries (a restore's safety copies, a link
 * farm, a deleted backup): `rm -rf` in a child process, not `fs.promises.rm({ recursive })`.
 *
 * Node 20's recursive rm walks the whole tree at once (each directory's entries removed with
 * Promise.all, recursively): a promise, a path and a queued libuv request for every entry of the
 * tree at the same moment. Removing a restore's safety copies at the default file counts (120k
 * files in 40k directories) took the agent daemon from 175 to 373 MB of RSS (JS heap 136 MB)
 * for 30 s (docs/design/agent-memory.md). `rm -rf` removes one directory at a time in a few
 * MB of its own.
 *
 *   await removeTree(dir);   // as fsp.rm(dir, { recursive: true, force: true }): a missing path is fine
 *   await removeSmallTree(dir);   // the same, on the JS thread while the tree is small
 *
 * removeSmallTree is for paths that are usually small (a journaled sync's changed roots already
 * in the link farm: a CI run's directory) and are removed while an archive keeps libuv's four
 * threads busy with 1 MiB jobs: there each lstat, readdir and unlink of fsp.rm waited for a free
 * thread (50 run directories carried over from the day before took ~0.4 s of a small
 * incremental's artifacts sync). It removes on the JS thread, microseconds per entry from the
 * inode cache, and hands a tree larger than its budget to removeTree.
 */
import { spawn } from 'node:child_process';
import { lstatSync, promises as fsp, readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import path from 'node:path';

/** Remove `p` (a file or a directory tree); nothing to do when it does not exist. Throws when rm fails. */
export async function removeTree(p: string): Promise<void> {
  const st = await fsp.lstat(p).catch(() => undefined);
  if (!st) return;
  // A file or a symlink: one unlink, no process.
  if (!st.isDirectory()) return fsp.rm(p, { force: true });
  await new Promise<void>((resolve, reject) => {
    const child = spawn('rm', ['-rf', '--', p], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => {
      if (stderr.length < 4096) stderr += s;
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`rm -rf ${p} failed (${signal ?? `exit ${code}`}): ${stderr.trim().split('\n')[0] ?? ''}`));
    });
  });
}

/** Entries removeSmallTree removes on the JS thread before it hands the rest to removeTree. */
const SMALL_TREE_ENTRIES = 2000;

/**
 * Remove `p` (a file or a directory tree) as removeTree does, on the JS thread while it has
 * removed fewer than `budget` entries; a larger tree's rest goes to removeTree (rm -rf).
 */
export async function removeSmallTree(p: string, budget = SMALL_TREE_ENTRIES): Promise<void> {
  let left = budget;
  const gone = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT';
  // true once `q` is gone; false when the budget ran out first.
  const remove = (q: string): boolean => {
    const st = lstatSync(q, { throwIfNoEntry: false });
    if (!st) return true;
    if (st.isDirectory()) {
      for (const name of readdirSync(q)) if (left <= 0 || !remove(path.join(q, name))) return false;
      try {
        rmdirSync(q);
      } catch (err) {
        if (!gone(err)) throw err;
      }
    } else {
      try {
        unlinkSync(q);
      } catch (err) {
        if (!gone(err)) throw err;
      }
    }
    left--;
    return true;
  };
  let done = false;
  try {
    done = remove(p);
  } catch {
    // What failed on the JS thread (a permission, a race) is rm -rf's to retry and report.
  }
  if (!done) await removeTree(p);
}
