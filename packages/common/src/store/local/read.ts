/**
 * Reading a local store's backups: the manifest's text, a stored file (as a stream, for
 * random reads, or the file itself), a tree copied out (cp when it holds exactly the
 * manifest's entries, else rsync of the listed entries only), and verify (every file re-hashed against the manifest, every zip entry CRC-checked,
 * no unlisted file in a tree; `quick`: presence and sizes; `sample`: a random share of the
 * files read, the rest quick; `contentOnly`, a restore's: the hashes only).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { BoxbackError } from '../../errors.js';
import { MANIFEST_FILE, readManifest, verifyBackupDeep, verifyBackupDir, type Manifest, type VerifyResult } from '../../manifest.js';
import { refId } from '../ref.js';
import type { BackupRef, FetchTreeOptions, RandomAccessFile, StoreVerifyOptions } from '../backup-store.js';
import { backupDir, backupDirExists, storedPath } from './layout.js';
import { syncTree } from './rsync.js';
import { copyTree, holdsExactly } from './tree-copy.js';

/** NOT_FOUND when the backup is not there at all. */
async function mustExist(root: string, ref: BackupRef): Promise<void> {
  if (!(await backupDirExists(root, ref))) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `backup ${refId(ref)} is not in the store`);
}

export async function readManifestText(root: string, ref: BackupRef): Promise<string> {
  const file = storedPath(root, ref, MANIFEST_FILE);
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (err) {
    await mustExist(root, ref);
    const code = (err as NodeJS.ErrnoException).code;
    throw new BoxbackError(
      'BOXBACK_ERR_MANIFEST_INVALID',
      `${file}: ${code === 'ENOENT' ? 'missing (not a boxback backup, or an unfinished one)' : code}`,
    );
  }
}

/** A stored file, opened (NOT_FOUND names the backup and the file). */
async function openStored(root: string, ref: BackupRef, rel: string): Promise<fsp.FileHandle> {
  const file = storedPath(root, ref, rel);
  try {
    const fh = await fsp.open(file, 'r');
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `${rel} of backup ${refId(ref)} is not a regular file`);
    }
    return fh;
  } catch (err) {
    if (err instanceof BoxbackError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `backup ${refId(ref)} has no file ${rel}`);
    throw err;
  }
}

export async function openFile(root: string, ref: BackupRef, rel: string, range?: { start?: number; end?: number }): Promise<Readable> {
  const fh = await openStored(root, ref, rel);
  return fh.createReadStream({ start: range?.start, end: range?.end, highWaterMark: 1 << 20 });
}

export async function openRandomAccess(root: string, ref: BackupRef, rel: string): Promise<RandomAccessFile> {
  const fh = await openStored(root, ref, rel);
  const { size } = await fh.stat();
  return {
    size,
    read: (buffer, offset, length, position) => fh.read(buffer, offset, length, position),
    close: () => fh.close(),
  };
}

export async function localFile(root: string, ref: BackupRef, rel: string): Promise<{ path: string; release(): Promise<void> }> {
  const fh = await openStored(root, ref, rel);
  await fh.close();
  return { path: storedPath(root, ref, rel), release: async () => undefined };
}

/** The entries under tree `dir` the manifest lists, relative to it, '.' (the root) first: rsync's --files-from. */
export function listedTreeEntries(m: Manifest, dir: string): string[] {
  const prefix = `${dir}/`;
  const out = ['.'];
  for (const f of m.files) if (f.path.startsWith(prefix)) out.push(f.path.slice(prefix.length));
  return out;
}

/** An rsync exclude matching exactly the root entry `name` (wildcards escaped, as rsync reads them). */
export function rootExclude(name: string): string {
  return `/${/[*?[]/.test(name) ? name.replace(/[*?[\\]/g, '\\$&') : name}`;
}

/**
 * A tree holding exactly the manifest's entries is copied whole by `cp` (tree-copy.ts);
 * any other by rsync -a --numeric-ids --files-from=<'.' and the manifest's entries of dir> <backup>/<dir>/
 * <dest>/: a real copy (no hard links into the store) of exactly what the manifest lists, the
 * root's attributes included; a listed '.' would bring the root's own entries too, so those the
 * manifest does not list are excluded by name: a file planted in a stored tree is never copied.
 * `manifest`: the backup's, as the caller read it (else read here).
 */
export async function fetchTree(root: string, ref: BackupRef, dir: string, dest: string, o: FetchTreeOptions = {}): Promise<void> {
  const src = storedPath(root, ref, dir);
  const st = await fsp.lstat(src).catch(() => undefined);
  if (!st?.isDirectory()) {
    await mustExist(root, ref);
    throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `backup ${refId(ref)} has no tree ${dir}/`);
  }
  const m = o.manifest ?? (await readManifest(backupDir(root, ref)));
  // The usual case, a tree holding exactly its listed entries: cp (tree-copy.ts).
  if (await holdsExactly(src, m, dir)) return copyTree(src, dest, o.signal);
  const entries = listedTreeEntries(m, dir);
  const top = new Set(entries.filter((e) => !e.includes('/')));
  const excludes = (await fsp.readdir(src)).filter((n) => !top.has(n)).map(rootExclude);
  await syncTree({ source: src, dest, signal: o.signal, onProgress: o.onProgress, filesFrom: entries, excludes });
}

async function walkFiles(root: string, rel: string, out: string[]): Promise<void> {
  const dirents = await fsp.readdir(path.join(root, rel), { withFileTypes: true });
  for (const d of dirents) {
    const r = rel ? `${rel}/${d.name}` : d.name;
    if (d.isDirectory()) await walkFiles(root, r, out);
    else out.push(r);
  }
}

/** Files in a tree directory the manifest does not list (a tampered backup; fetchTree never copies them). */
async function unlistedTreeFiles(dir: string, m: Manifest): Promise<string[]> {
  const listed = new Set(m.files.map((f) => f.path));
  const problems: string[] = [];
  for (const t of m.trees ?? []) {
    const found: string[] = [];
    try {
      await walkFiles(dir, t.dir, found);
    } catch (err) {
      problems.push(`${t.dir}/: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      continue;
    }
    for (const f of found) if (!listed.has(f)) problems.push(`${f}: not in the manifest`);
  }
  return problems;
}

export async function verifyLocal(root: string, ref: BackupRef, o: StoreVerifyOptions = {}): Promise<VerifyResult> {
  await mustExist(root, ref);
  const dir = backupDir(root, ref);
  const m = await readManifest(dir);
  const share = o.quick ? 0 : Math.max(0, o.sample ?? 1);
  // contentOnly (a restore): fetchTree copies only listed entries, so unlisted files do not matter.
  const [r, unlisted] = await Promise.all([
    share >= 1 && !o.contentOnly
      ? verifyBackupDeep(dir, m, o.onProgress, o.signal)
      : verifyBackupDir(dir, m, o.onProgress, 4, share >= 1 ? undefined : () => Math.random() < share, o.signal),
    o.contentOnly ? [] : unlistedTreeFiles(dir, m),
  ]);
  if (!unlisted.length) return r;
  const problems = [...r.problems, ...unlisted];
  return { ...r, ok: false, problems };
}
