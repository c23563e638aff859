/**
 * A stored tree copied out whole with `cp`, when it holds exactly what the manifest lists.
 *
 *   1. WALK   the stored tree, every entry's type compared with the manifest's (the first
 *             entry that is missing, unlisted or of another type ends it: not exact)
 *   2. COPY   `cp -RP --preserve=mode,ownership,timestamps --no-preserve=links -T <stored
 *             tree> <dest>`: what rsync -a keeps (contents, modes, numeric owners, nanosecond
 *             times, symlinks as links), by copy_file_range, without rsync's sender and
 *             receiver pair (about a third of rsync's CPU on a tree of small files); hard links
 *             between stored files (the store's dedup) are not carried onto the box. A
 *             restore's copy and a first backup's (COLD_COPY_STREAMS) run four `cp -t` at once
 *             on shares of the tree's top directories (copySplit): one cp reads cold small
 *             files one at a time. A live source whose directory goes away meanwhile is
 *             SYNC_FAILED, as a cp that met a vanished file (a backup's rsync finishes it).
 *             `onCopied` (a fresh dest only) is told each entry a cp has finished whole (cp
 *             copies its sources in order: the next one's copy exists), for a restore to
 *             check it while the rest is copied (read.ts fetchTree, tree-index.ts CopyCheck)
 *
 * copyTree is also a first backup's full pass (tree.ts): with no previous tree to link
 * against, rsync has nothing to save, and the tree is copied the same way.
 *
 * A tree with anything else in it (a file planted in the store) goes through rsync
 * --files-from (read.ts), which copies only the listed entries. A copy never links into the
 * store: the restored box can never alter a backup.
 */
import { lstatSync, promises as fsp, readdirSync, type Dirent } from 'node:fs';
import path from 'node:path';
// execa is imported where it runs (`await import('execa')`), not at load: @boxback/common's index loads
// this module into every process, the `boxback` CLI too, and execa's ~100 files were ~a quarter of
// each CLI run's start-up CPU (test suite, session 19).
import { BoxbackError } from '../../errors.js';
import { mapLimit } from '../../limit.js';
import { nanosecondMtimes } from './incremental-sync.js';

export type EntryType = 'file' | 'symlink' | 'dir';

function typeOf(d: Dirent): EntryType | undefined {
  if (d.isFile()) return 'file';
  if (d.isDirectory()) return 'dir';
  if (d.isSymbolicLink()) return 'symlink';
  return undefined; // fifos, sockets, devices: never listed
}

/**
 * Whether the stored tree `src` holds exactly the `listed` entries (paths relative to it), each
 * of its listed type. The directories are read on the JS thread (readdirSync: microseconds each
 * from the dentry cache), a slice of them at a time: through libuv's 4-thread pool each read
 * waited behind the restore's 1 MiB hash and inflate jobs (VERIFY and EXTRACT run beside this):
 * on the small box (1253 directories) a restore's SYNC_TREES went from 2.3-2.5 s to 1.0-1.2 s.
 */
export async function holdsExactly(src: string, listed: Map<string, EntryType>): Promise<boolean> {
  let seen = 0;
  let read = 0;
  const walk = async (rel: string): Promise<boolean> => {
    // Other work gets a turn every 200 directories.
    if (++read % 200 === 0) await new Promise<void>((r) => setImmediate(r));
    for (const d of readdirSync(rel ? path.join(src, rel) : src, { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      const t = typeOf(d);
      if (!t || listed.get(r) !== t) return false;
      seen++;
      if (t === 'dir' && !(await walk(r))) return false;
    }
    return true;
  };
  return (await walk('')) && seen === listed.size;
}

/**
 * cp processes a copy of a cold tree runs at once (copySplit): a restore's copy out of the store,
 * and a first backup's copy of a tree (no previous tree to link against). The default box's
 * 3.2 GB of artifacts (100k files) copied cold: 20.2-21.2 s by four, 29.1-40.7 s by one.
 */
export const COLD_COPY_STREAMS = 4;

/** cp's arguments: rsync -a's attributes (modes, numeric owners, ns times, symlinks as links; no xattrs, no hard links kept). */
const CP_ARGS = ['-R', '-P', '--preserve=mode,ownership,timestamps', '--no-preserve=links', '-T', '--'];

/**
 * `cp -RP --preserve=mode,ownership,timestamps -T src dest` (dest made or merged into); a full
 * disk is DISK_FULL, any other failure SYNC_FAILED. `onBytes`: about every half second, the
 * bytes written so far (the destination filesystem's used space, grown since the start).
 */
export async function copyTree(
  src: string,
  dest: string,
  signal?: AbortSignal,
  onBytes?: (bytesDone: number) => void,
  streams = 1,
  onCopied?: (rels: string[]) => void,
): Promise<void> {
  await fsp.mkdir(path.dirname(dest), { recursive: true });
  const used = async () => {
    const s = await fsp.statfs(path.dirname(dest));
    return (s.blocks - s.bfree) * s.bsize;
  };
  const base = onBytes ? await used() : 0;
  const timer = onBytes
    ? setInterval(
        () =>
          void used().then(
            (u) => onBytes(Math.max(0, u - base)),
            () => undefined,
          ),
        500,
      )
    : undefined;
  timer?.unref();
  try {
    if (streams <= 1) return await runCp([...CP_ARGS, src, dest], src, dest, signal);
    await copySplit(src, dest, streams, signal, onCopied).catch((err: NodeJS.ErrnoException) => {
      // A live tree (a backup's source) whose directory went away between the split's reads:
      // as a cp that met a vanished file, SYNC_FAILED (a backup's rsync finishes the copy).
      if (err instanceof BoxbackError || signal?.aborted || !['ENOENT', 'ENOTDIR'].includes(err.code ?? '')) throw err;
      throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', `copying ${src} to ${dest}: ${err.message}`);
    });
  } finally {
    clearInterval(timer);
  }
}

/**
 * A directory's attributes as cp --preserve=mode,ownership,timestamps sets them: owner, mode,
 * times to the nanosecond: the mtime by the agent's registered utimensat setter
 * (useNanosecondMtimes) when there is one, else both times by `touch -h -r` (a process spawned
 * from the daemon per directory: 10-40 ms of its JS thread under load, at the end of the copy).
 */
async function copyDirAttributes(src: string, dest: string, signal?: AbortSignal): Promise<void> {
  const st = await fsp.lstat(src);
  await fsp.lchown(dest, st.uid, st.gid).catch((err: NodeJS.ErrnoException) => {
    // As cp: owners are kept where the process may set them.
    if (err.code !== 'EPERM') throw err;
  });
  await fsp.chmod(dest, st.mode & 0o7777);
  const setMtime = nanosecondMtimes();
  if (setMtime) {
    const ns = lstatSync(src, { bigint: true }).mtimeNs;
    const sec = ns / 1_000_000_000n - (ns % 1_000_000_000n < 0n ? 1n : 0n);
    const rc = setMtime(dest, Number(sec), Number(ns - sec * 1_000_000_000n));
    if (rc === 0) return;
    // Not set (-errno): touch below says why, or sets it.
  }
  const { execa } = await import('execa');
  const r = await execa('touch', ['-h', '-r', src, '--', dest], {
    reject: false,
    stdin: 'ignore',
    cancelSignal: signal,
    env: { LC_ALL: 'C' },
  });
  if (r.exitCode !== 0) {
    signal?.throwIfAborted();
    throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', `setting the times of ${dest} failed: ${String(r.stderr).trim()}`);
  }
}

/**
 * The copy by `streams` cp processes at once: cold small files are read one at a time by one
 * cp (the disk's latency, not its bandwidth, bounds it: 8.5 s for 10k cold artifact files by
 * one stream, 4.1-5.0 s by four). The tree's top directories (down to where there are enough
 * entries to share out) are made here, their entries shared out among cp -t calls, and each
 * made directory given the stored one's owner, mode and times last, deepest first (its
 * entries' creation moved its mtime).
 */
async function copySplit(
  src: string,
  dest: string,
  streams: number,
  signal?: AbortSignal,
  onCopied?: (rels: string[]) => void,
): Promise<void> {
  const made: string[] = []; // relative directories made here, parents first
  const calls: Array<{ dir: string; names: string[] }> = [];
  let frontier = [''];
  for (let depth = 0; depth < 3 && frontier.length; depth++) {
    const next: string[] = [];
    for (const rel of frontier) {
      made.push(rel);
      const names = (await fsp.readdir(rel ? path.join(src, rel) : src, { withFileTypes: true })).map((d) => ({
        d,
        r: rel ? `${rel}/${d.name}` : d.name,
      }));
      const dirs = names.filter((n) => n.d.isDirectory());
      const others = names.filter((n) => !n.d.isDirectory()).map((n) => n.d.name);
      if (others.length) calls.push({ dir: rel, names: others });
      next.push(...dirs.map((n) => n.r));
    }
    // Enough directories to share out: they are copied whole; else one level further down.
    if (next.length >= streams * 2 || depth === 2) {
      // Shared out round-robin into `streams` calls per parent: a process spawned from the
      // daemon costs its main thread 0.1-0.4 s on a loaded box, so not one per directory.
      const byParent = new Map<string, string[]>();
      for (const rel of next) {
        const parent = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
        byParent.set(parent, [...(byParent.get(parent) ?? []), path.basename(rel)]);
      }
      for (const [dir, names] of byParent)
        for (let k = 0; k < Math.min(streams, names.length); k++) calls.push({ dir, names: names.filter((_, i) => i % streams === k) });
      frontier = [];
    } else frontier = next;
  }
  for (const rel of made) await fsp.mkdir(rel ? path.join(dest, rel) : dest, { recursive: true, mode: 0o700 });
  // Directories' entries in calls of at most 256 names (a few long argument lists, not one per file).
  const jobs: Array<{ dir: string; names: string[] }> = [];
  for (const c of calls) for (let i = 0; i < c.names.length; i += 256) jobs.push({ dir: c.dir, names: c.names.slice(i, i + 256) });
  const stop = new AbortController();
  const both = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
  await mapLimit(jobs, streams, async (j) => {
    const from = j.names.map((n) => path.join(src, j.dir, n));
    const to = j.dir ? path.join(dest, j.dir) : dest;
    const copying = runCp([...CP_ARGS.slice(0, -2), '-t', to, '--', ...from], src, dest, both);
    // cp copies its sources one after the other: once the next one's copy exists, the one
    // before it is whole (its entries and attributes), and can be checked while cp goes on.
    let next = 1;
    const relOf = (n: string) => (j.dir ? `${j.dir}/${n}` : n);
    const poll = onCopied
      ? setInterval(() => {
          const whole: string[] = [];
          while (next < j.names.length && lstatSync(path.join(to, j.names[next]), { throwIfNoEntry: false }))
            whole.push(relOf(j.names[next++ - 1]));
          if (whole.length) onCopied(whole);
        }, PART_POLL_MS)
      : undefined;
    try {
      await copying;
    } catch (err) {
      stop.abort(err);
      throw err;
    } finally {
      clearInterval(poll);
    }
    onCopied?.(j.names.slice(next - 1).map(relOf));
  });
  for (const rel of [...made].reverse())
    await copyDirAttributes(rel ? path.join(src, rel) : src, rel ? path.join(dest, rel) : dest, signal);
}

/** How often a split copy looks for the parts its cp processes have finished (onCopied). */
const PART_POLL_MS = 100;

/** One cp; a full disk is DISK_FULL (cp stopped at the first failed write), any other failure SYNC_FAILED. */
async function runCp(args: string[], src: string, dest: string, signal?: AbortSignal): Promise<void> {
  const { execa } = await import('execa');
  const sub = execa('cp', args, {
    reject: false,
    stdin: 'ignore',
    stdout: 'ignore',
    cancelSignal: signal,
    forceKillAfterDelay: 3000,
    env: { LC_ALL: 'C' },
  });
  // cp goes on to the next file after a failed write: on a full disk it is stopped at the first.
  let full = '';
  sub.stderr?.on('data', (d: Buffer) => {
    const line = String(d)
      .split('\n')
      .find((l) => /No space left on device|Disk quota exceeded/i.test(l));
    if (line && !full) {
      full = line;
      sub.kill('SIGTERM');
    }
  });
  const r = await sub;
  if (full) throw new BoxbackError('BOXBACK_ERR_DISK_FULL', `copying ${src} to ${dest} failed: ${full.trim()}`);
  if (r.isCanceled) {
    signal?.throwIfAborted();
    throw new BoxbackError('BOXBACK_ERR_CANCELLED', `the copy of ${src} was cancelled`);
  }
  if (r.exitCode === 0) return;
  const last =
    String(r.stderr ?? '')
      .trim()
      .split('\n')
      .pop() ?? '';
  const msg = `copying ${src} to ${dest} failed (cp ${r.signal ? `killed by ${r.signal}` : `exit ${r.exitCode}`})${last ? `: ${last}` : ''}`;
  if (/No space left on device|Disk quota exceeded/i.test(String(r.stderr))) throw new BoxbackError('BOXBACK_ERR_DISK_FULL', msg);
  throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', msg);
}
