/**
 * syncTree for the S3 store: a live tree uploaded as content-addressed blobs, read straight
 * from the source (no copy on the box).
 *
 *   1. walk the source (walk.ts: rsync-style excludes, parents first, names sorted); or, with
 *      a trusted change journal, only the journal's roots: the rest is the previous backup's
 *      entries as they were (describeJournaled)
 *   2. per regular file: the previous backup's blobs and SHA-256 are reused when its size and
 *      mtime are unchanged and the journal (when trusted) does not name it; otherwise the file
 *      is read: small ones whole (one blob), large ones through the chunker; a blob the store
 *      already holds is not uploaded (BlobWriter)
 *   3. each entry's manifest line goes to `out` in walk order; the file's blob list goes to
 *      the backup's content map (written at commit)
 *
 * A full pass with no previous backup (every file read) reads the tree ahead on a thread of
 * its own when the agent registered one (read-ahead.ts); a journaled pass reads its directory
 * roots ahead, up to ROOTS_AHEAD of them at a time, one thread each.
 */
import { closeSync, lstatSync, openSync, readFileSync, readSync, readlinkSync, type Stats } from 'node:fs';
import path from 'node:path';
import type { ManifestFile } from '../../manifest.js';
import { excludeMatcher, walkOrderOfParts, walkTree } from '../../walk.js';
import { startReadAhead, type ReadAhead } from '../read-ahead.js';
import type { TreeSyncProgress, TreeSyncRequest, TreeSyncResult } from '../backup-store.js';
import type { BlobWriter } from './blob-writer.js';
import type { Repo } from './repo.js';

/** The previous backup's entries and blob lists, to skip unchanged files. */
export interface PreviousTree {
  files: Map<string, ManifestFile>;
  contents: Record<string, string[]>;
}

export interface TreeUploadContext {
  repo: Repo;
  writer: BlobWriter;
  /** rel -> blob ids of this backup (filled here). */
  contents: Record<string, string[]>;
  previous?: PreviousTree;
}

const HASH_WHOLE = 1 << 20;

async function storeFile(pass: Pass, abs: string, size: number, onBytes: (n: number) => void) {
  const { ctx } = pass;
  const small = Math.min(HASH_WHOLE, ctx.repo.config.chunking.min);
  if (size < small) {
    // synchronous: open, read and close of a small file take microseconds; the promise API's
    // thread-pool round trips per file cost more than the reads (thousands of files). Read into
    // the pass's buffer: the blob is stored (hashed, compressed, sealed into the pack) before
    // the pass reads its next file, so nothing is allocated per file for its bytes
    const b = readSmall(abs, (pass.small ??= Buffer.allocUnsafeSlow(small)));
    onBytes(b.length);
    return ctx.writer.storeBuffer(b);
  }
  return ctx.writer.storeFile(abs, onBytes);
}

/** A small file's bytes: a view of `buf`, or a buffer of their own when the file grew past it since its lstat. */
function readSmall(abs: string, buf: Buffer): Buffer {
  const fd = openSync(abs, 'r');
  try {
    let n = 0;
    while (n < buf.length) {
      const r = readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) return buf.subarray(0, n);
      n += r;
    }
  } finally {
    closeSync(fd);
  }
  return readFileSync(abs); // it fills the buffer: read it whole
}

/** One pass over a tree: its result, progress and the journal's changed paths (a file named there is read again). */
interface Pass {
  ctx: TreeUploadContext;
  req: TreeSyncRequest;
  res: TreeSyncResult;
  prog: TreeSyncProgress;
  changed?: Set<string>;
  emit(force?: boolean): void;
  /** The buffer its small files are read into (storeFile), one per pass: passes run side by side. */
  small?: Buffer;
}

/**
 * The manifest entry of one source entry (`rel` relative to the tree's source), its content
 * stored when it is a file: the previous backup's blobs and SHA-256 are reused when its size and
 * mtime are unchanged, the journal does not name it and the index still holds its blobs; else it
 * is read. undefined for what a tree does not hold (a warning says so).
 */
async function describeEntry(pass: Pass, rel: string, abs: string, st: Stats): Promise<ManifestFile | undefined> {
  const { ctx, req, res, prog } = pass;
  if (!st.isFile() && !st.isDirectory() && !st.isSymbolicLink()) {
    res.warnings.push(`${rel}: not a file, directory or symlink; skipped`);
    return undefined;
  }
  const full = `${req.dir}/${rel}`;
  const type: ManifestFile['type'] = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file';
  const f: ManifestFile = {
    path: full,
    type,
    size: type === 'file' ? st.size : 0,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    mtimeMs: Math.floor(st.mtimeMs),
  };
  if (type === 'symlink') f.target = readlinkSync(abs);
  if (type !== 'file') return f;
  prog.filesTotal++;
  prog.bytesTotal += st.size;
  const p = ctx.previous?.files.get(full);
  const pBlobs = ctx.previous?.contents[full];
  const reusable =
    p &&
    pBlobs &&
    p.type === 'file' &&
    p.size === f.size &&
    p.mtimeMs === f.mtimeMs &&
    p.sha256 &&
    !pass.changed?.has(rel) &&
    pBlobs.every((b) => ctx.repo.index.has(b));
  if (reusable) {
    f.sha256 = p.sha256;
    ctx.contents[full] = pBlobs;
    res.reusedHashes++;
    res.linkedFiles++;
  } else {
    const before = ctx.writer.newBytes;
    const c = await storeFile(pass, abs, st.size, (n) => {
      res.hashedBytes += n;
      prog.bytesDone += n;
      pass.emit();
    });
    if (c.size !== st.size) res.warnings.push(`${rel} changed size while it was read (${st.size} -> ${c.size})`);
    f.size = c.size;
    f.sha256 = c.sha256;
    ctx.contents[full] = c.blobs;
    if (ctx.writer.newBytes === before) res.linkedFiles++;
  }
  prog.filesDone++;
  return f;
}

/** An entry goes to the manifest: counted as rsync counts (symlinks with the files). */
async function output(pass: Pass, f: ManifestFile): Promise<void> {
  if (f.type !== 'dir') {
    pass.res.files++;
    pass.res.bytes += f.size;
  }
  pass.res.entries++;
  await pass.req.out.add(f);
}

export async function uploadTree(ctx: TreeUploadContext, req: TreeSyncRequest): Promise<TreeSyncResult> {
  const newBytesBefore = ctx.writer.newBytes;
  let reason = req.fullReason ?? (ctx.previous ? 'no trusted journal: every file looked at' : 'no previous backup');
  let res: TreeSyncResult | undefined;
  if (req.changed && req.previous && ctx.previous) {
    const pass = newPass(ctx, req, 'journal', new Set(req.changed));
    try {
      const entries = await describeJournaled(pass, ctx.previous, req.changed);
      for (const f of entries) await output(pass, f);
      res = pass.res;
    } catch (err) {
      req.signal?.throwIfAborted();
      if (pass.res.entries > 0) throw err; // lines already written: no second pass into the same part
      reason = `the journaled sync failed (${(err as Error).message})`;
    }
  }
  if (!res) {
    const pass = newPass(ctx, req, 'full');
    pass.res.reason = reason;
    // with no previous backup every file is read: the tree is read ahead on a thread of its own
    // (read-ahead.ts); with one, most files are passed over unread and nothing is read ahead
    const ahead = ctx.previous ? undefined : startReadAhead(req.source);
    try {
      await walkTree(req.source, {
        exclude: excludeMatcher(req.excludes ?? []),
        signal: req.signal,
        collect: false,
        onEntry: async (e) => {
          const f = await describeEntry(pass, e.rel, e.abs, e.st);
          if (f) await output(pass, f);
          if (ahead && e.st.isFile()) ahead.consumed(e.st.size);
        },
      });
    } finally {
      ahead?.stop();
    }
    pass.emit(true);
    res = pass.res;
  }
  res.bytesTransferred = ctx.writer.newBytes - newBytesBefore;
  return res;
}

function newPass(ctx: TreeUploadContext, req: TreeSyncRequest, mode: 'full' | 'journal', changed?: Set<string>): Pass {
  const res: TreeSyncResult = {
    mode,
    warnings: [],
    entries: 0,
    files: 0,
    bytes: 0,
    linkedFiles: 0,
    hashedBytes: 0,
    reusedHashes: 0,
    bytesTransferred: 0,
  };
  const prog: TreeSyncProgress = { bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0, message: 'uploading new content' };
  let lastEmit = 0;
  const emit = (force = false) => {
    if (req.onProgress && (force || Date.now() - lastEmit > 200)) {
      lastEmit = Date.now();
      req.onProgress({ ...prog });
    }
  };
  return { ctx, req, res, prog, changed, emit };
}

/**
 * A journaled pass (the change journal trusted, the previous backup's tree loaded): no walk of
 * the tree. The previous backup's entries of this tree are kept as they are, except
 *
 *   - under a root (the changed paths, each promoted to its highest ancestor that is not a
 *     directory both in the source and in the previous tree, as the local store's incremental
 *     sync does; a root under an excluded directory dropped): described afresh from the source
 *     (gone from the source: gone from the backup), a directory root walked with the excludes
 *   - the roots' ancestor directories (their entries changed, so their mtimes): lstat-ed again
 *   - a kept file whose blobs the index no longer holds (a prune): read again
 *
 * and all of it sorted into walk order: the same entries, in the same order, as a full pass
 * over the same source gives (test/s3/s3-store.test.ts compares them). Throws when the journal
 * names the whole tree, or an ancestor vanished meanwhile: the caller then walks.
 */
async function describeJournaled(pass: Pass, previous: PreviousTree, changed: string[]): Promise<ManifestFile[]> {
  const { req } = pass;
  const prefix = `${req.dir}/`;
  const prevDirs = new Set<string>();
  for (const [p, f] of previous.files) if (f.type === 'dir' && p.startsWith(prefix)) prevDirs.add(p.slice(prefix.length));
  const exclude = excludeMatcher(req.excludes ?? []);
  const isDir = (rel: string) => lstatSync(path.join(req.source, rel), { throwIfNoEntry: false })?.isDirectory() === true;
  const bothDirs = new Map<string, boolean>();
  const roots = new Set<string>();
  for (const raw of changed) {
    const p = path.posix.normalize(raw.split(path.sep).join('/')).replace(/^\/+|\/+$/g, '');
    if (p === '' || p === '.' || p === '..' || p.startsWith('../')) throw new Error('the journal names the whole tree');
    const parts = p.split('/');
    let root: string | undefined = p;
    for (let i = 1; i < parts.length; i++) {
      const anc = parts.slice(0, i).join('/');
      if (exclude(anc, true)) {
        root = undefined; // under an excluded directory: never in the tree
        break;
      }
      let both = bothDirs.get(anc);
      if (both === undefined) bothDirs.set(anc, (both = prevDirs.has(anc) && isDir(anc)));
      if (!both) {
        root = anc;
        break;
      }
    }
    if (root !== undefined) roots.add(root);
  }
  const under = (rel: string): boolean => {
    for (let i = rel.indexOf('/'); i !== -1; i = rel.indexOf('/', i + 1)) if (roots.has(rel.slice(0, i))) return true;
    return false;
  };
  for (const r of [...roots]) if (under(r)) roots.delete(r); // a root under another is described with it
  const covered = (rel: string): boolean => roots.has(rel) || under(rel);
  const ancestors = new Set<string>();
  for (const r of roots) for (let i = r.indexOf('/'); i !== -1; i = r.indexOf('/', i + 1)) ancestors.add(r.slice(0, i));

  // the roots are read in this order: their directories and files read ahead (a few at a
  // time) while the previous entries are gone through and the roots before them are read
  const order = [...roots];
  const ahead = rootsAhead(req.source, order, ROOTS_AHEAD);
  try {
    return await describeRoots(pass, previous, order, ahead, covered, ancestors, exclude);
  } finally {
    ahead.stop();
  }
}

/** The journaled pass once its roots are known: the previous entries kept, the roots described afresh, in walk order. */
async function describeRoots(
  pass: Pass,
  previous: PreviousTree,
  roots: string[],
  ahead: RootsAhead,
  covered: (rel: string) => boolean,
  ancestors: Set<string>,
  exclude: (rel: string, dir: boolean) => boolean,
): Promise<ManifestFile[]> {
  const { req, ctx } = pass;
  const prefix = `${req.dir}/`;
  const out: Array<{ f: ManifestFile; parts: string[] }> = [];
  const keep = (f: ManifestFile) => out.push({ f, parts: f.path.split('/') });
  const again: string[] = [];
  for (const [p, f] of previous.files) {
    if (!p.startsWith(prefix)) continue;
    const rel = p.slice(prefix.length);
    if (covered(rel)) continue;
    if (ancestors.has(rel)) {
      const st = lstatSync(path.join(req.source, rel)); // throws if it vanished: the caller walks
      if (!st.isDirectory()) throw new Error(`${rel} is no longer a directory`);
      keep({ ...f, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: Math.floor(st.mtimeMs) });
      continue;
    }
    if (f.type === 'file') {
      const blobs = previous.contents[p];
      if (!f.sha256 || !blobs || !blobs.every((b) => ctx.repo.index.has(b))) {
        again.push(rel);
        continue;
      }
      ctx.contents[p] = blobs;
      pass.res.reusedHashes++;
      pass.res.linkedFiles++;
    }
    keep(f);
  }
  for (const rel of again) {
    const abs = path.join(req.source, rel);
    const st = lstatSync(abs);
    const f = await describeEntry(pass, rel, abs, st);
    if (f) keep(f);
  }
  for (const [i, root] of roots.entries()) {
    const abs = path.join(req.source, root);
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (!st || exclude(root, st.isDirectory())) {
      ahead.done(i);
      continue; // gone (or excluded): not in this backup
    }
    const f = await describeEntry(pass, root, abs, st);
    if (f) keep(f);
    if (f?.type === 'dir')
      await walkTree(abs, {
        exclude: (r, dir) => exclude(`${root}/${r}`, dir),
        signal: req.signal,
        collect: false,
        onEntry: async (e) => {
          const g = await describeEntry(pass, `${root}/${e.rel}`, e.abs, e.st);
          if (g) keep(g);
          if (e.st.isFile()) ahead.consumed(i, e.st.size);
        },
      });
    ahead.done(i);
  }
  pass.emit(true);
  return out.sort((a, b) => walkOrderOfParts(a.parts, b.parts)).map((x) => x.f);
}

/**
 * Directory roots read ahead at once (one read-ahead thread each, read-ahead.ts): a journaled
 * pass's roots are a day's new runs, each a small directory, read with a cold page cache; on
 * the JS thread each readdir, lstat and read waited for the disk in turn (the bench's small
 * incremental: ~0.4-0.8 s of its JS thread at load 8), while the database's archive waited
 * for that thread.
 */
export const ROOTS_AHEAD = 8;

interface RootsAhead {
  /** The pass has read this many more bytes of root `i`'s files. */
  consumed(i: number, bytes: number): void;
  /** Root `i` is described: its read-ahead stopped, the next root's started. */
  done(i: number): void;
  /** Every read-ahead stopped (idempotent). */
  stop(): void;
}

/** Read-aheads of `roots` (under `source`), in order, at most `n` at a time; none when no read-ahead is registered. */
function rootsAhead(source: string, roots: string[], n: number): RootsAhead {
  const running = new Map<number, ReadAhead>();
  let next = 0;
  let stopped = false;
  const fill = () => {
    while (!stopped && next < roots.length && running.size < n) {
      const i = next++;
      // a root that is a file is read at once by the pass: only directories are worth a thread
      if (!lstatSync(path.join(source, roots[i]), { throwIfNoEntry: false })?.isDirectory()) continue;
      const a = startReadAhead(path.join(source, roots[i]));
      if (!a) {
        stopped = true; // none registered (or it failed): none for the others either
        return;
      }
      running.set(i, a);
    }
  };
  fill();
  return {
    consumed: (i, bytes) => running.get(i)?.consumed(bytes),
    done: (i) => {
      running.get(i)?.stop();
      running.delete(i);
      fill();
    },
    stop: () => {
      stopped = true;
      for (const a of running.values()) a.stop();
      running.clear();
    },
  };
}

/** Resolve `rel` inside `dir` (the caller checked rel). */
export function inside(dir: string, rel: string): string {
  return path.join(dir, ...rel.split('/'));
}
