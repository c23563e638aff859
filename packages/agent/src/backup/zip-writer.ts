/**
 * Writing one dataset archive, streamed and in parallel: no whole file is held in memory,
 * files are read 1 MiB at a time, each block is deflated on libuv's thread pool (several at
 * once, pigz style: independent blocks, each ended with a sync flush, the entry ended with an
 * empty final block), and the zip is hashed (SHA-256) on its way to disk in order.
 *
 *   for each entry (walk order):   local header
 *     file:      blocks -> [SHA-256 of the raw block (large files) -> reuse from the previous
 *                archive, see zip-blocks.ts] or deflate -> written in order, CRC-32 of the raw
 *                bytes -> data descriptor
 *     symlink:   stored; its data is the link text (what Info-ZIP writes and restores)
 *     directory: stored, empty
 *   central directory, zip64 end records when needed, end record
 *
 * Layout (GoCD's): a directory dataset's CONTENT is the archive's top level (db.zip holds
 * cruise.mv.db, not h2db/cruise.mv.db); a file dataset stores each file by its base name.
 *
 * Kept: modes, mtimes (DOS time plus the extended timestamp in both headers) and symlinks
 * (zip-format.ts). Owners are not kept (zip has no place for them): the manifest records the
 * dataset's owner and a restore chowns. Deflate level 1 by default (the archive is written
 * while the box is busy again); files that are already compressed (jar, zip, gz...) go
 * through level 0 (stored blocks, at copy speed).
 *
 * Every write is read back at once and compared byte for byte with what was written before it is
 * hashed (readBack): the archive's SHA-256 is of bytes as they read back, so the backup's VERIFY
 * does not read the archive a second time. With the agent's native addon a large file's raw
 * blocks are read and hashed in one trip through libuv's pool each (read ahead), and each write
 * is written, read back, compared and hashed in one (hash-thread.ts, docs/design/zip-reuse.md). A large archive is datasynced in the background every
 * 16 MiB as it is written (PUBLISH's flush then has little of it left to wait for).
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, promises as fsp, readSync, type Stats } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { BoxbackError } from '@boxback/common';
import { excludeMatcher, walkTree, type WalkEntry } from '@boxback/common';
import { DeflatePool, OUT_BYTES } from './zip-deflate.js';
import { releaseShared, sharedBuffer, startHasher, type Hasher } from './hash-thread.js';
import { BLOCK_SIZE, REUSE_MIN, crc32Combine, type BlockRecord, type ReuseSource } from './zip-blocks.js';
import {
  DEFLATE_END,
  METHOD_DEFLATED,
  METHOD_STORED,
  ZIP32_MAX,
  ZIP64_LOCAL_FROM,
  centralRecord,
  dataDescriptor,
  endRecords,
  localHeader,
  type CentralEntry,
} from './zip-format.js';

export const DEFAULT_LEVEL = 1;
const STORED_EXT = /\.(jar|war|ear|zip|gz|tgz|bz2|xz|zst|7z|png|jpe?g|gif|webp|mp4|woff2?)$/i;
/** Blocks in flight (read, hashed, deflated or copied) per archive: libuv's pool has 4 threads. */
const IN_FLIGHT = 4;
/** Raw blocks of a large file read (and hashed) ahead of the one being queued, with the native addon. */
const READ_AHEAD = 2;
/** Raw block buffers kept for the next blocks: every one that can be in use at once. */
const RAW_KEEP = IN_FLIGHT + READ_AHEAD;
/** A block is sampled this much to tell whether it compresses, and stored when the sample saves under 3%. */
const SAMPLE = 32 * 1024;
const INCOMPRESSIBLE = 0.97;
/** Files up to this size are read in one synchronous call. */
const SMALL_FILE = 64 * 1024;
/**
 * A block's archive bytes (deflated, or copied from the previous archive) go into a pooled
 * buffer of this size: a 1 MiB block's deflated size is at most a few hundred bytes over it.
 */
const OUT_BUFFER = OUT_BYTES;
/** Small writes are gathered up to this size before they go to disk. */
const WRITE_BUFFER = 1 << 20;
/**
 * The same for an archive holding a large file: every block is gathered, so each 4 MiB cost one
 * write and one read-back (through libuv's pool, two round trips that wait for a free core on a
 * busy box) instead of a write and a read-back per block.
 */
const LARGE_WRITE_BUFFER = 4 << 20;
/**
 * Each write is read back in pieces of up to this size, into two buffers (one is hashed while
 * the next piece is read into the other). 1 MiB: a 4 MiB write is read back in 4 reads (the
 * reads are from the page cache, where the write just put the bytes); two 4 MiB buffers were
 * 6 MiB more under the deployed incremental's peak RSS (agent-memory.md).
 */
const CHECK_PIECE = 1 << 20;
/**
 * After this many bytes written since the last one, a datasync of the archive starts in the
 * background (one at a time): a large archive goes to disk while it is written and the rest of
 * the backup runs, instead of all at once in PUBLISH's flush, which waits for it. 16 MiB: a small
 * box's 45 MB db.zip is then mostly on disk when written (64 MiB before session 19, and with
 * BOXBACK_EARLY_FLUSH=off).
 */
const SYNC_EVERY = process.env.BOXBACK_EARLY_FLUSH === 'off' ? 64 << 20 : 16 << 20;

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
  /** Kept for callers: the writer never needs sizes up front (data descriptors). */
  stable?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: ZipProgress) => void;
  /** The same archive in the previous backup, for blocks whose content did not change. */
  reuse?: ReuseSource;
}

export interface ZipResult {
  /** Entries in the archive (files, symlinks, directories). */
  entries: number;
  /** Uncompressed bytes of the files. */
  bytes: number;
  /** Size of the archive file. */
  size: number;
  /** SHA-256 of the archive, over bytes that read back from the file as they were written (Output). */
  sha256: string;
  /** Blocks of the large files, for the next backup (zip-blocks.ts). */
  blocks: Record<string, BlockRecord[]>;
  /** Raw bytes whose compressed form was copied from the previous archive. */
  reusedBytes: number;
}

async function listSource(src: ZipSource, excludes: string[], signal?: AbortSignal): Promise<WalkEntry[]> {
  if (src.dir) return walkTree(src.dir, { exclude: excludeMatcher(excludes), signal });
  const out: WalkEntry[] = [];
  for (const f of src.files ?? []) out.push({ rel: path.basename(f), abs: f, st: await fsp.lstat(f) });
  return out;
}

/** One read buffer for every small file (its bytes are copied out at their exact size). */
const smallScratch = Buffer.allocUnsafe(SMALL_FILE + 1);

/** A small file's bytes (up to SMALL_FILE + 1: more means it grew since it was listed). */
function readSmall(file: string): Buffer {
  const fd = openSync(file, 'r');
  try {
    const buf = smallScratch;
    let n = 0;
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0) break;
      n += got;
      if (n === buf.length) break;
    }
    // A 64 KiB buffer per file of a few KiB would be garbage the size of the whole config repo.
    return Buffer.from(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
}

/**
 * Up to this size a block is deflated on the JS thread: for a file of a few KiB (a git object,
 * a config file) that takes microseconds, less than a round trip through the thread pool.
 */
const SYNC_DEFLATE = 16 * 1024;

function deflateSmall(raw: Buffer, level: number): Buffer {
  return zlib.deflateRawSync(raw, { level, finishFlush: zlib.constants.Z_SYNC_FLUSH, chunkSize: Math.max(1024, raw.length + 1024) });
}

const lengthOf = (data: Buffer[]) => data.reduce((n, b) => n + b.length, 0);
const crcOf = (data: Buffer[]) => data.reduce((c, b) => zlib.crc32(b, c), 0);

/**
 * The level a block is deflated at: 0 (stored blocks, copy speed) when a sample of it does not
 * compress (random or already-compressed pages of a database), else the archive's level.
 * Deflating such data at level 1 costs as much CPU as text and saves nothing.
 */
async function levelFor(deflater: DeflatePool, raw: Buffer, level: number, out: Buffer): Promise<number> {
  if (level === 0 || raw.length < 4 * SAMPLE) return level;
  // Into the block's own output buffer: only its length is wanted, the block overwrites it.
  const sample = lengthOf(await deflater.deflate(raw.subarray(0, SAMPLE), 1, out));
  return sample > SAMPLE * INCOMPRESSIBLE ? 0 : level;
}

/**
 * One piece of a write read back: up to `scratch.length` bytes of `expected` from `position`,
 * compared byte for byte; returns the view of `scratch` holding them. Throws
 * BOXBACK_ERR_VERIFY_FAILED when they differ or the file ends early.
 */
async function readPiece(fh: fsp.FileHandle, expected: Buffer, position: number, scratch: Buffer, name: string): Promise<Buffer> {
  const want = Math.min(scratch.length, expected.length);
  let n = 0;
  while (n < want) {
    const { bytesRead } = await fh.read(scratch, n, want - n, position + n);
    if (bytesRead === 0) break;
    n += bytesRead;
  }
  const got = scratch.subarray(0, n);
  if (n < want || !got.equals(expected.subarray(0, want)))
    throw new BoxbackError(
      'BOXBACK_ERR_VERIFY_FAILED',
      `${name} reads back different bytes at offset ${position} than were written: the store's disk may be failing`,
    );
  return got;
}

/** `written` (at `position` of the file) read back and compared byte for byte (readPiece). */
export async function readBack(fh: fsp.FileHandle, written: Buffer, position: number, scratch: Buffer, name: string): Promise<void> {
  for (let done = 0; done < written.length;) done += (await readPiece(fh, written.subarray(done), position + done, scratch, name)).length;
}

/** The archive's running SHA-256: on the JS thread, or off it (a Hasher: then its buffers are shared). */
interface ArchiveHash {
  update(b: Buffer): Promise<void>;
  final(): Promise<string>;
}

function localHash(): ArchiveHash {
  const h = createHash('sha256');
  return { update: async (b) => void h.update(b), final: async () => h.digest('hex') };
}

/**
 * The archive file: appended in order, small writes gathered. Every write is read back at once
 * and compared byte for byte with what was written, and the bytes as they read back are hashed:
 * the archive's SHA-256 is of the file as it reads back, which is what the backup's VERIFY used
 * to prove by reading the whole archive again (docs/design/zip-reuse.md).
 */
class Output {
  offset = 0;
  /** Bytes written (and read back) so far. */
  private written = 0;
  private buf: Buffer;
  /**
   * With writeCheck: the second write buffer, filled while the first one's request runs (made
   * at the first flush), that request, and the file offset the next write goes to.
   */
  private spare?: Buffer;
  private pending?: Promise<void>;
  private issued = 0;
  /** Two read-back buffers (CHECK_PIECE): one is hashed while the next piece is read into the other (one with writeCheck). */
  private readonly checks: Buffer[];
  private readonly hashing: (Promise<void> | undefined)[] = [undefined, undefined];
  private turn = 0;
  private used = 0;
  /** Bytes written when the last background datasync started, that datasync, and the first one's failure. */
  private synced = 0;
  private syncing?: Promise<void>;
  private syncError?: unknown;
  private constructor(
    private readonly fh: fsp.FileHandle,
    private readonly name: string,
    private readonly hash: ArchiveHash,
    /** The write buffer's size. */
    private readonly size: number,
    alloc: (n: number) => Buffer,
    /** Write, read back, compare and hash in one trip through the pool (the native addon's Hasher). */
    private readonly writeCheck?: Hasher['writeCheck'],
  ) {
    this.buf = alloc(this.size);
    const check = Math.min(this.size, CHECK_PIECE);
    // writeCheck's requests run one after the other (the running hash's order): one scratch.
    this.checks = writeCheck ? [alloc(check)] : [alloc(check), alloc(check)];
    this.alloc = alloc;
  }

  private readonly alloc: (n: number) => Buffer;

  /** With `thread` (an archive holding a large file), hashed on it, its buffers in shared memory and larger. */
  static async open(file: string, thread?: Hasher): Promise<Output> {
    const hash: ArchiveHash = thread ? { update: (b) => thread.update(b), final: () => thread.final() } : localHash();
    // Read and written: each write is read back.
    const fh = await fsp.open(file, 'w+', 0o644);
    if (!thread) return new Output(fh, path.basename(file), hash, WRITE_BUFFER, Buffer.allocUnsafeSlow);
    if (!thread.writeCheck) return new Output(fh, path.basename(file), hash, LARGE_WRITE_BUFFER, sharedBuffer);
    // Two buffers of half the size: one is filled while the other's request runs.
    // 2 x 2 MiB: the same memory as one 4 MiB buffer (4 + 4 MiB was ~10% faster in a harness
    // and 4 MiB more under the incremental's peak RSS, over agent-memory.md's target at default).
    return new Output(fh, path.basename(file), hash, LARGE_WRITE_BUFFER / 2, sharedBuffer, thread.writeCheck);
  }

  async append(b: Buffer): Promise<void> {
    this.offset += b.length;
    if (this.used + b.length <= this.size) {
      b.copy(this.buf, this.used);
      this.used += b.length;
      return;
    }
    await this.flush();
    // A large piece is written from the caller's buffer (with writeCheck: only one that does not fit in a buffer).
    if (b.length >= (this.writeCheck ? this.size : this.size / 2)) {
      // The caller's buffer: written (and checked) before append returns.
      await this.pending;
      await this.writeAll(b);
    } else {
      b.copy(this.buf, 0);
      this.used = b.length;
    }
  }

  async flush(): Promise<void> {
    if (this.used === 0) return;
    if (this.writeCheck) {
      // The other buffer's request done, this one's started and not awaited: the next bytes
      // are gathered into the other buffer while it is written, read back and hashed.
      await this.pending;
      const full = this.buf;
      this.pending = this.checkedWrite(full.subarray(0, this.used));
      this.pending.catch(() => undefined); // awaited by the next flush, close or abort
      this.buf = this.spare ?? this.alloc(this.size);
      this.spare = full;
      this.used = 0;
      return;
    }
    // Written before the next append (appends are awaited in order): the buffer is then reused.
    await this.writeAll(this.buf.subarray(0, this.used));
    this.used = 0;
  }

  /** `b` at the end of the file, then read back piece by piece, each piece hashed as it read back (in file order). */
  private async writeAll(b: Buffer): Promise<void> {
    if (this.writeCheck) return this.checkedWrite(b);
    let done = 0;
    while (done < b.length) {
      const { bytesWritten } = await this.fh.write(b, done, b.length - done, this.written + done);
      done += bytesWritten;
    }
    for (let checked = 0; checked < b.length;) {
      const i = this.turn++ & 1;
      // The buffer's previous piece is hashed before it is read into again.
      await this.hashing[i];
      const piece = await readPiece(this.fh, b.subarray(checked), this.written + checked, this.checks[i], this.name);
      const hashed = this.hash.update(piece);
      hashed.catch(() => undefined); // awaited before the buffer's next use or at close
      this.hashing[i] = hashed;
      checked += piece.length;
    }
    this.wrote(b.length);
  }

  /**
   * With writeCheck: `b` at the next offset in one request (written, read back piece by piece
   * into checks[0], compared and hashed on the pool, hash-thread.ts): one turn of the JS thread
   * per write instead of nine per 4 MiB. Requests run in the order they were made.
   */
  private async checkedWrite(b: Buffer): Promise<void> {
    const position = this.issued;
    this.issued += b.length;
    const bad = await this.writeCheck!(this.fh.fd, b, position, this.checks[0]);
    if (bad >= 0)
      throw new BoxbackError(
        'BOXBACK_ERR_VERIFY_FAILED',
        `${this.name} reads back different bytes at offset ${bad} than were written: the store's disk may be failing`,
      );
    this.wrote(b.length);
  }

  /** `n` more bytes written and read back; a background datasync every SYNC_EVERY bytes. */
  private wrote(n: number): void {
    this.written += n;
    if (!this.syncing && this.written - this.synced >= SYNC_EVERY) {
      this.synced = this.written;
      // Its failure is kept and thrown by close: a failed fsync may not be reported again by a later one.
      this.syncing = this.fh.datasync().then(
        () => void (this.syncing = undefined),
        (err: unknown) => void ((this.syncError ??= err), (this.syncing = undefined)),
      );
    }
  }

  async close(): Promise<string> {
    await this.flush();
    await this.pending;
    await Promise.all(this.hashing);
    await this.syncing;
    await this.fh.close();
    if (this.syncError) throw this.syncError;
    const sha = await this.hash.final();
    // Nothing reads, writes or hashes them now: shared ones go back for the next archive.
    for (const b of [this.buf, ...(this.spare ? [this.spare] : []), ...this.checks]) releaseShared(b);
    return sha;
  }

  async abort(): Promise<void> {
    await this.pending?.catch(() => undefined);
    await Promise.allSettled(this.hashing);
    await this.syncing;
    await this.fh.close().catch(() => undefined);
  }
}

/** One block of a file on its way: its raw bytes and, once ready, the bytes that go in the archive. */
interface Block {
  raw: Buffer;
  /** The pooled buffer `raw` lies in, given back once the block is written. */
  pooled?: Buffer;
  /**
   * Its bytes in the archive, in pieces (stored blocks are slices of `raw`, the others of
   * `out`, a pooled buffer given back once they are written); a reused block also brings its
   * raw CRC-32 from the index.
   */
  ready: Promise<{ data: Buffer[]; sha?: string; reused?: BlockRecord; out?: Buffer }>;
}

/** A file entry being written: its CRC and sizes, known once its last block is written. */
interface FileState {
  central: CentralEntry;
  crc: number;
  size: number;
  csize: number;
  blocks?: BlockRecord[];
}

/** What is queued for the archive, in order: an entry's local header (its offset is taken when written), a block, an entry's end. */
type Piece =
  | { kind: 'header'; central: CentralEntry; data: Buffer }
  | { kind: 'block'; file: FileState; block: Block }
  | { kind: 'end'; file: FileState };

/** Write `out` as a zip of `src`. On failure the partial file is left for the caller's temp-dir clean-up. */
export async function writeZip(src: ZipSource, out: string, o: ZipOptions = {}): Promise<ZipResult> {
  const entries = await listSource(src, o.excludes ?? [], o.signal);
  const level = o.level ?? DEFAULT_LEVEL;
  const prog: ZipProgress = { bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: entries.length };
  for (const e of entries) if (e.st.isFile()) prog.bytesTotal += e.st.size;
  let last = 0;
  const report = (force = false) => {
    const now = Date.now();
    if (o.onProgress && (force || now - last >= 250)) {
      last = now;
      o.onProgress({ ...prog });
    }
  };

  // An archive holding a large file (a database) hashes off the JS thread (hash-thread.ts).
  const thread = entries.some((e) => e.st.isFile() && e.st.size >= REUSE_MIN) ? startHasher() : undefined;
  const output = await Output.open(out, thread).catch(async (err: unknown) => {
    await thread?.close();
    throw err;
  });
  const central: CentralEntry[] = [];
  const blocks: Record<string, BlockRecord[]> = {};
  const reuseFh = o.reuse && o.reuse.bySha.size ? await o.reuse.open().catch(() => undefined) : undefined;
  let reusedBytes = 0;
  // Pieces are queued in archive order and written by drain(); at most IN_FLIGHT blocks wait.
  const queue: Piece[] = [];
  // Raw block buffers are reused: 1 MiB buffers made and dropped per block would leave tens of
  // MiB of dead memory between two garbage collections.
  const pool: Buffer[] = [];
  // The same for the blocks' archive bytes, deflated or copied out of the previous archive (an
  // incremental's usual case: measured 66 MB of ArrayBuffers at the default file counts with a
  // buffer made per block).
  const outPool: Buffer[] = [];
  // Deflate streams reused block after block (zip-deflate.ts), closed when the archive is done.
  const deflater = new DeflatePool();
  let blocksQueued = 0;

  const drain = async (keepBlocks: number) => {
    while (queue.length && (blocksQueued > keepBlocks || queue[0].kind !== 'block')) {
      const p = queue.shift()!;
      if (p.kind === 'header') {
        p.central.offset = output.offset;
        await output.append(p.data);
      } else if (p.kind === 'block') {
        blocksQueued--;
        const { data, sha, reused, out } = await p.block.ready;
        const f = p.file;
        const n = p.block.raw.length;
        const clen = lengthOf(data);
        const crc = reused ? reused[5] : zlib.crc32(p.block.raw);
        if (f.blocks && sha) f.blocks.push([sha, n, output.offset, clen, reused ? reused[4] : crcOf(data), crc]);
        f.crc = f.size === 0 ? crc : crc32Combine(f.crc, crc, n);
        f.size += n;
        f.csize += clen;
        if (reused) reusedBytes += n;
        prog.bytesDone += p.block.raw.length;
        report();
        for (const d of data) await output.append(d);
        // Appended (copied into the write buffer or written): the block's buffers take the next
        // blocks (a stored block's data are slices of its raw buffer).
        if (p.block.pooled && pool.length < RAW_KEEP) pool.push(p.block.pooled);
        if (out && outPool.length < IN_FLIGHT + 1) outPool.push(out);
      } else {
        const f = p.file;
        await output.append(DEFLATE_END);
        f.csize += DEFLATE_END.length;
        if (!f.central.zip64Local && (f.size >= ZIP32_MAX || f.csize >= ZIP32_MAX)) {
          throw new BoxbackError(
            'BOXBACK_ERR_ARCHIVE_FAILED',
            `${f.central.name.toString()} grew past 4 GiB while it was archived; retry the backup (with the service quiesced)`,
          );
        }
        await output.append(dataDescriptor(f.crc, f.csize, f.size, f.central.zip64Local));
        Object.assign(f.central, { crc: f.crc, size: f.size, compressedSize: f.csize });
        prog.filesDone++;
        report();
      }
    }
  };

  /** A block's archive bytes: copied from the previous archive when its content is known there, else deflated. */
  const prepare = (raw: Buffer, fileLevel: number, hashIt: boolean, known?: string): Block['ready'] =>
    (async () => {
      const sha = !hashIt ? undefined : (known ?? (thread ? await thread.digest(raw) : createHash('sha256').update(raw).digest('hex')));
      const prev = sha && reuseFh && raw.length === BLOCK_SIZE ? o.reuse!.bySha.get(sha) : undefined;
      const out = outPool.pop() ?? Buffer.allocUnsafeSlow(OUT_BUFFER);
      if (prev && prev[3] <= OUT_BUFFER) {
        const data = out.subarray(0, prev[3]);
        const { bytesRead } = await reuseFh!.read(data, 0, data.length, prev[2]);
        if (bytesRead === data.length && zlib.crc32(data) === prev[4]) return { data: [data], sha, reused: prev, out };
      }
      try {
        return { data: await deflater.deflate(raw, await levelFor(deflater, raw, fileLevel, out), out), sha, out };
      } catch (err) {
        outPool.push(out);
        throw err;
      }
    })();

  const addFile = async (e: WalkEntry, st: Stats, grew = false): Promise<void> => {
    const fileLevel = level === 0 || STORED_EXT.test(e.rel) ? 0 : level;
    const large = st.size >= REUSE_MIN;
    const name = Buffer.from(e.rel);
    const f: FileState = {
      central: {
        name,
        method: METHOD_DEFLATED,
        descriptor: true,
        zip64Local: st.size >= ZIP64_LOCAL_FROM,
        crc: 0,
        compressedSize: 0,
        size: 0,
        offset: 0,
        mode: 0o100000 | (st.mode & 0o7777),
        mtime: st.mtime,
      },
      crc: 0,
      size: 0,
      csize: 0,
      blocks: large ? [] : undefined,
    };
    central.push(f.central);
    queue.push({ kind: 'header', central: f.central, data: localHeader(f.central) });
    if (st.size <= SMALL_FILE && !grew) {
      // A small file is read in one synchronous call (page cache: microseconds, where the
      // open/read/close round trips through the thread pool cost more than the read).
      const raw = readSmall(e.abs);
      if (raw.length <= SMALL_FILE) {
        if (raw.length) {
          const ready =
            raw.length <= SYNC_DEFLATE ? Promise.resolve({ data: [deflateSmall(raw, fileLevel)] }) : prepare(raw, fileLevel, false);
          const block: Block = { raw, ready };
          block.ready.catch(() => undefined);
          queue.push({ kind: 'block', file: f, block });
          blocksQueued++;
          await drain(IN_FLIGHT - 1);
        }
        queue.push({ kind: 'end', file: f });
        return;
      }
      // It grew past SMALL_FILE since the walk: restart it as a large file.
      central.pop();
      queue.pop();
      return addFile(e, st, true);
    }
    const fh = await fsp.open(e.abs, 'r');
    // With the native addon a large file's blocks are read and hashed in one trip each, at
    // explicit positions, READ_AHEAD of them at once: the next blocks are read while this one
    // waits for its turn in the archive (its reads and hashes run side by side on the pool).
    const readHash = large ? thread?.readHash : undefined;
    const ahead: { raw: Buffer; read: Promise<[number, string]> }[] = [];
    let position = 0;
    const readAhead = (): void => {
      // Within the size the walk saw; past it (a file that grew) one block at a time, to its end.
      while (readHash && ahead.length < READ_AHEAD && (position < st.size || ahead.length === 0)) {
        const raw = pool.pop() ?? sharedBuffer(BLOCK_SIZE);
        const read = readHash(fh.fd, raw, position);
        read.catch(() => undefined); // awaited in order below, or settled before the file is closed
        ahead.push({ raw, read });
        position += BLOCK_SIZE;
      }
    };
    try {
      for (;;) {
        let raw: Buffer;
        let n = 0;
        let sha: string | undefined;
        if (readHash) {
          readAhead();
          const next = ahead.shift()!;
          raw = next.raw;
          [n, sha] = await next.read;
        } else {
          // In shared memory when a thread hashes it.
          raw = pool.pop() ?? (thread ? sharedBuffer(BLOCK_SIZE) : Buffer.allocUnsafeSlow(BLOCK_SIZE));
          while (n < BLOCK_SIZE) {
            const { bytesRead } = await fh.read(raw, n, BLOCK_SIZE - n, null);
            if (bytesRead === 0) break;
            n += bytesRead;
          }
        }
        if (n === 0) {
          pool.push(raw);
          break;
        }
        const chunk = n === BLOCK_SIZE ? raw : raw.subarray(0, n);
        const block: Block = { raw: chunk, pooled: raw, ready: prepare(chunk, fileLevel, large, sha) };
        // A rejected block is awaited by drain(); until then keep Node from calling it unhandled.
        block.ready.catch(() => undefined);
        queue.push({ kind: 'block', file: f, block });
        blocksQueued++;
        await drain(IN_FLIGHT - 1);
        o.signal?.throwIfAborted();
        // A short block is the file's end: blocks read ahead past it are dropped.
        if (n < BLOCK_SIZE) break;
      }
    } finally {
      // No read of the file may be in flight when it is closed (its descriptor could be reused).
      for (const a of ahead.splice(0)) {
        await a.read.catch(() => undefined);
        if (pool.length < RAW_KEEP) pool.push(a.raw);
      }
      await fh.close();
    }
    queue.push({ kind: 'end', file: f });
    if (f.blocks) blocks[e.rel] = f.blocks;
  };

  try {
    for (const e of entries) {
      o.signal?.throwIfAborted();
      const st = e.st;
      const perm = st.mode & 0o7777;
      if (st.isFile()) {
        await addFile(e, st);
        continue;
      }
      if (!st.isDirectory() && !st.isSymbolicLink()) continue; // sockets, fifos, devices: no place in an archive
      const data = st.isSymbolicLink() ? Buffer.from(await fsp.readlink(e.abs)) : Buffer.alloc(0);
      const c: CentralEntry = {
        name: Buffer.from(st.isDirectory() ? `${e.rel}/` : e.rel),
        method: METHOD_STORED,
        descriptor: false,
        zip64Local: false,
        crc: zlib.crc32(data),
        compressedSize: data.length,
        size: data.length,
        offset: 0,
        mode: (st.isDirectory() ? 0o040000 : 0o120000) | perm,
        mtime: st.mtime,
      };
      central.push(c);
      queue.push({ kind: 'header', central: c, data: Buffer.concat([localHeader(c), data]) });
      prog.filesDone++;
    }
    await drain(0);
    const cdOffset = output.offset;
    for (const c of central) await output.append(centralRecord(c));
    await output.append(endRecords(central.length, cdOffset, output.offset - cdOffset));
    const sha256 = await output.close();
    // Every block is written and hashed: the raw buffers are free (shared ones are kept for the next archive).
    for (const b of pool.splice(0)) releaseShared(b);
    report(true);
    return { entries: entries.length, bytes: prog.bytesTotal, size: output.offset, sha256, blocks, reusedBytes };
  } catch (err) {
    await output.abort();
    throw err;
  } finally {
    await reuseFh?.close().catch(() => undefined);
    deflater.close();
    await thread?.close();
  }
}
