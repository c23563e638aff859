/**
 * Reading zip archives one entry at a time with yauzl (streaming, lazy entries), for every
 * check of a stored backup (agent verify, restore VERIFY and EXTRACT, controller verify and
 * import: each entry's size and CRC-32) and the restore's extract step. Names are decoded here but
 * NOT validated: extract.ts decides what is safe, so that a crafted name is reported as
 * an unsafe archive rather than as a read error.
 *
 * Unix facts come from where Info-ZIP and yazl put them: the mode in the high 16 bits of
 * the external attributes (when "version made by" says Unix), the owner in the Info-ZIP
 * "ux" extra field (0x7875). Java's zips (GoCD's) have neither.
 *
 * A zip is read from a local file or from any random-access source (`ZipSource`): a restore
 * from a remote store extracts an archive straight from the store (`openRandomAccess`, every
 * blob authenticated and checked against its id as it is read), with no download of it first.
 */
import { promises as fsp } from 'node:fs';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import yauzl from 'yauzl';
import { BoxbackError } from './errors.js';
import type { Manifest } from './manifest.js';
import { mapLimit } from './limit.js';
import type { RandomAccessFile } from './store/backup-store.js';
import { ZlibPass } from './zlib-pass.js';

export type EntryType = 'file' | 'dir' | 'symlink' | 'device' | 'fifo' | 'socket';

export interface ZipEntryInfo {
  /** Decoded name as stored ('/'-separated, a directory ends with '/'). */
  name: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (st_mode & 0o7777); undefined when the zip has none. */
  mode: number | undefined;
  uid: number | undefined;
  gid: number | undefined;
  size: number;
  crc32: number;
  mtime: Date;
  encrypted: boolean;
  /**
   * Open the entry's decompressed data. A chunk may be a view of a buffer the next chunk is
   * read or inflated into: use it (or copy it) before asking for the next one.
   */
  open(): Promise<AsyncIterable<Buffer>>;
}

const S_IFMT = 0o170000;
const TYPES: Record<number, EntryType> = {
  0o100000: 'file',
  0o040000: 'dir',
  0o120000: 'symlink',
  0o020000: 'device',
  0o060000: 'device',
  0o010000: 'fifo',
  0o140000: 'socket',
};

function unixOwner(extra: Array<{ id: number; data: Buffer }>): { uid?: number; gid?: number } {
  const ux = extra.find((f) => f.id === 0x7875);
  if (!ux || ux.data.length < 3 || ux.data[0] !== 1) return {};
  const readId = (off: number): [number | undefined, number] => {
    const n = ux.data[off];
    if (n === undefined || off + 1 + n > ux.data.length) return [undefined, off + 1];
    let v = 0;
    for (let i = n - 1; i >= 0; i--) v = v * 256 + ux.data[off + 1 + i];
    return [n <= 4 ? v : undefined, off + 1 + n];
  };
  const [uid, next] = readId(1);
  const [gid] = readId(next);
  return { uid, gid };
}

/** An entry's stored bytes are read this much at a time (one buffer per entry, reused). */
const READ_CHUNK = 1 << 20;
/** Compressed bytes go to inflate this much at a time: their output mostly fits INFLATE_OUT. */
const INFLATE_IN = 128 * 1024;
const INFLATE_OUT = 1 << 20;

/**
 * Where a zip is read from: a local file's path, or a random-access source of `size` bytes
 * (a stored file read through its store: BackupStore.openRandomAccess). The caller closes a source.
 */
export type ZipSource = string | RandomAccessFile;

/**
 * A local zip of up to this size is read whole, in one read, and its entries' headers and data
 * taken from memory: read from the file, each entry cost five or six thread-pool round trips
 * (its central directory record in two reads, its local header, an open, a read and a close of
 * its data), each queued behind a restore's hash, inflate and write jobs. A config repository's
 * zip (a few dozen small files) took 0.3-0.7 s to extract that way beside a restore's other work.
 */
const WHOLE_ZIP_MAX = 1 << 20;
/** An entry of a zip read whole, up to this size compressed and inflated, is inflated on the JS thread in one call. */
const SYNC_INFLATE_MAX = 64 * 1024;

/** A source as read here: a zip of up to WHOLE_ZIP_MAX bytes is its content. */
type Source = ZipSource | Buffer;

/** The whole of the local zip `file` when it holds at most WHOLE_ZIP_MAX bytes, else undefined. */
async function wholeIfSmall(file: string): Promise<Buffer | undefined> {
  const fh = await fsp.open(file, 'r');
  try {
    const { size } = await fh.stat();
    if (size > WHOLE_ZIP_MAX) return undefined;
    const buf = Buffer.allocUnsafe(size);
    let n = 0;
    while (n < size) {
      const { bytesRead } = await fh.read(buf, n, size - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    return buf.subarray(0, n);
  } finally {
    await fh.close();
  }
}

async function* once(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}

/** An entry's raw bytes taken from a zip read whole; small ones inflated in one call (else, or on any error, through inflateRange, which reports a damaged entry as it always does). */
function dataFromMemory(zip: Buffer, start: number, entry: yauzl.Entry, stored: boolean): AsyncIterable<Buffer> {
  const raw = zip.subarray(start, start + entry.compressedSize);
  if (raw.length < entry.compressedSize)
    throw new Error(`unexpected end of file ${entry.compressedSize - raw.length} bytes before the entry's end`);
  if (stored) return once(raw);
  if (raw.length <= SYNC_INFLATE_MAX && entry.uncompressedSize <= SYNC_INFLATE_MAX) {
    try {
      return once(zlib.inflateRawSync(raw, { maxOutputLength: entry.uncompressedSize + 1 }));
    } catch {
      /* damaged, or more than it says: the streamed inflate below reports it */
    }
  }
  return inflateRange(once(raw));
}

/** `size` bytes of `src` from `start`, through one buffer: each chunk is a view of it, valid until the next. */
async function* readRange(src: ZipSource, start: number, size: number): AsyncGenerator<Buffer> {
  const fh = typeof src === 'string' ? await fsp.open(src, 'r') : src;
  // an entry of READ_CHUNK / 4 or more reads through a whole READ_CHUNK from the pool, given back when read to its end
  const pooled = size >= READ_CHUNK / 4;
  const buf = pooled ? (readBufs.pop() ?? Buffer.allocUnsafeSlow(READ_CHUNK)) : Buffer.allocUnsafeSlow(size);
  let done = false;
  try {
    for (let pos = start, left = size; left > 0;) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, left), pos);
      if (bytesRead === 0) throw new Error(`unexpected end of file ${left} bytes before the entry's end`);
      pos += bytesRead;
      left -= bytesRead;
      yield buf.subarray(0, bytesRead);
    }
    done = true;
  } finally {
    if (typeof src === 'string') await fh.close();
    if (pooled && done && readBufs.length < KEEP) readBufs.push(buf);
  }
}

/**
 * Read buffers and inflaters (each with its output buffer) of entries read to their end, for
 * the next entries: a restore extracts a few hundred entries of the database's and the
 * config's archives, and each took a 1 MiB read buffer, a 1 MiB output buffer and a zlib
 * stream with a 1 MiB buffer of its own (unused: ZlibPass lends it `out`), ~3 MiB of
 * ArrayBuffers per entry (~160 MiB per small-box restore from S3) that V8's GCs then chased
 * (store-s3-performance.md, session 20). KEEP of each: entries of two archives extracted side by side.
 */
const KEEP = 2;
const readBufs: Buffer[] = [];
const inflaters: Array<{ pass: ZlibPass; out: Buffer }> = [];

/** yauzl's reader over a random-access source (closing the zip does not close the source: its owner does). */
class SourceReader extends yauzl.RandomAccessReader {
  constructor(private readonly src: RandomAccessFile) {
    super();
  }

  override _readStreamForRange(start: number, end: number): Readable {
    const src = this.src;
    async function* copies(): AsyncGenerator<Buffer> {
      for await (const b of readRange(src, start, end - start)) yield Buffer.from(b); // a stream's chunks must stay valid
    }
    return Readable.from(copies(), { objectMode: false });
  }

  override read(buffer: Buffer, offset: number, length: number, position: number, cb: (err: Error | null) => void): void {
    const fill = async () => {
      for (let done = 0; done < length;) {
        const { bytesRead } = await this.src.read(buffer, offset + done, length - done, position + done);
        if (bytesRead === 0) throw new Error(`unexpected end of the archive at ${position + done}`);
        done += bytesRead;
      }
    };
    fill().then(
      () => cb(null),
      (err: Error) => cb(err),
    );
  }
}

/**
 * Raw deflate data inflated through one output buffer (zlib-pass.ts): each chunk is a view of
 * it, valid until the next. A stream's own output buffers, a new one per 256 KiB of output,
 * and a read stream's buffer per 1 MiB read, were gigabytes of ArrayBuffers for a 1 GiB
 * database that V8 collects only every ~64 MB of them.
 */
async function* inflateRange(compressed: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const k = inflaters.pop() ?? {
    pass: new ZlibPass(zlib.createInflateRaw({ chunkSize: INFLATE_OUT, flush: zlib.constants.Z_SYNC_FLUSH })),
    out: Buffer.allocUnsafeSlow(INFLATE_OUT),
  };
  let done = false;
  try {
    for await (const piece of compressed)
      for (let off = 0; off < piece.length; off += INFLATE_IN) yield* await k.pass.run(piece.subarray(off, off + INFLATE_IN), k.out);
    done = true;
  } finally {
    // read to its end without an error: reset for the next entry (whatever state this one's data left it in)
    if (done && inflaters.length < KEEP && !k.pass.z.destroyed) {
      k.pass.z.reset();
      inflaters.push(k);
    } else k.pass.close();
  }
}

/**
 * The entry's decompressed data. yauzl finds where it starts (the local header); the bytes
 * are read here through one 1 MiB buffer and inflated through one 1 MiB output buffer
 * (yauzl's own streams use 16 KiB for both, and a new buffer per chunk). Size and CRC-32 are
 * checked by readEntryChecked.
 */
async function openData(file: Source, zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<AsyncIterable<Buffer>> {
  const stored = entry.compressionMethod === 0;
  if ((!stored && entry.compressionMethod !== 8) || entry.isEncrypted()) return zip.openReadStreamPromise(entry);
  if (entry.compressedSize === 0) return Readable.from([]);
  const { fileDataStart } = await zip.readLocalFileHeaderPromise(entry, { minimal: true });
  if (Buffer.isBuffer(file)) return dataFromMemory(file, fileDataStart, entry, stored);
  const raw = readRange(file, fileDataStart, entry.compressedSize);
  return stored ? raw : inflateRange(raw);
}

function describe(file: Source, zip: yauzl.ZipFile, entry: yauzl.Entry): ZipEntryInfo {
  const name = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, true);
  const madeByUnix = entry.versionMadeBy >> 8 === 3;
  const attr = entry.externalFileAttributes >>> 16;
  const isDirName = name.endsWith('/');
  let type: EntryType = isDirName ? 'dir' : 'file';
  let mode: number | undefined;
  if (madeByUnix && attr !== 0) {
    type = TYPES[attr & S_IFMT] ?? type;
    mode = attr & 0o7777;
  }
  // MS-DOS directory attribute, or a name ending in '/', says directory whatever the unix bits.
  if (isDirName || (entry.externalFileAttributes & 0x10) !== 0) {
    if (type === 'file') type = 'dir';
  }
  const { uid, gid } = unixOwner(entry.extraFields);
  return {
    name,
    type,
    mode,
    uid,
    gid,
    size: entry.uncompressedSize,
    crc32: entry.crc32,
    mtime: entry.getLastModDate(),
    encrypted: entry.isEncrypted(),
    open: () => openData(file, zip, entry),
  };
}

/**
 * Iterate the entries of a zip file in central-directory order. The consumer must finish
 * with one entry (read its stream to the end, or not open it) before asking for the next.
 * `label` names a source that is not a path in errors (default: the path).
 */
export async function* zipEntries(file: ZipSource, label = typeof file === 'string' ? file : 'archive'): AsyncGenerator<ZipEntryInfo> {
  let zip: yauzl.ZipFile;
  let src: Source = file;
  const options = { lazyEntries: true, decodeStrings: false, autoClose: false, validateEntrySizes: true };
  try {
    const whole = typeof file === 'string' ? await wholeIfSmall(file) : undefined;
    if (whole) src = whole;
    zip = whole
      ? await yauzl.fromBufferPromise(whole, { ...options })
      : typeof file === 'string'
        ? await yauzl.openPromise(file, options)
        : await yauzl.fromRandomAccessReaderPromise(new SourceReader(file), file.size, options);
  } catch (err) {
    throw new BoxbackError('BOXBACK_ERR_VERIFY_FAILED', `${label} is not a readable zip: ${(err as Error).message}`);
  }
  try {
    for (;;) {
      const entry = await new Promise<yauzl.Entry | null>((resolve, reject) => {
        const onEntry = (e: yauzl.Entry) => done(() => resolve(e));
        const onEnd = () => done(() => resolve(null));
        const onError = (err: Error) => done(() => reject(err));
        const done = (f: () => void) => {
          zip.off('entry', onEntry);
          zip.off('end', onEnd);
          zip.off('error', onError);
          f();
        };
        zip.on('entry', onEntry);
        zip.on('end', onEnd);
        zip.on('error', onError);
        zip.readEntry();
      }).catch((err: Error) => {
        throw new BoxbackError('BOXBACK_ERR_VERIFY_FAILED', `${label}: unreadable zip: ${err.message}`);
      });
      if (!entry) return;
      yield describe(src, zip, entry);
    }
  } finally {
    zip.close();
  }
}

/** Read a whole entry, checking its CRC-32 (feed every chunk to `sink`, if given). */
export async function readEntryChecked(e: ZipEntryInfo, where: string, sink?: (chunk: Buffer) => void | Promise<void>): Promise<number> {
  let crc = 0;
  let bytes = 0;
  const rs = await e.open();
  for await (const chunk of rs) {
    crc = zlib.crc32(chunk, crc);
    bytes += chunk.length;
    // More than the archive says (damaged, or a bomb): stop here, not at the end.
    if (bytes > e.size) break;
    if (sink) await sink(chunk);
  }
  if (bytes !== e.size) {
    throw new BoxbackError(
      'BOXBACK_ERR_VERIFY_FAILED',
      `${where}: entry ${e.name}: ${bytes} bytes, the archive says ${e.size} (archive damaged)`,
    );
  }
  if (crc >>> 0 !== e.crc32 >>> 0) {
    throw new BoxbackError('BOXBACK_ERR_VERIFY_FAILED', `${where}: entry ${e.name}: CRC-32 mismatch (archive damaged)`);
  }
  return bytes;
}

/** Read one small entry into memory by name (host-file previews for dry-run). */
export async function readSmallEntry(
  file: ZipSource,
  name: string,
  maxBytes = 1024 * 1024,
  label = typeof file === 'string' ? file : 'archive',
): Promise<Buffer | undefined> {
  for await (const e of zipEntries(file, label)) {
    if (e.name !== name || e.type !== 'file') continue;
    if (e.size > maxBytes) return undefined;
    const parts: Buffer[] = [];
    await readEntryChecked(e, label, (c) => {
      parts.push(Buffer.from(c));
    });
    return Buffer.concat(parts);
  }
  return undefined;
}

export interface ZipCheck {
  entries: number;
  bytes: number;
}

/**
 * Open `file`, read its central directory to the end and every file entry's data (streamed,
 * inflated), checking each entry's size and CRC-32. Throws BOXBACK_ERR_VERIFY_FAILED naming
 * `label` (the archive's name in its backup) and the first damaged entry.
 */
export async function checkZipArchive(file: string, label: string, onBytes?: (n: number) => void): Promise<ZipCheck> {
  let entries = 0;
  let bytes = 0;
  try {
    for await (const e of zipEntries(file)) {
      entries++;
      if (e.type === 'file' && !e.encrypted) bytes += await readEntryChecked(e, label, onBytes && ((c) => onBytes(c.length)));
    }
  } catch (err) {
    if (err instanceof BoxbackError) throw new BoxbackError('BOXBACK_ERR_VERIFY_FAILED', err.message.split(file).join(label));
    throw new BoxbackError('BOXBACK_ERR_VERIFY_FAILED', `${label}: unreadable zip (archive damaged): ${(err as Error).message}`);
  }
  return { entries, bytes };
}

/** The zip archives of a backup (its datasets of kind zip), as paths relative to the backup directory. */
export function zipArchivesOf(manifest: Manifest): string[] {
  return manifest.datasets.filter((d) => d.kind === 'zip').map((d) => d.archive);
}

/**
 * checkZipArchive of every zip archive of a backup in `dir`, two at a time; a damaged one is
 * a problem line, not a throw. `skip` names archives already known bad (their SHA-256 failed).
 */
export async function checkBackupZips(
  dir: string,
  manifest: Manifest,
  onBytes?: (n: number) => void,
  skip: ReadonlySet<string> = new Set(),
): Promise<ZipCheck & { problems: string[] }> {
  const out = { entries: 0, bytes: 0, problems: [] as string[] };
  await mapLimit(
    zipArchivesOf(manifest).filter((a) => !skip.has(a)),
    2,
    async (rel) => {
      try {
        const r = await checkZipArchive(`${dir}/${rel}`, rel, onBytes);
        out.entries += r.entries;
        out.bytes += r.bytes;
      } catch (err) {
        out.problems.push((err as Error).message);
      }
    },
  );
  out.problems.sort();
  return out;
}
