/**
 * A journaled sync's COPY step in this process (incremental-sync.ts): the roots, whose old
 * entries were removed from `dest` first, made equal to the source's as
 *
 *   rsync -a -r -R --numeric-ids --modify-window=-1 --link-dest=<prevTree> --files-from=<roots>
 *
 * makes them, without the rsync processes (three per run, each started by a fork of the agent:
 * a small incremental's 20-50 roots cost 0.04-0.2 CPU-s of rsync and 20-40 ms of the JS thread
 * in fork):
 *
 *   WALK    each root and, for a directory, everything under it (lstat on the JS thread), with
 *           the tree's excludes applied to every name (rsync applies them below a listed root,
 *           and to the listed root's own name)
 *   ENTRY   in walk order, a directory before what it holds:
 *             directory  mkdir (owner, mode and mtime set once its content is in, below)
 *             file       the previous tree's file at the same path when rsync's quick check
 *                        and --link-dest's attribute check pass (same size, mtime to the
 *                        nanosecond, permission bits, owner and group): hard-linked to it;
 *                        else copied (copy_file_range; from 1 MiB through libuv's pool,
 *                        after this pass, so that the JS thread is not held), then owner,
 *                        mode and mtime (to the nanosecond) set on the new inode
 *             symlink    the previous tree's symlink at the same path when its target, owner and
 *                        group are the same (rsync hard-links symlinks too); else a new one,
 *                        its owner and mtime set
 *   DIRS    each directory made, deepest first: owner, mode, mtime (its entries are all in)
 *
 * All of it on the JS thread (lstat, link, a small file's copy_file_range: a round trip through
 * libuv's pool waits behind the archives' 1 MiB jobs), given back every 10 ms so that a large set
 * of roots read cold does not hold the other lanes up.
 *
 * Owner and group as rsync -o -g sets them: both as root; otherwise the group where the user may
 * set it. A path that vanished or changed type while it was copied is what a live tree does:
 * rsync reports it (exit 24 or 23) and keeps the rest, so this does, with the same warning; the
 * journal's next segment has the change.
 *
 * Not done here, so the caller runs rsync as before (undefined): no nanosecond mtime setter
 * (the agent's addon), an exclude pattern excludes.ts cannot answer for, a device, FIFO or
 * socket under a root, or BOXBACK_ROOT_COPY=rsync.
 */
import {
  constants,
  lchownSync,
  copyFileSync,
  linkSync,
  lstatSync,
  mkdirSync,
  promises as fsp,
  readdirSync,
  readlinkSync,
  symlinkSync,
  chmodSync,
  type BigIntStats,
} from 'node:fs';
import path from 'node:path';
import { BoxbackError } from '../../errors.js';
import { compileExcludes } from '../../excludes.js';
import { mapLimit } from '../../limit.js';

/** Sets a path's mtime to the nanosecond, a symlink itself not followed: 0 or -errno (incremental-sync.ts's SetMtimeNs). */
type SetMtimeNs = (path: string, sec: number, nsec: number) => number;

export interface RootCopyOptions {
  source: string;
  dest: string;
  prevTree: string;
  /** Roots present in source, none under another (incremental-sync.ts's `present`). */
  roots: string[];
  excludes: string[];
  setMtime: SetMtimeNs | undefined;
  signal?: AbortSignal;
}

export interface RootCopyResult {
  /** Regular files written as new inodes, and their bytes (rsync's "transferred"). */
  filesTransferred: number;
  bytesTransferred: number;
  /** Regular files hard-linked to the previous tree. */
  linkedFiles: number;
  /** rsync's exit code for the same run: 0, or 24 when something vanished while it was copied. */
  exitCode: number;
  warnings: string[];
}

/**
 * Files from this size are copied through libuv's pool after the others; smaller ones at once on
 * the JS thread. Measured on the small bench (50 + 20 roots, cold): 100 files copied in 0.19-0.23
 * s at once against 0.50-0.53 s through the pool, where each copy waited behind the database
 * archive's 1 MiB hashing and deflate jobs.
 */
const POOL_COPY_FROM = 1 << 20;
/** The JS thread is given back after this long of copying (between files). */
const SLICE_MS = 10;

interface Item {
  rel: string;
  st: BigIntStats;
}

const lstatBig = (p: string): BigIntStats | undefined => lstatSync(p, { bigint: true, throwIfNoEntry: false });

/** The previous tree's entry at a path, undefined where there is none (also under what was a file there). */
const lstatPrev = (p: string): BigIntStats | undefined => {
  try {
    return lstatBig(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
};

/** A source entry, undefined when it went away (or a directory above it became something else). */
const lstatLive = (p: string): BigIntStats | undefined => {
  try {
    return lstatBig(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw failure(err, p);
  }
};

/** A live tree's race: the path (or a directory above it) went away or changed type under us. */
const isRace = (err: unknown): boolean => {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP' || code === 'EISDIR';
};

function failure(err: unknown, what: string): BoxbackError {
  const e = err as NodeJS.ErrnoException;
  const msg = `copying ${what} failed: ${e.message}`;
  return new BoxbackError(e.code === 'ENOSPC' || e.code === 'EDQUOT' ? 'BOXBACK_ERR_DISK_FULL' : 'BOXBACK_ERR_SYNC_FAILED', msg);
}

export async function copyRoots(o: RootCopyOptions): Promise<RootCopyResult | undefined> {
  const setMtime = o.setMtime;
  if (!setMtime || process.env.BOXBACK_ROOT_COPY === 'rsync') return undefined;
  const ex = compileExcludes(o.excludes);
  // The whole tree (".") is a full pass's work: rsync's.
  if (ex.unsupported.length || o.roots.some((r) => r === '.' || r === '')) return undefined;
  let vanished = 0;

  // A large set of roots (thousands of entries, read cold) must not hold the JS thread: the other
  // lanes' work (the archives' writes, the other tree's describe, gRPC) runs between slices.
  let sliceAt = performance.now();
  let calls = 0;
  const slice = async (): Promise<void> => {
    if (++calls % 16 !== 0 || performance.now() - sliceAt < SLICE_MS) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    o.signal?.throwIfAborted();
    sliceAt = performance.now();
  };

  // WALK: every entry to make, in walk order (a directory before its content).
  const items: Item[] = [];
  const walk = async (rel: string, st: BigIntStats): Promise<boolean> => {
    if (ex.excluded(rel, st.isDirectory())) return true;
    if (!st.isDirectory() && !st.isFile() && !st.isSymbolicLink()) return false; // a device, FIFO or socket: rsync's
    items.push({ rel, st });
    if (!st.isDirectory()) return true;
    let names: string[];
    try {
      names = readdirSync(path.join(o.source, rel));
    } catch (err) {
      if (!isRace(err)) throw failure(err, path.join(o.source, rel));
      vanished++;
      return true;
    }
    names.sort();
    for (const n of names) {
      await slice();
      const child = `${rel}/${n}`;
      const cst = lstatLive(path.join(o.source, child));
      if (!cst) {
        vanished++;
        continue;
      }
      if (!(await walk(child, cst))) return false;
    }
    return true;
  };
  for (const root of o.roots) {
    o.signal?.throwIfAborted();
    const st = lstatLive(path.join(o.source, root));
    if (!st) {
      vanished++;
      continue;
    }
    if (!(await walk(root, st))) return undefined;
  }

  // ENTRY
  const root = process.getuid?.() === 0;
  /** The owner a new file or symlink has. */
  const self = { uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 };
  const setOwner = (to: string, st: BigIntStats, have?: { uid: number; gid: number }): void => {
    const uid = Number(st.uid);
    const gid = Number(st.gid);
    if (have && have.uid === uid && have.gid === gid) return;
    if (root) lchownSync(to, uid, gid);
    else
      try {
        lchownSync(to, -1, gid);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
      }
  };
  const setTime = (to: string, st: BigIntStats): void => {
    const ns = st.mtimeNs;
    const sec = ns / 1_000_000_000n - (ns % 1_000_000_000n < 0n ? 1n : 0n);
    const rc = setMtime(to, Number(sec), Number(ns - sec * 1_000_000_000n));
    if (rc < 0) throw Object.assign(new Error(`setting the mtime of ${to} failed (errno ${-rc})`), { code: rc === -2 ? 'ENOENT' : 'EIO' });
  };
  const sameAttrs = (a: BigIntStats, b: BigIntStats): boolean =>
    (a.mode & 0o7777n) === (b.mode & 0o7777n) && (!root || a.uid === b.uid) && a.gid === b.gid;

  const res: RootCopyResult = { filesTransferred: 0, bytesTransferred: 0, linkedFiles: 0, exitCode: 0, warnings: [] };
  /** A copied file's owner, mode and mtime, as rsync sets them on the new inode. */
  const finish = (to: string, st: BigIntStats): void => {
    setOwner(to, st, self);
    chmodSync(to, Number(st.mode & 0o7777n));
    setTime(to, st);
    res.filesTransferred++;
    res.bytesTransferred += Number(st.size);
  };
  const dirs: Item[] = [];
  const copies: { from: string; to: string; st: BigIntStats }[] = [];
  for (const it of items) {
    await slice();
    const from = path.join(o.source, it.rel);
    const to = path.join(o.dest, it.rel);
    const prev = path.join(o.prevTree, it.rel);
    try {
      if (it.st.isDirectory()) {
        mkdirSync(to, { mode: 0o700 });
        dirs.push(it);
      } else if (it.st.isSymbolicLink()) {
        const target = readlinkSync(from);
        const p = lstatPrev(prev);
        if (p?.isSymbolicLink() && sameAttrs(p, it.st) && readlinkSync(prev) === target) linkSync(prev, to);
        else {
          symlinkSync(target, to);
          setOwner(to, it.st, self);
          setTime(to, it.st);
        }
      } else {
        // The file as it is now (a live tree's file may have changed since the walk).
        const st = lstatBig(from);
        if (!st?.isFile()) throw Object.assign(new Error(`${from} changed type`), { code: 'ENOENT' });
        const p = lstatPrev(prev);
        if (p?.isFile() && p.size === st.size && p.mtimeNs === st.mtimeNs && sameAttrs(p, st)) {
          linkSync(prev, to);
          res.linkedFiles++;
          continue;
        }
        if (st.size >= POOL_COPY_FROM) {
          copies.push({ from, to, st });
          continue;
        }
        copyFileSync(from, to, constants.COPYFILE_EXCL);
        finish(to, st);
      }
    } catch (err) {
      if (!isRace(err)) throw failure(err, from);
      vanished++;
    }
  }
  // The large files through libuv's pool, two at a time: the JS thread is not held for long.
  await mapLimit(copies, 2, async (c) => {
    o.signal?.throwIfAborted();
    try {
      await fsp.copyFile(c.from, c.to, constants.COPYFILE_EXCL);
      finish(c.to, c.st);
    } catch (err) {
      if (!isRace(err)) throw failure(err, c.from);
      vanished++;
    }
  });

  // DIRS: deepest first, each once its entries are all in.
  for (let i = dirs.length - 1; i >= 0; i--) {
    const it = dirs[i];
    const to = path.join(o.dest, it.rel);
    try {
      const st = lstatBig(path.join(o.source, it.rel));
      if (!st?.isDirectory()) throw Object.assign(new Error('gone'), { code: 'ENOENT' });
      setOwner(to, st, self);
      chmodSync(to, Number(st.mode & 0o7777n));
      setTime(to, st);
    } catch (err) {
      if (!isRace(err)) throw failure(err, path.join(o.source, it.rel));
      vanished++;
    }
  }
  if (vanished) {
    res.exitCode = 24;
    res.warnings.push(`some files of ${o.source} vanished while it was synced (rsync exit 24)`);
  }
  return res;
}
