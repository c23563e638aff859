/**
 * syncTree for the S3 store: a live tree uploaded as content-addressed blobs, read straight
 * from the source (no copy on the box).
 *
 *   1. walk the source (walk.ts: rsync-style excludes, parents first, names sorted)
 *   2. per regular file: the previous backup's blobs and SHA-256 are reused when its size and
 *      mtime are unchanged and the journal (when trusted) does not name it; otherwise the file
 *      is read: small ones whole (one blob), large ones through the chunker; a blob the store
 *      already holds is not uploaded (BlobWriter)
 *   3. each entry's manifest line goes to `out` in walk order; the file's blob list goes to
 *      the backup's content map (written at commit)
 */
import { readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import type { ManifestFile } from '../../manifest.js';
import { excludeMatcher, walkTree } from '../../walk.js';
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

async function storeFile(ctx: TreeUploadContext, abs: string, size: number, onBytes: (n: number) => void) {
  if (size < Math.min(HASH_WHOLE, ctx.repo.config.chunking.min)) {
    // synchronous: open, fstat, read and close of a small file take microseconds; the promise
    // API's four thread-pool round trips per file cost more than the reads (thousands of files)
    const b = readFileSync(abs);
    onBytes(b.length);
    return ctx.writer.storeBuffer(b);
  }
  return ctx.writer.storeFile(abs, onBytes);
}

export async function uploadTree(ctx: TreeUploadContext, req: TreeSyncRequest): Promise<TreeSyncResult> {
  const changed = req.changed && req.previous && ctx.previous ? new Set(req.changed) : undefined;
  const res: TreeSyncResult = {
    mode: changed ? 'journal' : 'full',
    ...(changed ? {} : { reason: req.fullReason ?? (ctx.previous ? 'no trusted journal: every file looked at' : 'no previous backup') }),
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
  const newBytesBefore = ctx.writer.newBytes;
  await walkTree(req.source, {
    exclude: excludeMatcher(req.excludes ?? []),
    signal: req.signal,
    collect: false,
    onEntry: async (e) => {
      const st = e.st;
      if (!st.isFile() && !st.isDirectory() && !st.isSymbolicLink()) {
        res.warnings.push(`${e.rel}: not a file, directory or symlink; skipped`);
        return;
      }
      const rel = `${req.dir}/${e.rel}`;
      const type: ManifestFile['type'] = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file';
      const f: ManifestFile = {
        path: rel,
        type,
        size: type === 'file' ? st.size : 0,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        mtimeMs: Math.floor(st.mtimeMs),
      };
      if (type === 'symlink') {
        f.target = readlinkSync(e.abs);
        res.files++; // counted as rsync counts them, with the files
      }
      if (type === 'file') {
        prog.filesTotal++;
        prog.bytesTotal += st.size;
        const p = ctx.previous?.files.get(rel);
        const pBlobs = ctx.previous?.contents[rel];
        const reusable =
          p &&
          pBlobs &&
          p.type === 'file' &&
          p.size === f.size &&
          p.mtimeMs === f.mtimeMs &&
          p.sha256 &&
          !changed?.has(e.rel) &&
          pBlobs.every((b) => ctx.repo.index.has(b));
        if (reusable) {
          f.sha256 = p.sha256;
          ctx.contents[rel] = pBlobs;
          res.reusedHashes++;
          res.linkedFiles++;
        } else {
          const before = ctx.writer.newBytes;
          const c = await storeFile(ctx, e.abs, st.size, (n) => {
            res.hashedBytes += n;
            prog.bytesDone += n;
            emit();
          });
          if (c.size !== st.size) res.warnings.push(`${e.rel} changed size while it was read (${st.size} -> ${c.size})`);
          f.size = c.size;
          f.sha256 = c.sha256;
          ctx.contents[rel] = c.blobs;
          if (ctx.writer.newBytes === before) res.linkedFiles++;
        }
        res.files++;
        res.bytes += f.size;
        prog.filesDone++;
      }
      res.entries++;
      await req.out.add(f);
    },
  });
  res.bytesTransferred = ctx.writer.newBytes - newBytesBefore;
  emit(true);
  return res;
}

/** Resolve `rel` inside `dir` (the caller checked rel). */
export function inside(dir: string, rel: string): string {
  return path.join(dir, ...rel.split('/'));
}
