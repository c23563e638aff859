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
 */
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';

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
