/**
 * An incremental tree sync driven by the change journal. It produces in `dest` the same
 * complete point-in-time tree that
 *
 *   rsync -a --delete --numeric-ids --link-dest=<prevTree> [--exclude...] <source>/ <dest>/
 *
 * would, while looking only at the changed paths:
 *
 *   1. LINK     `cp -al <prevTree>/. <dest>/`: a hard-link farm of the previous backup's tree
 *               (directories are new, every file and symlink is a link to the previous inode),
 *               or the same farm prepared ahead of time (link-farm.ts) renamed into place.
 *   2. ROOTS    reduce the changed paths to roots (a path under another root is covered by
 *               it); drop excluded ones; promote a root to its highest ancestor that is not a
 *               real directory on both sides (a dir that became a symlink or vanished), so
 *               every step below works only below real directories of `dest`.
 *   3. REMOVE   remove each root from `dest` (unlinking a hard link never touches prevTree).
 *   4. COPY     the roots as `rsync -a -r -R --files-from=<roots> --from0 --link-dest=<prevTree>
 *               --delete-missing-args` makes them: a file equal to the previous one is
 *               linked, anything else is written as a new inode (the root was removed first,
 *               so nothing is ever written through a link into prevTree). Done in this
 *               process (root-copy.ts: no rsync processes to start) when the agent registered
 *               its nanosecond mtime setter and the roots hold only directories, files and
 *               symlinks; else by that rsync run.
 *   5. DIRS     the attributes `rsync -a -d` gives (owner, group, mode, mtime to the
 *               nanosecond) of the directories whose entries changed (the root and every
 *               root's ancestors), set from the source's in place on the JS thread
 *               (copyDirAttributes) when the agent registered a nanosecond mtime setter
 *               (useNanosecondMtimes: its native addon's utimensat); else two rsync runs,
 *               `rsync -a -d --files-from=<every root's ancestors>` and, for the root itself,
 *               `rsync -a -d --exclude='/*'`. (Listing "." with -d would copy the top level's
 *               entries too, and chmod an attribute-only change through the link; in place,
 *               no entry is ever touched.)
 *
 * All rsync runs use --modify-window=-1 (nanosecond mtimes): with the default, rsync
 * treats mtimes in the same second as equal, leaves such a directory's mtime alone and
 * --link-dest links a same-size file rewritten within the second.
 *
 * A changed path means "make dest/<path> equal source/<path>, recursively if it is a
 * directory": a superset of the real changes is always correct, only slower.
 */
import {
  chmodSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  promises as fsp,
  readdirSync,
  renameSync,
  rmdirSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
// execa is imported where it runs (`await import('execa')`), not at load: @boxback/common's index loads
// this module into every process, the `boxback` CLI too, and execa's ~100 files were ~a quarter of
// each CLI run's start-up CPU (test suite, session 19).
import { BoxbackError } from '../../errors.js';
import { compileExcludes } from '../../excludes.js';
import { linkFarm } from './link-farm.js';
import { copyRoots } from './root-copy.js';
import { removeSmallTree } from '../../remove-tree.js';

export { linkFarm } from './link-farm.js';

export interface IncrementalProgress {
  step: 'link' | 'remove' | 'copy' | 'dirs';
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesTotal: number;
}

export interface IncrementalSyncOptions {
  source: string;
  /** Must not exist, or be an empty directory. */
  dest: string;
  /** The same tree in the previous backup: complete, and never modified by this sync. */
  prevTree: string;
  /** Changed paths relative to `source` (files or directories), any order, duplicates fine. */
  changed: Iterable<string>;
  excludes?: string[];
  signal?: AbortSignal;
  onProgress?: (p: IncrementalProgress) => void;
  /**
   * A link farm of prevTree prepared ahead of time (link-farm.ts), on dest's filesystem: it
   * is renamed into place instead of running `cp -al` now. It must be complete and untouched.
   */
  farm?: string;
  /** Binaries (tests, unusual installs). */
  rsync?: string;
  cp?: string;
}

export interface IncrementalSyncResult {
  /** Roots the changed paths reduced to. */
  roots: number;
  /** Roots that no longer exist in source (removed from dest). */
  removed: number;
  /** Regular files rsync wrote (new inodes) and their bytes. */
  filesTransferred: number;
  /**
   * Regular files under the roots that --link-dest hard-linked to the previous tree (rsync's
   * listed regular files minus those it wrote); undefined when rsync's stats did not say. A
   * describe needs the previous manifest's checksums only for these.
   */
  linkedFiles: number | undefined;
  bytesTransferred: number;
  /** Whether a prepared link farm was used (else `cp -al` ran now). */
  preparedFarm: boolean;
  /** Time of each step, ms. */
  linkMs: number;
  syncMs: number;
  /** Inside syncMs: the rsync of the roots, and the directory-attribute rsyncs (a small sync's fixed cost). */
  copyMs: number;
  /** Who copied the roots: this process (root-copy.ts) or rsync; undefined when there was nothing to copy. */
  copiedBy?: 'process' | 'rsync';
  dirsMs: number;
  durationMs: number;
  exitCode: number;
  warnings: string[];
}

/** Reduce changed paths to sorted, deduplicated roots (no root lies under another). */
export function reduceToRoots(changed: Iterable<string>): string[] {
  const norm = new Set<string>();
  for (const p of changed) {
    const n = path.posix.normalize(p.split(path.sep).join('/')).replace(/^\/+|\/+$/g, '');
    if (n === '..' || n.startsWith('../'))
      throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `changed path ${p} lies outside the tree`);
    norm.add(n === '.' ? '' : n);
  }
  if (norm.has('')) return [''];
  // Sorting with "/" as the smallest character puts a directory right before its children.
  const sorted = [...norm].sort((a, b) => {
    const x = a.replace(/\//g, '\0');
    const y = b.replace(/\//g, '\0');
    return x < y ? -1 : x > y ? 1 : 0;
  });
  const out: string[] = [];
  for (const p of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && p.startsWith(`${last}/`)) continue;
    out.push(p);
  }
  return out;
}

/**
 * lstat on the JS thread: a few microseconds from the inode cache, where a round trip
 * through libuv's 4-thread pool waits behind the archives' 1 MiB hashing and deflate jobs
 * (a 50-root sync spent 0.3-0.8 s there). The sync's metadata steps (roots, removals, the
 * farm's rename, the rsync file lists) are all done this way.
 */
const lstatNow = (p: string): Stats | null => lstatSync(p, { throwIfNoEntry: false }) ?? null;

/**
 * Promote each root to its highest ancestor that is not a real directory in both trees
 * (cached per directory), and drop roots under an excluded directory.
 */
function saneRoots(roots: string[], source: string, dest: string, excludes: string[]): string[] {
  const ex = compileExcludes(excludes);
  const dirOk = new Map<string, boolean>();
  const isRealDirBoth = (rel: string): boolean => {
    let ok = dirOk.get(rel);
    if (ok === undefined) {
      ok = !!lstatNow(path.join(source, rel))?.isDirectory() && !!lstatNow(path.join(dest, rel))?.isDirectory();
      dirOk.set(rel, ok);
    }
    return ok;
  };
  const out = new Set<string>();
  for (const root of roots) {
    if (root === '') return [''];
    const parts = root.split('/');
    let chosen = root;
    let skip = false;
    for (let i = 1; i < parts.length; i++) {
      const anc = parts.slice(0, i).join('/');
      if (ex.excluded(anc, true)) {
        skip = true;
        break;
      }
      if (!isRealDirBoth(anc)) {
        chosen = anc;
        break;
      }
    }
    if (!skip) out.add(chosen);
  }
  return reduceToRoots(out);
}

interface RsyncRun {
  exitCode: number;
  stderr: string;
  stdout: string;
}

async function runRsync(bin: string, args: string[], list: string[], signal?: AbortSignal): Promise<RsyncRun> {
  const listFile = path.join(os.tmpdir(), `boxback-files-from-${process.pid}-${Math.random().toString(36).slice(2)}`);
  writeFileSync(listFile, list.map((p) => `${p}\0`).join(''), { mode: 0o600 });
  try {
    const { execa } = await import('execa');
    const r = await execa(bin, [...args, `--files-from=${listFile}`, '--from0'], {
      reject: false,
      stdin: 'ignore',
      cancelSignal: signal,
      forceKillAfterDelay: 3000,
      env: { LC_ALL: 'C' },
      maxBuffer: 64 * 1024 * 1024,
    });
    if (r.isCanceled) {
      signal?.throwIfAborted();
      throw new BoxbackError('BOXBACK_ERR_CANCELLED', 'rsync was cancelled');
    }
    const stderr = String(r.stderr ?? '');
    if (r.exitCode === undefined) throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', `could not run rsync: ${r.shortMessage}`);
    return { exitCode: r.exitCode, stderr, stdout: String(r.stdout ?? '') };
  } finally {
    rmSync(listFile, { force: true });
  }
}

/**
 * What rsync prints when the source changes under it (a live tree): a path, or a directory
 * above it, vanished or changed type between the listing and the copy (ENOENT, ENOTDIR,
 * EISDIR on the sending side; --delete-missing-args covers only ENOENT of a listed path
 * itself), a file changed while it was read, or the receiver found the directory it had
 * just made where the source now has a file.
 */
const RACE_LINES = [
  /^rsync: \[sender\] .* \((?:2|20|21)\)$/,
  /^file has vanished: /,
  /^ERROR: .* failed verification -- update discarded\.$/,
  /^could not make way for new /,
  /^cannot delete non-empty directory: /,
];

/**
 * rsync exit 23 whose every error is such a race. Those paths changed during the backup, so
 * they are in the journal's next segment: this backup keeps what it got (like exit 24, and
 * like a full pass over a live tree), the next one has them. Any other error still fails.
 */
function onlyRaces(stderr: string): boolean {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(
      (l) =>
        l && !l.startsWith('rsync error: some files/attrs were not transferred') && !l.startsWith('rsync warning: some files vanished'),
    );
  return lines.length > 0 && lines.every((l) => RACE_LINES.some((re) => re.test(l)));
}

function failOn(r: RsyncRun, what: string, warnings: string[]): void {
  if (r.exitCode === 0) return;
  if (r.exitCode === 24) {
    warnings.push(`some files of ${what} vanished while it was synced (rsync exit 24)`);
    return;
  }
  if (r.exitCode === 23 && onlyRaces(r.stderr)) {
    warnings.push(`some paths of ${what} changed while it was synced (rsync exit 23); the next backup has them`);
    return;
  }
  const last = r.stderr.trim().split('\n').filter(Boolean).pop() ?? '';
  const msg = `rsync of ${what} exited with code ${r.exitCode}${last ? `: ${last}` : ''}`;
  if (/No space left on device|Disk quota exceeded/i.test(r.stderr)) throw new BoxbackError('BOXBACK_ERR_DISK_FULL', msg);
  throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', msg);
}

/**
 * Regular files of the run that --link-dest hard-linked: its listed regular files ("Number of
 * files: 151 (reg: 100, dir: 51)", no "reg:" when there are none) minus those it wrote. The
 * roots were removed from dest first, so every listed regular file was either written or
 * linked. Undefined when the stats are not there to say.
 */
function linkedOf(stdout: string, transferred: RegExpExecArray | null): number | undefined {
  const files = /^Number of files: [\d,]+(?: \(([^)]*)\))?$/m.exec(stdout);
  if (!files || !transferred) return undefined;
  const reg = /(?:^|, )reg: ([\d,]+)/.exec(files[1] ?? '');
  const listed = reg ? Number(reg[1].replace(/,/g, '')) : 0;
  return Math.max(0, listed - Number(transferred[1].replace(/,/g, '')));
}

function ancestorsOf(roots: string[]): string[] {
  const dirs = new Set<string>();
  for (const r of roots) {
    const parts = r.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  return [...dirs].sort((a, b) => a.split('/').length - b.split('/').length || (a < b ? -1 : 1));
}

/**
 * Sets a path's mtime to the nanosecond, its atime left alone and a symlink not followed: 0 or
 * -errno. Node's utimes carries a time as a double (~0.24 us at today's dates), and the tree a
 * journaled sync makes must equal a full rsync pass's to the nanosecond (the journal bench
 * compares them so), so a directory's attributes are set in place only with such a setter.
 */
export type SetMtimeNs = (path: string, sec: number, nsec: number) => number;
let setMtimeNs: SetMtimeNs | undefined;

/**
 * Register (or, with undefined, drop) the setter a journaled sync sets its directories' mtimes
 * with: the agent's native addon's utimensat (packages/agent/src/native.ts). Without one, each
 * sync sets its directories' attributes with two rsync runs (a fork of the process and three
 * rsync processes each: 0.16-0.57 s of a small incremental's critical path).
 */
export function useNanosecondMtimes(fn: SetMtimeNs | undefined): void {
  setMtimeNs = fn;
}

/** The registered nanosecond mtime setter, if any (a restore's split tree copy sets its directories' times with it: tree-copy.ts). */
export function nanosecondMtimes(): SetMtimeNs | undefined {
  return setMtimeNs;
}

const errnoError = (code: number, what: string): NodeJS.ErrnoException => {
  const name = Object.entries(os.constants.errno).find(([, n]) => n === -code)?.[0] ?? `errno ${-code}`;
  return Object.assign(new Error(`${name}: ${what}`), { code: name, errno: code });
};

/**
 * DIRS in place: the attributes `rsync -a -d --numeric-ids` gives a directory (owner and group
 * by number, mode, mtime to the nanosecond) copied from source to dest for each of `rels` (""
 * is the root). Only attributes are set, never an entry, so nothing is written through a link
 * into prevTree. A directory that is no longer one on either side (the tree changed during the
 * sync) is left as it was, with a warning: its new state is in the journal's next segment.
 */
function copyDirAttributes(setMtime: SetMtimeNs, source: string, dest: string, rels: string[], warnings: string[]): void {
  const changed: string[] = [];
  const root = process.getuid?.() === 0;
  for (const rel of rels) {
    const to = path.join(dest, rel);
    try {
      const s = lstatSync(path.join(source, rel), { bigint: true, throwIfNoEntry: false });
      const d = lstatNow(to);
      if (!s?.isDirectory() || !d?.isDirectory()) {
        changed.push(rel || '.');
        continue;
      }
      const uid = Number(s.uid);
      const gid = Number(s.gid);
      if (d.uid !== uid || d.gid !== gid) {
        // As rsync -o -g: the owner only as root; otherwise the group where the user may set
        // it (a group the user is in), else left as it is, as rsync does.
        if (root) lchownSync(to, uid, gid);
        else if (d.gid !== gid)
          try {
            lchownSync(to, -1, gid);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
          }
      }
      const mode = Number(s.mode) & 0o7777;
      if ((d.mode & 0o7777) !== mode) chmodSync(to, mode);
      const ns = s.mtimeNs;
      const sec = ns / 1_000_000_000n - (ns % 1_000_000_000n < 0n ? 1n : 0n);
      const rc = setMtime(to, Number(sec), Number(ns - sec * 1_000_000_000n));
      if (rc < 0) throw errnoError(rc, `setting the mtime of ${to}`);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') {
        changed.push(rel || '.');
        continue;
      }
      const msg = `setting the attributes of ${to} failed: ${e.message}`;
      throw new BoxbackError(e.code === 'ENOSPC' || e.code === 'EDQUOT' ? 'BOXBACK_ERR_DISK_FULL' : 'BOXBACK_ERR_SYNC_FAILED', msg);
    }
  }
  if (changed.length)
    warnings.push(
      `some directory attributes of ${source} could not be set; the tree changed during the sync (${changed.slice(0, 3).join(', ')})`,
    );
}

export async function syncTreeIncremental(o: IncrementalSyncOptions): Promise<IncrementalSyncResult> {
  const started = Date.now();
  const source = path.resolve(o.source);
  const dest = path.resolve(o.dest);
  const prevTree = path.resolve(o.prevTree);
  const rsync = o.rsync ?? 'rsync';
  const warnings: string[] = [];
  const srcSt = lstatNow(source);
  if (!srcSt?.isDirectory()) throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', `tree source ${source} is missing or not a directory`);
  if (!lstatNow(prevTree)?.isDirectory())
    throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', `previous tree ${prevTree} is missing: an incremental sync needs it`);
  let existing: string[] = [];
  try {
    existing = readdirSync(dest);
  } catch {
    /* not there yet */
  }
  if (o.farm && path.relative(prevTree, path.resolve(o.farm)).split(path.sep)[0] !== '..')
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', 'the prepared farm lies inside the previous tree');
  if (existing.length) throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', `incremental sync target ${dest} is not empty`);

  o.onProgress?.({ step: 'link', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0 });
  let preparedFarm = false;
  if (o.farm && lstatNow(o.farm)?.isDirectory()) {
    try {
      rmdirSync(dest);
    } catch {
      /* not there */
    }
    mkdirSync(path.dirname(dest), { recursive: true });
    renameSync(o.farm, dest);
    preparedFarm = true;
  } else {
    await linkFarm(prevTree, dest, { cp: o.cp, rsync, signal: o.signal });
  }
  const linkMs = Date.now() - started;
  o.signal?.throwIfAborted();

  const roots = saneRoots(reduceToRoots(o.changed), source, dest, o.excludes ?? []);
  if (roots.length === 1 && roots[0] === '') {
    // The whole tree changed: that is a full rsync pass over the link farm's place.
    await fsp.rm(dest, { recursive: true, force: true });
    await fsp.mkdir(dest, { recursive: true });
    roots.splice(0, 1, '.');
  }
  let removed = 0;
  const present: string[] = [];
  o.onProgress?.({ step: 'remove', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: roots.length });
  // Roots are disjoint. Most are new (nothing in dest) or one file: handled on the JS thread;
  // a directory in dest is removed on the JS thread too while it is small (removeSmallTree),
  // a large one by rm -rf.
  const inSource = new Map<string, boolean>();
  const queue: string[] = [];
  for (const r of roots) {
    if (r === '.') continue;
    const abs = path.join(dest, r);
    const st = lstatNow(abs);
    if (st?.isDirectory()) queue.push(abs);
    else if (st) unlinkSync(abs);
    inSource.set(r, !!lstatNow(path.join(source, r)));
  }
  let turn = Date.now();
  const remover = async () => {
    for (let abs = queue.shift(); abs !== undefined; abs = queue.shift()) {
      await removeSmallTree(abs);
      // The JS thread is given back every 10 ms (a journal with thousands of such roots).
      if (Date.now() - turn >= 10) {
        await new Promise(setImmediate);
        turn = Date.now();
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, remover));
  for (const r of roots) {
    if (r === '.' || inSource.get(r)) present.push(r);
    else removed++;
  }
  o.signal?.throwIfAborted();

  const common = ['-a', '--numeric-ids', '--modify-window=-1', ...(o.excludes ?? []).map((x) => `--exclude=${x}`)];
  let filesTransferred = 0;
  let bytesTransferred = 0;
  let linkedFiles: number | undefined = 0;
  let exitCode = 0;
  const copyAt = Date.now();
  let copiedBy: 'process' | 'rsync' | undefined;
  if (present.length) {
    o.onProgress?.({ step: 'copy', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: present.length });
    // In this process (root-copy.ts) where it can do what rsync would; else rsync.
    const own = o.rsync
      ? undefined
      : await copyRoots({ source, dest, prevTree, roots: present, excludes: o.excludes ?? [], setMtime: setMtimeNs, signal: o.signal });
    if (own) {
      copiedBy = 'process';
      ({ filesTransferred, bytesTransferred, linkedFiles, exitCode } = own);
      warnings.push(...own.warnings);
    } else {
      copiedBy = 'rsync';
      const args = [...common, '-r', '--stats', '--delete-missing-args', `--link-dest=${prevTree}`, `${source}/`, `${dest}/`];
      const r = await runRsync(rsync, args, present, o.signal);
      failOn(r, source, warnings);
      exitCode = r.exitCode;
      const n = /Number of regular files transferred: ([\d,]+)/.exec(r.stdout);
      const b = /Total transferred file size: ([\d,]+)/.exec(r.stdout);
      filesTransferred = n ? Number(n[1].replace(/,/g, '')) : 0;
      bytesTransferred = b ? Number(b[1].replace(/,/g, '')) : 0;
      linkedFiles = linkedOf(r.stdout, n);
    }
    o.onProgress?.({
      step: 'copy',
      bytesDone: bytesTransferred,
      bytesTotal: bytesTransferred,
      filesDone: present.length,
      filesTotal: present.length,
    });
  }
  const copyMs = Date.now() - copyAt;
  const dirsAt = Date.now();
  // Directory attributes last: creating and removing entries changed dest's directory mtimes.
  o.onProgress?.({ step: 'dirs', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0 });
  const dirs = ancestorsOf(roots.filter((r) => r !== '.'));
  const setMtime = setMtimeNs;
  if (setMtime) {
    copyDirAttributes(setMtime, source, dest, ['', ...dirs], warnings);
    return result();
  }
  // Never list "." with -d: rsync then copies the top level's entries too, and an entry that
  // only changed its mode would be chmod-ed in place, through the link, in prevTree. The
  // root's own attributes come from a run whose filter leaves out every top-level entry.
  // The two touch different directories (the root is never in `dirs`): run them at once.
  const { execa } = await import('execa');
  const [top, d] = await Promise.all([
    execa(rsync, [...common, '-d', '--exclude=/*', `${source}/`, `${dest}/`], {
      reject: false,
      stdin: 'ignore',
      cancelSignal: o.signal,
      env: { LC_ALL: 'C' },
    }),
    dirs.length
      ? runRsync(rsync, [...common, '-d', '--ignore-missing-args', `${source}/`, `${dest}/`], dirs, o.signal)
      : Promise.resolve({ exitCode: 0, stderr: '', stdout: '' }),
  ]);
  if (top.isCanceled) o.signal?.throwIfAborted();
  failOn({ exitCode: top.exitCode ?? -1, stderr: String(top.stderr ?? ''), stdout: '' }, `${source} (root directory attributes)`, warnings);
  if (d.exitCode === 23 && !/No space left on device|Disk quota exceeded/i.test(d.stderr)) {
    // A listed directory became something else while the sync ran (a live tree): its new
    // state is in the journal's next segment; this backup keeps the directory as it was.
    const last = d.stderr.trim().split('\n').filter(Boolean).slice(-2).join(' / ');
    warnings.push(`some directory attributes of ${source} could not be set; the tree changed during the sync (${last})`);
  } else {
    failOn(d, `${source} (directory attributes)`, warnings);
  }
  exitCode ||= d.exitCode;
  return result();

  function result(): IncrementalSyncResult {
    return {
      roots: roots.length,
      removed,
      preparedFarm,
      filesTransferred,
      linkedFiles,
      bytesTransferred,
      linkMs,
      syncMs: Date.now() - started - linkMs,
      copyMs,
      copiedBy,
      dirsMs: Date.now() - dirsAt,
      durationMs: Date.now() - started,
      exitCode,
      warnings,
    };
  }
}
