/**
 * Reading stored files back from the S3 store, every byte authenticated:
 *
 *   openFile          blobs in order (each a ranged GET, opened and checked against its id)
 *   openRandomAccess  the blobs covering a read, and ahead of it while reads go forward
 *   localFile         download into a temporary name in the scratch directory, SHA-256
 *                     compared, then renamed: nothing half-checked ever has the final name
 *   fetchTree         the tree rebuilt in a sibling `<dest>.bb-fetch-*` directory (files
 *                     downloaded and hashed, symlinks, then modes, owners and mtimes, deepest
 *                     first), moved into `dest` only once all of it checked; a tampered object
 *                     fails the fetch with `dest` untouched. Files of one blob (nearly every
 *                     file of a CI tree) are fetched by pack: one GET per pack of the span their
 *                     blobs cover, not one per file (readByPack); larger ones blob by blob
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  lutimesSync,
  mkdirSync,
  openSync,
  writeSync,
  writevSync,
} from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { BoxbackError } from '../../errors.js';
import { mapLimit } from '../../limit.js';
import type { ManifestFile } from '../../manifest.js';
import type { RandomAccessFile, TreeSyncProgress } from '../backup-store.js';
import { BlobDecompressor } from './decompress.js';
import { openBlobParts } from './pack.js';
import { packKey, RUN_BYTES, takeBuffer, type BlobLoc, type Repo } from './repo.js';
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

/** Up to `max` bytes of the buffers `parts` (one after another) from byte `from` into `out` at `at`; the bytes copied. */
function copyParts(parts: Buffer[], from: number, out: Buffer, at: number, max: number): number {
  let n = 0;
  for (const p of parts) {
    if (n >= max) break;
    if (from >= p.length) {
      from -= p.length;
      continue;
    }
    n += p.copy(out, at + n, from, Math.min(p.length, from + max - n));
    from = 0;
  }
  return n;
}

/**
 * How far a random-access reader fetches ahead while reads go forward (a zip extracted from the
 * store): at least RANDOM_AHEAD blobs and AHEAD_BYTES of plaintext, at most AHEAD_MAX blobs. By
 * bytes, not only by blobs: an archive is stored cut at its compressed blocks (a few hundred
 * KiB each), and a GET's latency, not its bytes, is what a reader of small blobs waits for.
 */
const RANDOM_AHEAD = 2;
const AHEAD_BYTES = 4 << 20;
const AHEAD_MAX = 8;

/**
 * Reads at any position of a stored file: the blob covering it is read (GCM, its HMAC id
 * checked: every byte handed out is authenticated). While reads move forward blob by blob (an
 * archive extracted straight from the store), the next blobs (RANDOM_AHEAD and AHEAD_BYTES at
 * least) are fetched meanwhile, those lying one after the other in a pack with one GET (up to
 * RUN_BYTES: a GET's fixed cost, a few ms of CPU on this VM, is more than a block's GCM); a
 * blob that repeats in the file (an archive's unchanged block stored once) is fetched once
 * while it is held.
 */
export function randomAccess(repo: Repo, blobs: string[], size: number): RandomAccessFile {
  const offsets: number[] = [];
  const plains: number[] = [];
  let pos = 0;
  for (const b of blobs) {
    offsets.push(pos);
    const n = repo.locate(b)?.plain ?? 0;
    plains.push(n);
    pos += n;
  }
  // each blob as its frames (not joined: a copy of every byte, into fresh pages), by index and by id
  const held = new Map<number, Promise<Buffer[]>>();
  const byId = new Map<string, { p: Promise<Buffer[]>; uses: number; run: Run }>();
  // GET buffers reused run after run; a run's blobs are opened in its buffer (readBlobRunHeld),
  // which goes back to the pool once none of its blobs is held
  const pool: Buffer[] = [];
  interface Run {
    live: number;
    release?: () => void;
  }
  // on the next turn of the loop: a read that awaited one of the run's blobs copies from it first
  const unhold = (run: Run) => {
    if (--run.live === 0 && run.release) setImmediate(run.release);
  };
  let last = -1;
  // blob i, and with it the blobs right after it in its pack up to `upTo` (one GET for all)
  const fetch = (i: number, upTo: number) => {
    const p = held.get(i);
    if (p) return p;
    const same = byId.get(blobs[i]);
    if (same) {
      same.uses++;
      held.set(i, same.p);
      return same.p;
    }
    let n = repo.runLength(blobs, i, Math.max(1, upTo - i + 1), RUN_BYTES);
    for (let k = 1; k < n; k++)
      if (held.has(i + k) || byId.has(blobs[i + k])) {
        n = k; // already fetched or fetching: the run stops before it
        break;
      }
    const ids = blobs.slice(i, i + n);
    const run: Run = { live: n };
    const all = repo.readBlobRunHeld(ids, true, pool);
    all.then(
      (r) => {
        if (run.live === 0)
          setImmediate(r.release); // all dropped before the GET came back
        else run.release = r.release;
      },
      () => undefined, // a blob fetched ahead and never read: its failure is not unhandled
    );
    for (let k = 0; k < n; k++) {
      const pk = all.then((r) => r.blobs[k]);
      pk.catch(() => undefined);
      held.set(i + k, pk);
      byId.set(ids[k], { p: pk, uses: 1, run });
    }
    return held.get(i)!;
  };
  const drop = (k: number) => {
    held.delete(k);
    const id = blobs[k];
    const e = byId.get(id);
    if (e && --e.uses === 0) {
      byId.delete(id);
      unhold(e.run);
    }
  };
  const blob = (i: number) => {
    const forward = i === last + 1 || i === 0;
    const p = fetch(i, forward ? i + AHEAD_MAX : i);
    if (forward) {
      let ahead = 0;
      for (let j = i + 1; j < blobs.length && j <= i + AHEAD_MAX && (j <= i + RANDOM_AHEAD || ahead < AHEAD_BYTES); j++) {
        void fetch(j, i + AHEAD_MAX);
        ahead += plains[j];
      }
    }
    for (const k of [...held.keys()]) if (k < i || k > i + AHEAD_MAX) drop(k);
    last = i;
    return p;
  };
  /** The blob holding byte `at` (offsets ascending). */
  const find = (at: number) => {
    let lo = 0;
    let hi = offsets.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (offsets[mid] <= at) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  return {
    size,
    async read(buffer, offset, length, position) {
      let done = 0;
      while (done < length && position + done < size) {
        const at = position + done;
        const i = find(at);
        const n = copyParts(await blob(i), at - offsets[i], buffer, offset + done, length - done);
        if (n === 0) break;
        done += n;
      }
      return { bytesRead: done };
    },
    async close() {
      held.clear();
      byId.clear();
    },
  };
}

/**
 * Write a stored file to `file` via a temporary name, checking its SHA-256 (and size) first.
 * Each blob's frames are hashed and written with one writev (one thread-pool trip per blob).
 */
export async function downloadChecked(
  repo: Repo,
  blobs: string[],
  file: string,
  want: { sha256?: string; size?: number },
  what: string,
  onBytes?: (n: number) => void,
  ahead = 4,
): Promise<void> {
  const tmp = `${file}.bb-part-${randomBytes(4).toString('hex')}`;
  const h = createHash('sha256');
  let size = 0;
  try {
    const fh = await fsp.open(tmp, 'w', 0o600);
    try {
      // with a SHA-256 to compare, blob ids are not hashed again
      // each blob opened in its GET buffer, written before the next is asked for
      for await (const parts of repo.readContentParts(blobs, ahead, !want.sha256, true)) {
        let n = 0;
        for (const p of parts) {
          h.update(p);
          n += p.length;
        }
        await writeAllv(fh, parts, n);
        size += n;
        onBytes?.(n);
      }
    } finally {
      await fh.close();
    }
    if (want.size !== undefined && size !== want.size) throw tampered(what, `size ${size}, the manifest says ${want.size}`);
    if (want.sha256 && h.digest('hex') !== want.sha256) throw tampered(what, 'SHA-256 does not match the manifest');
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

/** The buffers after the first `n` bytes of `parts` (what a short write left). */
function after(parts: Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < parts.length && n >= parts[i].length) n -= parts[i++].length;
  return i < parts.length && n > 0 ? [parts[i].subarray(n), ...parts.slice(i + 1)] : parts.slice(i);
}

/** At most 512 buffers for one writev (the kernel takes up to IOV_MAX, 1024): the rest goes as after a short write. */
const iov = (parts: Buffer[]) => (parts.length > 512 ? parts.slice(0, 512) : parts);

/** writev of `total` bytes in `parts`, carrying on after a short write. */
async function writeAllv(fh: fsp.FileHandle, parts: Buffer[], total: number): Promise<void> {
  for (let left = total; left > 0;) {
    const { bytesWritten } = await fh.writev(iov(parts));
    left -= bytesWritten;
    parts = after(parts, bytesWritten);
  }
}

/**
 * Owner, mode and mtime of a restored entry. Synchronous: three syscalls of microseconds each,
 * where the promise API's three thread-pool round trips per file cost more than the calls
 * (a CI tree is thousands of small files).
 */
function applyMeta(abs: string, f: ManifestFile): void {
  if (IS_ROOT) lchownSync(abs, f.uid, f.gid);
  if (f.type !== 'symlink') chmodSync(abs, f.mode);
  lutimesSync(abs, mtimeOf(f), mtimeOf(f));
}

/** Owners are restored only as root (asked once: a call per file showed in the restore's profile). */
const IS_ROOT = process.getuid?.() === 0;

/**
 * An entry's mtime in seconds, half a millisecond in: a Date's milliseconds can land a
 * nanosecond short in floating point, and the restored mtime would floor to the millisecond before.
 */
const mtimeOf = (f: ManifestFile) => (Math.floor(f.mtimeMs) + 0.5) / 1000;

/** applyMeta on the open descriptor of a file just written (no path looked up three more times). */
function applyMetaFd(fd: number, f: ManifestFile): void {
  if (IS_ROOT) fchownSync(fd, f.uid, f.gid);
  fchmodSync(fd, f.mode);
  futimesSync(fd, mtimeOf(f), mtimeOf(f));
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

/** A range of one pack read with one GET, and the blobs in it with the files each one is. */
interface Span {
  pack: string;
  start: number;
  end: number;
  blobs: Array<[string, { loc: BlobLoc; files: Array<{ f: ManifestFile; abs: string }> }]>;
}

/** A GET covers blobs of one pack until the next needed one starts this far past the last. */
const SPAN_GAP = 1 << 20;
/**
 * A span is cut before it grows past this (a blob larger than it is a span alone). 2 MiB, not
 * 4: each span in flight holds its buffer while the database archive is extracted beside the
 * trees' fetch (store-s3-performance.md, session 14).
 */
const SPAN_MAX = 2 << 20;
/** Spans read at once, each into a reused buffer of up to SPAN_MAX (its blobs opened one by one). */
const SPANS_IN_FLIGHT = 2;
/** Files of several blobs downloaded at once, and blobs read ahead in each (each blob up to the chunker's 4 MiB max). */
const FILES_IN_FLIGHT = 4;
const BLOBS_AHEAD = 2;

/** A few GET buffers reused span after span (a fresh buffer per GET costs its page faults and the GC's time). */
class BufferPool {
  private readonly free: Buffer[] = [];
  take(n: number): Buffer {
    // the smallest that fits, every buffer at least SPAN_MAX long (a span of one larger blob
    // gets its own size, kept for the next such span)
    return takeBuffer(this.free, n) ?? Buffer.allocUnsafeSlow(Math.max(n, SPAN_MAX));
  }
  give(b: Buffer): void {
    this.free.push(b);
  }
}

/**
 * Files of one blob each, written by pack: for every pack, the spans of it their blobs cover
 * are read with one GET each, every blob opened (GCM, its HMAC id) and each file's size and
 * SHA-256 compared with its manifest entry before it is written. A blob several files share
 * (the same content) is read once.
 */
async function readByPack(
  repo: Repo,
  files: Array<{ f: ManifestFile; abs: string; blob: string }>,
  o: { signal?: AbortSignal; onFile: (bytes: number) => void },
): Promise<void> {
  const byPack = new Map<string, Map<string, { loc: BlobLoc; files: Array<{ f: ManifestFile; abs: string }> }>>();
  for (const x of files) {
    const loc = repo.locate(x.blob);
    if (!loc) throw tampered(`blob ${x.blob.slice(0, 12)}`, 'no index entry names it (the store lost it)');
    let blobs = byPack.get(loc.pack);
    if (!blobs) byPack.set(loc.pack, (blobs = new Map()));
    const b = blobs.get(x.blob) ?? { loc, files: [] };
    b.files.push(x);
    blobs.set(x.blob, b);
  }
  const spans: Span[] = [];
  for (const [pack, blobs] of byPack) {
    const sorted = [...blobs].sort((a, b) => a[1].loc.offset - b[1].loc.offset);
    let cur: (typeof spans)[number] | undefined;
    for (const e of sorted) {
      const { offset, length } = e[1].loc;
      if (!cur || offset > cur.end + SPAN_GAP || offset + length - cur.start > SPAN_MAX)
        spans.push((cur = { pack, start: offset, end: offset + length, blobs: [] }));
      cur.end = Math.max(cur.end, offset + length);
      cur.blobs.push(e);
    }
  }
  const pool = new BufferPool();
  // blobs opened one at a time on this thread: one decoder and output buffer for all of them
  const decompressor = new BlobDecompressor();
  try {
    await mapLimit(spans, SPANS_IN_FLIGHT, async (span) => {
      o.signal?.throwIfAborted();
      const buf = pool.take(span.end - span.start);
      try {
        await readSpan(repo, span, buf, decompressor, o.onFile);
      } finally {
        pool.give(buf);
      }
    });
  } finally {
    decompressor.close();
  }
}

/**
 * One GET of a pack's span into `buf`; each blob opened, checked against its files' manifest
 * entries and written. A blob is decrypted in `buf` itself and decompressed into the
 * decompressor's buffer (openBlobParts' `into`), written before the next one is opened: no
 * buffer per file.
 */
async function readSpan(
  repo: Repo,
  span: Span,
  buf: Buffer,
  decompressor: BlobDecompressor,
  onFile: (bytes: number) => void,
): Promise<void> {
  const raw = await repo.client.get(packKey(span.pack), { start: span.start, end: span.end - 1 }, buf);
  const where = `pack ${span.pack.slice(0, 12)}`;
  if (!raw) throw tampered(where, 'its pack is missing');
  if (raw.length !== span.end - span.start) throw tampered(where, `truncated (${raw.length} of ${span.end - span.start} bytes)`);
  for (const [id, { loc, files: targets }] of span.blobs) {
    // every target's SHA-256 is compared below: the blob id need not be hashed too
    const checkId = targets.some((t) => !t.f.sha256);
    const sealed = raw.subarray(loc.offset - span.start, loc.offset - span.start + loc.length);
    // frames not joined: hashed and written as they are, views of `buf` (or of the decompressor's buffer)
    const parts = openBlobParts(repo.keys, id, sealed, loc.codec, loc.plain, checkId, { decompressor });
    const size = parts.reduce((n, p) => n + p.length, 0);
    if (size !== loc.plain) throw tampered(`blob ${id.slice(0, 12)} in ${where}`, 'wrong length');
    const h = createHash('sha256');
    for (const p of parts) h.update(p);
    const sha = h.digest('hex');
    for (const t of targets) {
      if (size !== t.f.size) throw tampered(t.f.path, `size ${size}, the manifest says ${t.f.size}`);
      if (t.f.sha256 && sha !== t.f.sha256) throw tampered(t.f.path, 'SHA-256 does not match the manifest');
      writeParts(t.abs, parts, t.f); // a small file: one thread-pool trip costs more
      onFile(size);
    }
  }
}

/**
 * A new file (mode 0600) of these buffers in order: one write of them all (writev), then its
 * manifest entry's owner, mode and mtime on the descriptor, synchronously.
 */
function writeParts(file: string, parts: Buffer[], f: ManifestFile): void {
  const fd = openSync(file, 'w', 0o600);
  try {
    for (let left = parts.reduce((n, p) => n + p.length, 0); left > 0;) {
      const n = parts.length === 1 ? writeSync(fd, parts[0]) : writevSync(fd, iov(parts));
      left -= n;
      parts = after(parts, n); // a short write (rare on a local file): carry on from where it stopped
    }
    applyMetaFd(fd, f);
  } finally {
    closeSync(fd);
  }
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
    // every directory made once, synchronously (a thread-pool round trip each costs more than the call)
    const dirs = new Set<string>();
    for (const f of x.entries) if (f.type === 'dir') dirs.add(inside(stage, f.path.slice(strip)));
    const single: Array<{ f: ManifestFile; abs: string; blob: string }> = [];
    const other: Array<{ f: ManifestFile; abs: string; blobs: string[] }> = [];
    const metaDone = new Set<ManifestFile>();
    for (const f of files) {
      const blobs = x.contents[f.path];
      if (!blobs) throw new BoxbackError('BOXBACK_ERR_MANIFEST_INVALID', `${f.path}: in the manifest but not in the backup's content map`);
      const abs = inside(stage, f.path.slice(strip));
      dirs.add(path.dirname(abs));
      if (blobs.length === 1) {
        single.push({ f, abs, blob: blobs[0] });
        metaDone.add(f); // set on the descriptor as it is written (writeParts)
      } else other.push({ f, abs, blobs });
    }
    for (const d of dirs) mkdirSync(d, { recursive: true });
    const fileDone = () => {
      prog.filesDone++;
      x.onProgress?.({ ...prog });
    };
    await readByPack(x.repo, single, {
      signal: x.signal,
      onFile: (n) => {
        prog.bytesDone += n;
        fileDone();
      },
    });
    await mapLimit(other, Math.min(x.concurrency, FILES_IN_FLIGHT), async ({ f, abs, blobs }) => {
      x.signal?.throwIfAborted();
      await downloadChecked(
        x.repo,
        blobs,
        abs,
        f,
        f.path,
        (n) => {
          prog.bytesDone += n;
        },
        BLOBS_AHEAD,
      );
      fileDone();
    });
    for (const f of x.entries) if (f.type === 'symlink') await fsp.symlink(f.target ?? '', inside(stage, f.path.slice(strip)));
    // deepest first, so a directory's mtime is set after its children are in place
    const byDepth = [...x.entries].sort((a, b) => b.path.split('/').length - a.path.split('/').length);
    for (const f of byDepth) if (!metaDone.has(f)) applyMeta(inside(stage, f.path.slice(strip)), f);
    await fsp.mkdir(path.dirname(x.dest), { recursive: true });
    await moveInto(stage, x.dest);
  } catch (err) {
    await fsp.rm(stage, { recursive: true, force: true });
    throw err;
  }
}
