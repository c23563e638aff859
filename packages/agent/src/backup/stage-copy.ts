/**
 * The window's copy, done in this process: what `cp --reflink=auto -a` does for a dataset,
 * without a child process per dataset (a spawn from the agent costs more than copying a
 * config directory, and the window is what the service's users wait for).
 *
 *   directory   mkdir, its entries, then its mode, owner and times (at most 16 file
 *               operations in flight for the whole copy)
 *   file        copyFile with FICLONE (a reflink where the filesystem has them, else the
 *               kernel copies: copy_file_range, no bytes through this process), then its
 *               owner and times (copyFile gives it the source's mode)
 *   symlink     the same target, its owner
 *   anything else (a fifo, a socket, a device) -> UnsupportedEntry: the caller copies that
 *               dataset with `cp -a` instead
 *
 * Times are set with microsecond precision (libuv takes them as doubles), which is finer
 * than the archive keeps (zip: 2 s, its extended field: 1 s). Owners are set only when they
 * differ from this process's (root copying another user's files); as another user, the
 * files are this process's anyway, as they are with cp -a. The signal is checked before
 * each entry.
 */
import { constants, promises as fsp, type Dirent, type Stats } from 'node:fs';
import path from 'node:path';
import { limiter } from '@boxback/common';

/** An entry this copy does not handle (fifo, socket, device): copy the dataset with cp -a. */
export class UnsupportedEntry extends Error {}

const uid = process.getuid?.() ?? -1;
const gid = process.getgid?.() ?? -1;

type Limit = ReturnType<typeof limiter>;

async function owner(p: string, st: Stats): Promise<void> {
  if (st.uid !== uid || st.gid !== gid) await fsp.lchown(p, st.uid, st.gid);
}

async function copyEntry(src: string, dest: string, st: Stats, signal: AbortSignal, limit: Limit): Promise<void> {
  signal.throwIfAborted();
  if (st.isFile()) {
    await limit(async () => {
      await fsp.copyFile(src, dest, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
      await owner(dest, st);
      await fsp.utimes(dest, st.atime, st.mtime);
    });
  } else if (st.isDirectory()) {
    await fsp.mkdir(dest, { mode: 0o700 });
    const entries: Dirent[] = await limit(() => fsp.readdir(src, { withFileTypes: true }));
    // Every entry's copy has ended before this returns, also on a failure: nothing goes on
    // writing into the stage (or holds a file in it open) after the caller removed it.
    const results = await Promise.allSettled(
      entries.map(async (e) => {
        const from = path.join(src, e.name);
        await copyEntry(from, path.join(dest, e.name), await limit(() => fsp.lstat(from)), signal, limit);
      }),
    );
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    await owner(dest, st);
    await fsp.chmod(dest, st.mode & 0o7777);
    await fsp.utimes(dest, st.atime, st.mtime);
  } else if (st.isSymbolicLink()) {
    await fsp.symlink(await fsp.readlink(src), dest);
    await owner(dest, st);
  } else {
    throw new UnsupportedEntry(`${src} is neither a file, a directory nor a symlink`);
  }
}

/**
 * Copy `src` (a file or a directory, recursively) to `dest`, which must not exist. The first
 * failure stops what has not started yet; it is thrown once nothing is in flight.
 */
export async function copyInto(src: string, dest: string, signal: AbortSignal): Promise<void> {
  const stop = new AbortController();
  const gate = limiter(16);
  const limit: Limit = async (fn) => {
    stop.signal.throwIfAborted();
    try {
      return await gate(fn);
    } catch (err) {
      stop.abort(err);
      throw err;
    }
  };
  await copyEntry(src, dest, await fsp.lstat(src), AbortSignal.any([signal, stop.signal]), limit);
}
