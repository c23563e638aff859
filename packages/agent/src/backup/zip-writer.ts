/**
 * Writing one dataset archive with yazl, streamed: files are read from disk 1 MiB at a time,
 * deflated on libuv's thread pool, and the zip is hashed (SHA-256) on its way to disk, so
 * no whole file is ever held in memory and the archive is never read back to be checksummed.
 *
 * Layout (GoCD's): a directory dataset's CONTENT is the archive's top level (db.zip holds
 * cruise.mv.db, not h2db/cruise.mv.db); a file dataset stores each file by its base name.
 *
 * Kept: modes (external attributes = st_mode << 16, "made by" Unix), mtimes (DOS time plus
 * the extended-timestamp field yazl writes), symlinks (an entry whose data is the link text,
 * S_IFLNK in its mode, stored uncompressed: what Info-ZIP writes and restores). Empty
 * directories are entries too. Owners are not kept (zip has no place for them): the
 * manifest records the dataset's owner and a restore chowns.
 *
 * Deflate level 1 (fast: the archive is written while the box is busy again); files that
 * are already compressed (jar, zip, gz...) are stored.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import yazl from 'yazl';
import { excludeMatcher, walkTree, type WalkEntry } from './walk.js';

export const DEFAULT_LEVEL = 1;
const STORED_EXT = /\.(jar|war|ear|zip|gz|tgz|bz2|xz|zst|7z|png|jpe?g|gif|webp|mp4|woff2?)$/i;
const READ_CHUNK = 256 * 1024;

export interface ZipSource {
  /** A directory whose content becomes the archive's top level. */
  dir?: string;
  /** Or single files, stored by base name. */
  files?: string[];
}

export interface ZipProgress {
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesTotal: number;
}

export interface ZipOptions {
  excludes?: string[];
  level?: number;
  /** The source cannot change while we read (a staged copy): sizes go in the local headers. */
  stable?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: ZipProgress) => void;
}

export interface ZipResult {
  /** Entries in the archive (files, symlinks, directories). */
  entries: number;
  /** Uncompressed bytes of the files. */
  bytes: number;
  /** Size of the archive file. */
  size: number;
  sha256: string;
}

async function listSource(src: ZipSource, excludes: string[], signal?: AbortSignal): Promise<WalkEntry[]> {
  if (src.dir) return walkTree(src.dir, { exclude: excludeMatcher(excludes), signal });
  const out: WalkEntry[] = [];
  for (const f of src.files ?? []) out.push({ rel: path.basename(f), abs: f, st: await fsp.lstat(f) });
  return out;
}

/**
 * yazl writes its extended-timestamp ("UT") field only in the central directory, but Info-ZIP
 * unzip reads it from the local header, so without this every extracted file would get the
 * DOS time: local time, rounded to 2 seconds. This adds the same field (mtime only, the form
 * Info-ZIP writes) to each local header. yazl counts offsets from the buffers it writes, so
 * the archive stays consistent. Applied once, only if the header has no extra field yet.
 */
let localTimestampsPatched = false;
function patchLocalTimestamps(): void {
  if (localTimestampsPatched) return;
  localTimestampsPatched = true;
  const probe = new yazl.ZipFile();
  probe.addBuffer(Buffer.alloc(0), 'probe');
  const entry = (probe as unknown as { entries: object[] }).entries[0];
  const proto = Object.getPrototypeOf(entry) as { getLocalFileHeader(this: { mtime: Date; forceDosTimestamp: boolean }): Buffer };
  const original = proto.getLocalFileHeader;
  if (typeof original !== 'function') return;
  proto.getLocalFileHeader = function patched() {
    const header = original.call(this);
    if (this.forceDosTimestamp || header.readUInt16LE(28) !== 0) return header;
    const secs = Math.min(0x7fffffff, Math.max(-0x80000000, Math.floor(this.mtime.getTime() / 1000)));
    const ut = Buffer.alloc(9);
    ut.writeUInt16LE(0x5455, 0);
    ut.writeUInt16LE(5, 2);
    ut.writeUInt8(1, 4); // mtime present
    ut.writeInt32LE(secs, 5);
    header.writeUInt16LE(ut.length, 28);
    return Buffer.concat([header, ut]);
  };
}

/** Write `out` as a zip of `src`. On failure the partial file is left for the caller's temp-dir clean-up. */
export async function writeZip(src: ZipSource, out: string, o: ZipOptions = {}): Promise<ZipResult> {
  patchLocalTimestamps();
  const entries = await listSource(src, o.excludes ?? [], o.signal);
  const level = o.level ?? DEFAULT_LEVEL;
  const zip = new yazl.ZipFile();
  const prog: ZipProgress = { bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: entries.length };
  let last = 0;
  const report = (force = false) => {
    const now = Date.now();
    if (o.onProgress && (force || now - last >= 250)) {
      last = now;
      o.onProgress({ ...prog });
    }
  };
  for (const e of entries) if (e.st.isFile()) prog.bytesTotal += e.st.size;

  // Read streams yazl has not finished: on failure their pipes are cut and they would stay
  // open (and keep the store busy) unless destroyed here.
  const open = new Set<ReturnType<typeof createReadStream>>();
  let failed: Error | undefined;
  const fail = (err: Error) => {
    failed ??= err;
    (zip.outputStream as unknown as NodeJS.ReadableStream & { destroy(e?: Error): void }).destroy(err);
  };
  zip.on('error', fail);

  for (const e of entries) {
    const mtime = e.st.mtime;
    const perm = e.st.mode & 0o7777;
    if (e.st.isDirectory()) {
      zip.addEmptyDirectory(`${e.rel}/`, { mtime, mode: 0o040000 | perm });
      prog.filesDone++;
    } else if (e.st.isSymbolicLink()) {
      const target = await fsp.readlink(e.abs);
      zip.addBuffer(Buffer.from(target), e.rel, { mtime, mode: 0o120000 | perm, compress: false });
      prog.filesDone++;
    } else if (e.st.isFile()) {
      const opts: Partial<yazl.ReadStreamOptions> = { mtime, mode: 0o100000 | perm };
      if (o.stable) opts.size = e.st.size;
      if (level === 0 || STORED_EXT.test(e.rel)) opts.compress = false;
      else opts.compressionLevel = level;
      zip.addReadStreamLazy(e.rel, opts, (cb) => {
        const rs = createReadStream(e.abs, { highWaterMark: READ_CHUNK });
        open.add(rs);
        rs.on('close', () => open.delete(rs));
        rs.on('data', (chunk) => {
          prog.bytesDone += (chunk as Buffer).length;
          report();
        });
        rs.on('end', () => {
          prog.filesDone++;
          report();
        });
        rs.on('error', (err) => fail(err));
        cb(null, rs);
      });
    }
    // Sockets, fifos and devices have no place in a backup archive: skipped.
  }
  zip.end();

  const hash = createHash('sha256');
  let size = 0;
  const hasher = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  try {
    await pipeline(zip.outputStream, hasher, createWriteStream(out, { mode: 0o644, highWaterMark: READ_CHUNK }), { signal: o.signal });
  } catch (err) {
    throw failed ?? err;
  } finally {
    for (const rs of open) rs.destroy();
  }
  if (failed) throw failed;
  report(true);
  return { entries: entries.length, bytes: prog.bytesTotal, size, sha256: hash.digest('hex') };
}
