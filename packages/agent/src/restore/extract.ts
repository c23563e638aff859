/**
 * Step EXTRACT: each zip dataset, streamed with yauzl, into a staging sibling of its target
 * (`<target>.boxback-staging-<job>`, same filesystem, so the swap is a rename). Nothing on
 * the box is touched here; a refusal leaves only staging to delete.
 *
 * Safe extraction: no entry may land outside its target.
 *   - refused: absolute names, drive letters, `..` segments, backslashes, NUL, a segment
 *     longer than NAME_MAX or a name longer than PATH_MAX (messages show long names cut)
 *   - refused: device, fifo and socket entries; encrypted entries
 *   - refused: an entry written through (or over) a symlink of the archive; duplicates
 *   - refused: a symlink pointing outside the target, or through another symlink
 *   - stripped, with a warning naming the first few: setuid, setgid and sticky bits of files
 *     (a restore never plants a privilege-raising executable); directories keep setgid and
 *     sticky (shared group directories, /tmp-like ones: no privilege), lose setuid
 *     (meaningless on Linux). Decision and why: docs/operating.md (the restore steps table).
 * Files are created O_EXCL|O_NOFOLLOW in a fresh directory, and symlinks are created only
 * after every file is written, so nothing can be written through one even by mistake.
 * Every entry's CRC-32 is checked as it streams. Nothing is fsynced per file: the
 * orchestrator flushes each staging filesystem once (syncfs) before the swap.
 *
 * An entry of up to 64 KiB (SYNC_WRITE_MAX) is gathered in memory as it inflates, then its
 * file created, written, given its mode, owner and times and closed by synchronous calls, and
 * directories are made and given theirs the same way: each of those was a hand-off to the
 * thread pool and back (six per file), queued behind the hash, inflate and write jobs VERIFY,
 * SYNC_TREES and the database's extraction keep there; a config repository's few dozen small
 * files took 0.3-0.7 s after the database's extraction. On the staging filesystem, with
 * nothing to read, each call returns in microseconds.
 *
 * A `files:` dataset (env files) holds base names; each maps onto the plan's file with
 * that base name and is staged as `<file>.boxback-staging-<job>`.
 */
import {
  closeSync,
  chmodSync,
  constants as C,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  promises as fsp,
  utimesSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { BoxbackError, isInside, readEntryChecked, zipEntries, type ZipEntryInfo } from '@boxback/common';
import type { IdMaps, Ids } from './ownership.js';
import { sibling } from './record.js';
import type { DatasetTarget, DirDatasetTarget, FilesDatasetTarget } from './targets.js';

export interface ExtractOptions {
  jobId: string;
  maps: IdMaps;
  /** Ids for entries that carry none (the owner of what is being replaced). */
  defaultIds?: Ids;
  /** Set owners per entry (false when the CHOWN step will chown the whole dataset). */
  chownEntries: boolean;
  /** Every entry, and the staging root, gets these ids (the dataset's owner, resolved on this box): no chown -R after. */
  ids?: Ids;
  /** Mode for the staging root (the replaced directory's), default 0o755. */
  rootMode?: number;
  signal?: AbortSignal;
  onProgress?: (bytes: number, files: number) => void;
}

export interface ExtractResult {
  entries: number;
  bytes: number;
  strippedModeBits: number;
  warnings: string[];
}

/** The permission bits an entry is restored with (see the header): files 0o777, directories 0o3777. */
export function keptMode(type: ZipEntryInfo['type'], mode: number): number {
  return mode & (type === 'dir' ? 0o3777 : 0o777);
}

/** True when keptMode drops a setuid, setgid or sticky bit the archive asked for. */
export function dropsBits(e: Pick<ZipEntryInfo, 'type' | 'mode'>): boolean {
  return e.mode !== undefined && e.type !== 'symlink' && (e.mode & 0o7000 & ~keptMode(e.type, e.mode)) !== 0;
}

/** The restore's warning for entries whose setuid/setgid/sticky bits were (or would be) dropped. */
export function droppedBitsWarning(archive: string, names: string[]): string {
  const shown = names.slice(0, 3).join(', ') + (names.length > 3 ? `, and ${names.length - 3} more` : '');
  return `${archive}: setuid/setgid/sticky bits dropped from ${names.length} entries (a restore never puts them on files; directories keep setgid and sticky): ${shown}`;
}

/** The entries of a zip whose bits a restore would drop (the dry run's warning); reads names and modes only. */
export async function entriesDroppingBits(d: DatasetTarget): Promise<string[]> {
  const out: string[] = [];
  for await (const e of archiveEntries(d)) if (dropsBits(e)) out.push(e.name);
  return out;
}

/** The entries of dataset `d`'s archive (the stored file, or read straight from a remote store), its source closed after. */
export async function* archiveEntries(d: DatasetTarget): AsyncGenerator<ZipEntryInfo> {
  const a = await d.openArchive();
  try {
    yield* zipEntries(a.src, d.archive);
  } finally {
    await a.close();
  }
}

/** An entry name as a message shows it: at most 120 characters (a crafted name may have thousands). */
const shownName = (name: string): string => (name.length > 120 ? `${name.slice(0, 60)}…${name.slice(-40)} (${name.length} chars)` : name);

const unsafe = (archive: string, entry: string, why: string) =>
  new BoxbackError(
    'BOXBACK_ERR_UNSAFE_ARCHIVE',
    `${archive}: entry "${shownName(entry)}" ${why}; refusing the archive, nothing was changed`,
    { archive, entry: shownName(entry) },
  );

/** Linux's limits: NAME_MAX for one path segment, PATH_MAX for the name inside its target. */
const NAME_MAX = 255;
const PATH_MAX = 4095;

/** The entry's path segments, or a refusal. An empty list means the archive root itself. */
export function entrySegments(archive: string, name: string): string[] {
  if (name.includes('\0')) throw unsafe(archive, name.replace(/\0/g, '\\0'), 'has a NUL byte in its name');
  if (name.includes('\\')) throw unsafe(archive, name, 'has a backslash in its name (a Windows path?)');
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) throw unsafe(archive, name, 'has an absolute path');
  const segs = name.split('/').filter((s) => s !== '' && s !== '.');
  if (segs.includes('..')) throw unsafe(archive, name, "climbs out with '..'");
  const long = segs.find((seg) => Buffer.byteLength(seg) > NAME_MAX);
  if (long) throw unsafe(archive, name, `has a path segment of ${Buffer.byteLength(long)} bytes (a file name holds at most ${NAME_MAX})`);
  if (Buffer.byteLength(name) > PATH_MAX)
    throw unsafe(archive, name, `is ${Buffer.byteLength(name)} bytes long (a path holds at most ${PATH_MAX})`);
  return segs;
}

function mapped(e: ZipEntryInfo, o: ExtractOptions): Ids | undefined {
  if (o.ids) return o.ids;
  if (e.uid !== undefined && e.gid !== undefined) return { uid: o.maps.uid.get(e.uid) ?? e.uid, gid: o.maps.gid.get(e.gid) ?? e.gid };
  return o.defaultIds;
}

/** Check a symlink target: it must resolve inside the root without passing through another symlink. */
function checkLink(archive: string, rel: string, target: string, finalRoot: string, links: Set<string>): void {
  let t = target;
  if (path.isAbsolute(t)) {
    if (!isInside(finalRoot, t)) throw unsafe(archive, rel, `is a symlink to ${target}, outside ${finalRoot}`);
    t = path.relative(path.dirname(path.join(finalRoot, rel)), t) || '.';
  }
  if (t.includes('\0')) throw unsafe(archive, rel, 'is a symlink with a NUL byte');
  const stack = rel.split('/').slice(0, -1);
  const parts = t.split('/').filter((s) => s !== '' && s !== '.');
  for (const [i, p] of parts.entries()) {
    if (p === '..') {
      if (stack.length === 0) throw unsafe(archive, rel, `is a symlink to ${target}, outside the target directory`);
      stack.pop();
    } else {
      stack.push(p);
      if (i < parts.length - 1 && links.has(stack.join('/')))
        throw unsafe(archive, rel, `is a symlink to ${target}, through another symlink`);
    }
  }
}

/** Entries up to this size are inflated into memory and written by synchronous calls (see the header). */
const SYNC_WRITE_MAX = 64 * 1024;

/** Create `file` for entry `e` (O_EXCL|O_NOFOLLOW: a duplicate is refused), write `data`, set its mode, owner and times. */
function writeSmallFile(file: string, e: ZipEntryInfo, o: ExtractOptions, archive: string, data: Buffer): void {
  let fd: number;
  try {
    fd = openSync(file, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ELOOP') throw unsafe(archive, e.name, 'is a duplicate of an earlier entry');
    throw err;
  }
  try {
    for (let off = 0; off < data.length;) off += writeSync(fd, data, off, data.length - off);
    fchmodSync(fd, (e.mode ?? 0o644) & 0o777);
    const ids = o.chownEntries ? mapped(e, o) : undefined;
    if (ids) fchownSync(fd, ids.uid, ids.gid);
    futimesSync(fd, e.mtime, e.mtime);
  } finally {
    closeSync(fd);
  }
}

async function writeEntryFile(
  file: string,
  e: ZipEntryInfo,
  o: ExtractOptions,
  archive: string,
  onBytes: (n: number) => void,
): Promise<void> {
  if (e.size <= SYNC_WRITE_MAX) {
    // readEntryChecked hands on no more than e.size bytes (a longer entry fails there).
    const data = Buffer.allocUnsafe(e.size);
    let n = 0;
    await readEntryChecked(e, archive, (chunk) => {
      n += chunk.copy(data, n);
    });
    writeSmallFile(file, e, o, archive, data);
    onBytes(e.size);
    return;
  }
  let fh;
  try {
    fh = await fsp.open(file, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ELOOP') throw unsafe(archive, e.name, 'is a duplicate of an earlier entry');
    throw err;
  }
  try {
    // The decompressor's chunks (views of its reused buffer: copied before the next one comes)
    // gathered into writes of up to 1 MiB, through one buffer per file.
    const batch = Buffer.allocUnsafe(Math.max(1, Math.min(e.size, 1 << 20)));
    let batched = 0;
    const flush = async () => {
      let off = 0;
      while (off < batched) off += (await fh.write(batch, off, batched - off)).bytesWritten;
      onBytes(batched);
      batched = 0;
    };
    await readEntryChecked(e, archive, async (chunk) => {
      for (let off = 0; off < chunk.length;) {
        const n = chunk.copy(batch, batched, off);
        off += n;
        batched += n;
        if (batched === batch.length) await flush();
      }
    });
    if (batched > 0) await flush();
    await fh.chmod((e.mode ?? 0o644) & 0o777);
    const ids = o.chownEntries ? mapped(e, o) : undefined;
    if (ids) await fh.chown(ids.uid, ids.gid);
    await fh.utimes(e.mtime, e.mtime);
  } finally {
    await fh.close();
  }
}

export async function extractDirDataset(d: DirDatasetTarget, staging: string, o: ExtractOptions): Promise<ExtractResult> {
  const archive = d.archive;
  const res: ExtractResult = { entries: 0, bytes: 0, strippedModeBits: 0, warnings: [] };
  const dropped: string[] = [];
  await fsp.mkdir(staging, { mode: 0o700 });
  const links = new Set<string>();
  const pendingLinks: Array<{ rel: string; target: string; e: ZipEntryInfo }> = [];
  const dirs = new Map<string, ZipEntryInfo | undefined>();
  const ensureDir = (segs: string[]) => {
    for (let i = 1; i <= segs.length; i++) {
      const rel = segs.slice(0, i).join('/');
      if (dirs.has(rel)) continue;
      try {
        mkdirSync(path.join(staging, rel), { mode: 0o700 });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const st = lstatSync(path.join(staging, rel));
      if (!st.isDirectory()) throw unsafe(archive, rel, 'is both a file and a directory');
      dirs.set(rel, undefined);
    }
  };
  for await (const e of archiveEntries(d)) {
    if (o.signal?.aborted) throw o.signal.reason ?? new BoxbackError('BOXBACK_ERR_CANCELLED', 'cancelled');
    const segs = entrySegments(archive, e.name);
    res.entries++;
    if (segs.length === 0) continue;
    const rel = segs.join('/');
    for (let i = 1; i <= segs.length; i++) {
      if (links.has(segs.slice(0, i).join('/')))
        throw unsafe(archive, e.name, `would be written through the symlink ${segs.slice(0, i).join('/')}`);
    }
    if (e.type === 'device' || e.type === 'fifo' || e.type === 'socket') throw unsafe(archive, e.name, `is a ${e.type} file`);
    if (e.encrypted) throw unsafe(archive, e.name, 'is encrypted');
    if (dropsBits(e)) dropped.push(e.name);
    if (e.type === 'dir') {
      ensureDir(segs);
      dirs.set(rel, e);
    } else if (e.type === 'symlink') {
      if (e.size > 4096) throw unsafe(archive, e.name, 'is a symlink with an over-long target');
      const parts: Buffer[] = [];
      await readEntryChecked(e, archive, (c) => {
        parts.push(Buffer.from(c));
      });
      const target = Buffer.concat(parts).toString('utf8');
      if (!target) throw unsafe(archive, e.name, 'is a symlink with an empty target');
      if (dirs.has(rel) || links.has(rel)) throw unsafe(archive, e.name, 'is a duplicate of an earlier entry');
      links.add(rel);
      pendingLinks.push({ rel, target, e });
    } else {
      ensureDir(segs.slice(0, -1));
      await writeEntryFile(path.join(staging, rel), e, o, archive, (n) => {
        res.bytes += n;
        o.onProgress?.(n, 0);
      });
      o.onProgress?.(0, 1);
    }
  }
  for (const l of pendingLinks) checkLink(archive, l.rel, l.target, d.target, links);
  for (const l of pendingLinks) {
    const p = path.join(staging, l.rel);
    ensureDir(l.rel.split('/').slice(0, -1));
    try {
      await fsp.symlink(l.target, p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw unsafe(archive, l.rel, 'is a symlink over an earlier entry');
      throw err;
    }
    const ids = o.chownEntries ? mapped(l.e, o) : undefined;
    if (ids) await fsp.lchown(p, ids.uid, ids.gid);
  }
  // Directory modes last (deepest first), so a read-only directory does not block its own content.
  const ordered = [...dirs.entries()].sort((a, b) => b[0].split('/').length - a[0].split('/').length);
  for (const [rel, e] of ordered) {
    const p = path.join(staging, rel);
    const ids = o.chownEntries ? (e ? mapped(e, o) : (o.ids ?? o.defaultIds)) : undefined;
    if (ids) lchownSync(p, ids.uid, ids.gid);
    chmodSync(p, keptMode('dir', e?.mode ?? 0o755));
    if (e) utimesSync(p, e.mtime, e.mtime);
  }
  const rootIds = o.ids ?? o.defaultIds;
  if (o.chownEntries && rootIds) await fsp.lchown(staging, rootIds.uid, rootIds.gid);
  await fsp.chmod(staging, (o.rootMode ?? 0o755) & 0o777);
  res.strippedModeBits = dropped.length;
  if (dropped.length) res.warnings.push(droppedBitsWarning(archive, dropped));
  return res;
}

export interface StagedFile {
  target: string;
  staging: string;
}

export async function extractFilesDataset(d: FilesDatasetTarget, o: ExtractOptions, staged: StagedFile[]): Promise<ExtractResult> {
  const archive = d.archive;
  const res: ExtractResult = { entries: 0, bytes: 0, strippedModeBits: 0, warnings: [] };
  const dropped: string[] = [];
  const seen = new Set<string>();
  for await (const e of archiveEntries(d)) {
    const segs = entrySegments(archive, e.name);
    res.entries++;
    if (e.type === 'dir') continue;
    if (segs.length !== 1) throw unsafe(archive, e.name, 'is not a plain file name (a files dataset holds base names only)');
    if (e.type !== 'file') throw unsafe(archive, e.name, `is a ${e.type}; a files dataset holds regular files only`);
    if (e.encrypted) throw unsafe(archive, e.name, 'is encrypted');
    const target = d.files.get(segs[0]);
    if (!target) {
      res.warnings.push(`${archive}: ${segs[0]} is not one of dataset ${d.name}'s files on this box; not restored`);
      continue;
    }
    if (seen.has(target)) throw unsafe(archive, e.name, 'is a duplicate of an earlier entry');
    seen.add(target);
    if (dropsBits(e)) dropped.push(e.name);
    const staging = sibling.staging(target, o.jobId);
    await fsp.mkdir(path.dirname(target), { recursive: true });
    let cur: { uid: number; gid: number; mode: number } | undefined;
    try {
      const st = await fsp.lstat(target);
      if (!st.isFile()) throw new BoxbackError('BOXBACK_ERR_RESTORE_FAILED', `${target} is not a regular file; refusing to replace it`);
      cur = { uid: st.uid, gid: st.gid, mode: st.mode & 0o777 };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    staged.push({ target, staging });
    const entry: ZipEntryInfo = { ...e, mode: e.mode ?? cur?.mode ?? 0o644 };
    const opts: ExtractOptions = { ...o, defaultIds: cur ? { uid: cur.uid, gid: cur.gid } : o.defaultIds };
    if (cur) entry.uid = entry.gid = undefined;
    await writeEntryFile(staging, entry, opts, archive, (n) => {
      res.bytes += n;
      o.onProgress?.(n, 0);
    });
    o.onProgress?.(0, 1);
  }
  res.strippedModeBits = dropped.length;
  if (dropped.length) res.warnings.push(droppedBitsWarning(archive, dropped));
  return res;
}
