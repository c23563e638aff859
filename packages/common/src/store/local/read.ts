/**
 * Reading a local store's backups: the manifest's text, a stored file (as a stream, for
 * random reads, or the file itself), a tree copied out (cp when it holds exactly the
 * manifest's entries, else rsync of the listed entries only; then every copied file checked
 * against the manifest, VERIFY_FAILED naming the first few that differ), and verify (every
 * file re-hashed against the manifest, every zip entry CRC-checked, no unlisted file in a
 * tree; `quick`: presence and sizes; `sample`: a random share of the files read, the rest
 * quick; `contentOnly`, a restore's: the hashes only, and of the tree files it fetches next
 * (`checkedOnRead`) their presence and sizes only, fetchTree checking their bytes).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { BoxbackError } from '../../errors.js';
import {
  MANIFEST_FILE,
  lineHead,
  readManifest,
  scanManifestFile,
  verifyBackupDeep,
  verifyBackupDir,
  verifyBackupDirStreamed,
  verifyTreeCopy,
  type Manifest,
  type ManifestFile,
  type VerifyResult,
} from '../../manifest.js';
import { openFileText } from '../../file-text.js';
import { refId } from '../ref.js';
import type { BackupRef, FetchTreeOptions, RandomAccessFile, StoreVerifyOptions } from '../backup-store.js';
import { backupDir, backupDirExists, storedPath } from './layout.js';
import { syncTree } from './rsync.js';
import { COLD_COPY_STREAMS, copyTree, holdsExactly, type EntryType } from './tree-copy.js';
import { CopyCheck, TreeIndex } from './tree-index.js';
import { removeTree } from '../../remove-tree.js';

/** NOT_FOUND when the backup is not there at all. */
async function mustExist(root: string, ref: BackupRef): Promise<void> {
  if (!(await backupDirExists(root, ref))) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `backup ${refId(ref)} is not in the store`);
}

/** The error of a manifest that cannot be read: NOT_FOUND without the backup, else MANIFEST_INVALID. */
async function manifestUnreadable(root: string, ref: BackupRef, file: string, err: unknown): Promise<never> {
  await mustExist(root, ref);
  const code = (err as NodeJS.ErrnoException).code;
  throw new BoxbackError(
    'BOXBACK_ERR_MANIFEST_INVALID',
    `${file}: ${code === 'ENOENT' ? 'missing (not a boxback backup, or an unfinished one)' : code}`,
  );
}

export async function readManifestText(root: string, ref: BackupRef): Promise<string> {
  const file = storedPath(root, ref, MANIFEST_FILE);
  try {
    return await fsp.readFile(file, 'utf8');
  } catch (err) {
    return manifestUnreadable(root, ref, file, err);
  }
}

/** manifest.json as a stream of text (for scanManifest). */
export async function openManifest(root: string, ref: BackupRef): Promise<Readable> {
  const file = storedPath(root, ref, MANIFEST_FILE);
  try {
    return await openFileText(file);
  } catch (err) {
    return manifestUnreadable(root, ref, file, err);
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
  return randomAccessOf(await openStored(root, ref, rel));
}

/** An open local file for random reads (closed again if its stat fails): a local store's stored file, or the agent's archive cache. */
export async function randomAccessOf(fh: fsp.FileHandle): Promise<RandomAccessFile> {
  const { size } = await fh.stat().catch(async (err: unknown) => {
    await fh.close();
    throw err;
  });
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

/** A manifest file's file lines (scanManifestFile's), as an async iterable; stopping early stops the read. */
async function* manifestLines(file: string): AsyncGenerator<string> {
  const queue: string[] = [];
  let wake: (() => void) | undefined;
  let resume: (() => void) | undefined;
  let done = false;
  let stopped = false;
  let failed: unknown;
  const scan = scanManifestFile(file, async (json) => {
    queue.push(json);
    wake?.();
    if (queue.length >= 4096) await new Promise<void>((r) => (resume = r));
    if (stopped) throw new Error('stopped');
  }).then(
    () => undefined,
    (err: unknown) => {
      failed = err;
    },
  );
  void scan.then(() => {
    done = true;
    wake?.();
  });
  try {
    while (true) {
      if (queue.length) {
        const lines = queue.splice(0);
        resume?.();
        resume = undefined;
        yield* lines;
        continue;
      }
      if (done) break;
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
    if (failed) throw failed;
  } finally {
    stopped = true;
    resume?.();
    await scan;
  }
}

/**
 * The entries under tree `dir` a manifest lists (relative to it, in its order): their types,
 * and of files their sizes and SHA-256, of symlinks their targets (tree-index.ts), in one pass.
 */
async function indexOf(manifestFile: string, dir: string, m?: Manifest): Promise<TreeIndex> {
  const prefix = `${dir}/`;
  const index = new TreeIndex(dir);
  if (m) {
    for (const f of m.files) if (f.path.startsWith(prefix)) index.add(f.path.slice(prefix.length), f);
    return index;
  }
  // A line at a time, a tree line parsed (the index copies its path's bytes: nothing of the
  // line is kept).
  for await (const json of manifestLines(manifestFile)) {
    if (!lineHead(json).path.startsWith(prefix)) continue;
    const f = JSON.parse(json) as ManifestFile;
    index.add(f.path.slice(prefix.length), f);
  }
  return index;
}

/** VERIFY_FAILED naming the first few problems of a tree's copy. */
function copyFailed(ref: BackupRef, problems: string[]): BoxbackError {
  return new BoxbackError(
    'BOXBACK_ERR_VERIFY_FAILED',
    `backup ${refId(ref)} failed verification, nothing was changed: ${problems.slice(0, 5).join('; ')}${
      problems.length > 5 ? ` (and ${problems.length - 5} more)` : ''
    }`,
    { problems },
  );
}

/**
 * Then every file of the copy is hashed against its manifest entry (the copy is in the page
 * cache, so the stored file is read from disk once, by the copy) and a symlink's target
 * compared; any difference throws VERIFY_FAILED naming the paths, the copy left for the caller
 * to remove (a restore's staging).
 * Into a fresh `dest` (a restore's staging) the stored tree is copied whole by `cp` at once
 * (tree-copy.ts), the manifest's entries of it read meanwhile, and the copy is walked once
 * (tree-index.ts CopyCheck: hot in the page cache) against them, each entry a cp has finished
 * while the others still copy, the rest after the copy: when it holds exactly the
 * listed entries, each of its listed type, its files are checked in that walk; when not (a file
 * planted in the stored tree, a listed one missing), or when cp failed, the copy is removed and
 * rsync -a --numeric-ids --files-from=<'.' and the manifest's entries of dir> <backup>/<dir>/
 * <dest>/ copies only what the manifest lists (the root's attributes included; a listed '.'
 * would bring the root's own entries too, so those the manifest does not list are excluded by
 * name), checked after by verifyTreeCopy. Before, the stored tree's cold directories were walked
 * on the JS thread before cp could start. Into a `dest` that exists, the stored tree is walked
 * first (holdsExactly) and only then copied, so nothing unlisted is ever put into it.
 * `manifest`: the backup's, whole, as the caller read it; else the manifest file is read a line
 * at a time (the tree's entries kept in a TreeIndex, not as objects).
 */
export async function fetchTree(root: string, ref: BackupRef, dir: string, dest: string, o: FetchTreeOptions = {}): Promise<void> {
  const src = storedPath(root, ref, dir);
  const st = await fsp.lstat(src).catch(() => undefined);
  if (!st?.isDirectory()) {
    await mustExist(root, ref);
    throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `backup ${refId(ref)} has no tree ${dir}/`);
  }
  const manifestFile = path.join(backupDir(root, ref), MANIFEST_FILE);
  const fresh = (await fsp.lstat(dest).catch(() => undefined)) === undefined;
  if (fresh) {
    // Four cp processes at once: a restore reads cold small files, one at a time per process.
    const stop = new AbortController();
    const signal = o.signal ? AbortSignal.any([o.signal, stop.signal]) : stop.signal;
    const indexed = indexOf(manifestFile, dir, o.manifest);
    indexed.catch(() => undefined); // awaited below
    // The parts the copy has finished are checked while it goes on, one after the other.
    let check: CopyCheck | undefined;
    let partFailed: { err: unknown } | undefined;
    let checking = Promise.resolve();
    const onCopied = (rels: string[]) => {
      checking = checking.then(async () => {
        if (partFailed || stop.signal.aborted) return;
        try {
          check ??= new CopyCheck(dest, await indexed, o.signal);
          for (const rel of rels) await check.part(rel);
        } catch (err) {
          partFailed = { err };
        }
      });
    };
    const copied = copyTree(src, dest, signal, undefined, COLD_COPY_STREAMS, onCopied).then(
      () => undefined,
      (err: unknown) => err ?? new Error('cp failed'),
    );
    let index: TreeIndex;
    try {
      index = await indexed;
    } catch (err) {
      // The copy is stopped and waited for (the caller removes the staging).
      stop.abort(err);
      await copied;
      await checking;
      throw err;
    }
    const cpErr = await copied;
    await checking;
    o.signal?.throwIfAborted();
    if (!cpErr) {
      // A part's check that failed (not a difference found: an error reading the copy) fails the fetch, as the whole walk would.
      if (partFailed) throw partFailed.err;
      const r = await (check ?? new CopyCheck(dest, index, o.signal)).finish();
      if (r.exact) {
        if (r.problems.length) throw copyFailed(ref, r.problems);
        return;
      }
    }
    // Not exactly the listed entries (or cp failed on something in the stored tree): only those, by rsync.
    await removeTree(dest);
    await copyOnlyListed(src, dest, index.listed(), o);
    const r = await verifyTreeCopy(index.entries(), dir, dest, { signal: o.signal });
    if (r.problems.length) throw copyFailed(ref, r.problems);
    return;
  }
  const index = await indexOf(manifestFile, dir, o.manifest);
  const listed = index.listed();
  if (await holdsExactly(src, listed)) await copyTree(src, dest, o.signal, undefined, COLD_COPY_STREAMS);
  else await copyOnlyListed(src, dest, listed, o);
  // Each stored tree file is read once, by the copy; its copy is checked (in the page cache now).
  const r = await verifyTreeCopy(index.entries(), dir, dest, { signal: o.signal });
  if (r.problems.length) throw copyFailed(ref, r.problems);
}

/** rsync --files-from the manifest's entries: never an entry it does not list. */
async function copyOnlyListed(src: string, dest: string, listed: Map<string, EntryType>, o: FetchTreeOptions): Promise<void> {
  const top = new Set<string>();
  for (const e of listed.keys()) if (!e.includes('/')) top.add(e);
  const excludes = (await fsp.readdir(src)).filter((n) => !top.has(n)).map(rootExclude);
  const entries = (function* () {
    yield '.';
    yield* listed.keys();
  })();
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
  const share = o.quick ? 0 : Math.max(0, o.sample ?? 1);
  const readData = share >= 1 ? undefined : () => Math.random() < share;
  if (o.contentOnly) {
    // A restore's: the manifest read as the files are checked, never whole in memory (or not
    // at all: `only`, the entries the caller names); no search for unlisted files (fetchTree
    // copies only listed entries, so they do not matter). A tree file the restore fetches next
    // (a path in a tree, named by checkedOnRead) is not looked at here: fetchTree checks its
    // copy's presence, type, size and bytes before it resolves, so each stored tree file is read
    // once and statted once. Archives (no '/') are hashed here: localFile hands out the stored
    // file itself, unchecked.
    const fetched = o.checkedOnRead;
    const skip = fetched ? (f: Pick<ManifestFile, 'path'>) => f.path.includes('/') && fetched(f.path) : undefined;
    if (o.only) {
      const files = skip ? o.only.filter((f) => !skip(f)) : o.only;
      return verifyBackupDir(dir, { files } as Manifest, o.onProgress, 4, readData, o.signal);
    }
    const { manifest, ...r } = await verifyBackupDirStreamed(dir, o.onProgress, 4, readData, o.signal, skip);
    void manifest;
    return r;
  }
  const m = await readManifest(dir);
  const [r, unlisted] = await Promise.all([
    share >= 1 ? verifyBackupDeep(dir, m, o.onProgress, o.signal) : verifyBackupDir(dir, m, o.onProgress, 4, readData, o.signal),
    unlistedTreeFiles(dir, m),
  ]);
  if (!unlisted.length) return r;
  const problems = [...r.problems, ...unlisted];
  return { ...r, ok: false, problems };
}
