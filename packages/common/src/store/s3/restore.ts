/**
 * Reading stored files back from the S3 store, every byte authenticated:
 *
 *   openFile          blobs in order (each a ranged GET, opened and checked against its id)
 *   openRandomAccess  the blobs covering a read, the last one kept for the next read
 *   localFile         download into a temporary name in the scratch directory, SHA-256
 *                     compared, then renamed: nothing half-checked ever has the final name
 *   fetchTree         the tree rebuilt in a sibling `<dest>.bb-fetch-*` directory (files
 *                     downloaded in parallel and hashed, symlinks, then modes, owners and mtimes,
 *                     deepest first), moved into `dest` only once all of it checked; a tampered
 *                     object fails the fetch with `dest` untouched
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BoxbackError } from '../../errors.js';
import { mapLimit } from '../../limit.js';
import type { ManifestFile } from '../../manifest.js';
import type { RandomAccessFile, TreeSyncProgress } from '../backup-store.js';
import type { Repo } from './repo.js';
import { tampered } from './sealed.js';
import { inside } from './tree-upload.js';

/** A stored file's plaintext from byte `start` to `end` (inclusive) as a stream. */
export function blobStream(repo: Repo, blobs: string[], range: { start?: number; end?: number } = {}): Readable {
  const start = range.start ?? 0;
  const end = range.end ?? Infinity;
  async function* gen(): AsyncGenerator<Buffer> {
    let pos = 0;
    let first = 0;
    while (first < blobs.length) {
      const n = repo.locate(blobs[first])?.plain ?? 0;
      if (pos + n > start) break;
      pos += n;
      first++;
    }
    for await (const b of repo.readContent(blobs.slice(first))) {
      const from = Math.max(0, start - pos);
      const to = Math.min(b.length, end + 1 - pos);
      if (to > from) yield b.subarray(from, to);
      pos += b.length;
      if (pos > end) return;
    }
  }
  return Readable.from(gen(), { objectMode: false });
}

export function randomAccess(repo: Repo, blobs: string[], size: number): RandomAccessFile {
  const offsets: number[] = [];
  let pos = 0;
  for (const b of blobs) {
    offsets.push(pos);
    pos += repo.locate(b)?.plain ?? 0;
  }
  let cached: { i: number; data: Buffer } | null = null;
  const blob = async (i: number) => {
    if (cached?.i !== i) cached = { i, data: await repo.readBlob(blobs[i]) };
    return cached.data;
  };
  return {
    size,
    async read(buffer, offset, length, position) {
      let done = 0;
      while (done < length && position + done < size) {
        const at = position + done;
        let i = offsets.length - 1;
        while (i > 0 && offsets[i] > at) i--;
        const data = await blob(i);
        const n = data.copy(buffer, offset + done, at - offsets[i], Math.min(data.length, at - offsets[i] + length - done));
        if (n === 0) break;
        done += n;
      }
      return { bytesRead: done };
    },
    async close() {
      cached = null;
    },
  };
}

/** Write a stored file to `file` via a temporary name, checking its SHA-256 (and size) first. */
export async function downloadChecked(
  repo: Repo,
  blobs: string[],
  file: string,
  want: { sha256?: string; size?: number },
  what: string,
  onBytes?: (n: number) => void,
): Promise<void> {
  const tmp = `${file}.bb-part-${randomBytes(4).toString('hex')}`;
  const h = createHash('sha256');
  let size = 0;
  try {
    await pipeline(
      Readable.from(repo.readContent(blobs)),
      async function* (src: AsyncIterable<Buffer>) {
        for await (const b of src) {
          h.update(b);
          size += b.length;
          onBytes?.(b.length);
          yield b;
        }
      },
      createWriteStream(tmp, { mode: 0o600 }),
    );
    if (want.size !== undefined && size !== want.size) throw tampered(what, `size ${size}, the manifest says ${want.size}`);
    if (want.sha256 && h.digest('hex') !== want.sha256) throw tampered(what, 'SHA-256 does not match the manifest');
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

async function applyMeta(abs: string, f: ManifestFile): Promise<void> {
  if (process.getuid?.() === 0) await fsp.lchown(abs, f.uid, f.gid);
  if (f.type !== 'symlink') await fsp.chmod(abs, f.mode);
  // seconds as a number, half a millisecond in: a Date's milliseconds can land a nanosecond
  // short in floating point, and the restored mtime would floor to the millisecond before
  const t = (Math.floor(f.mtimeMs) + 0.5) / 1000;
  await fsp.lutimes(abs, t, t);
}

/** Move everything in `from` into `dest` (created or empty: one rename; else entry by entry). */
async function moveInto(from: string, dest: string): Promise<void> {
  const existing = await fsp.readdir(dest).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? null : Promise.reject(err)));
  if (existing === null || existing.length === 0) {
    if (existing) await fsp.rmdir(dest);
    await fsp.rename(from, dest);
    return;
  }
  for (const name of await fsp.readdir(from)) {
    await fsp.rm(path.join(dest, name), { recursive: true, force: true });
    await fsp.rename(path.join(from, name), path.join(dest, name));
  }
  await fsp.rm(from, { recursive: true, force: true });
}

export interface FetchTreeInput {
  repo: Repo;
  /** Manifest entries of the tree (paths start with `${dir}/`). */
  entries: ManifestFile[];
  contents: Record<string, string[]>;
  dir: string;
  dest: string;
  concurrency: number;
  signal?: AbortSignal;
  onProgress?: (p: TreeSyncProgress) => void;
}

export async function fetchTreeInto(x: FetchTreeInput): Promise<void> {
  const stage = `${x.dest.replace(/\/+$/, '')}.bb-fetch-${randomBytes(4).toString('hex')}`;
  const strip = x.dir.length + 1;
  const files = x.entries.filter((f) => f.type === 'file');
  const prog: TreeSyncProgress = {
    bytesDone: 0,
    bytesTotal: files.reduce((s, f) => s + f.size, 0),
    filesDone: 0,
    filesTotal: files.length,
    message: 'downloading',
  };
  await fsp.mkdir(stage, { recursive: true });
  try {
    for (const f of x.entries) if (f.type === 'dir') await fsp.mkdir(inside(stage, f.path.slice(strip)), { recursive: true });
    await mapLimit(files, x.concurrency, async (f) => {
      x.signal?.throwIfAborted();
      const blobs = x.contents[f.path];
      if (!blobs) throw new BoxbackError('BOXBACK_ERR_MANIFEST_INVALID', `${f.path}: in the manifest but not in the backup's content map`);
      const abs = inside(stage, f.path.slice(strip));
      await fsp.mkdir(path.dirname(abs), { recursive: true });
      await downloadChecked(x.repo, blobs, abs, f, f.path, (n) => {
        prog.bytesDone += n;
      });
      prog.filesDone++;
      x.onProgress?.({ ...prog });
    });
    for (const f of x.entries) if (f.type === 'symlink') await fsp.symlink(f.target ?? '', inside(stage, f.path.slice(strip)));
    // deepest first, so a directory's mtime is set after its children are in place
    const byDepth = [...x.entries].sort((a, b) => b.path.split('/').length - a.path.split('/').length);
    for (const f of byDepth) await applyMeta(inside(stage, f.path.slice(strip)), f);
    await fsp.mkdir(path.dirname(x.dest), { recursive: true });
    await moveInto(stage, x.dest);
  } catch (err) {
    await fsp.rm(stage, { recursive: true, force: true });
    throw err;
  }
}
