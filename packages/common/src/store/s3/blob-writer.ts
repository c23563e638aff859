/**
 * Writing content into the store, deduplicated:
 *
 *   1. content is cut into blobs: a file under the chunker's minimum is one blob, a larger one
 *      is cut by the keyed content-defined chunker (chunker.ts), its SHA-256 taken on the way
 *   2. blob id = HMAC(id key, plaintext); a blob the index or this writer already holds is not
 *      stored again (across backups and hosts: the index is shared)
 *   3. new blobs are compressed (brotli) when that pays (compress.ts) and sealed straight into the current
 *      pack's buffer; a pack reaching `packTarget` bytes (or without room for the next blob) is
 *      uploaded in the background, named by the SHA-256 that also signs its PUT (one hash of
 *      its bytes); at most `maxInFlight` packs are uploading at once, and their buffers are
 *      reused (maxInFlight + 1 pack buffers per writer: a bounded, GC-free footprint)
 *   4. flush(): the last pack uploaded, every upload awaited; `packs` lists what was stored,
 *      for the index object the commit writes before the snapshot
 */
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import { BoxbackError } from '../../errors.js';
import { cutChunks } from './chunker.js';
import { maybeCompress } from './compress.js';
import { blobId } from './keys.js';
import { PackBuilder, packCapacity, type PackEntry } from './pack.js';
import { packKey, type ContentRef, type Repo } from './repo.js';

export interface BlobWriterOptions {
  /** A pack is closed from this many bytes on (default 4 MiB). */
  packTarget?: number;
  /** Packs being uploaded at once (default 2). */
  maxInFlight?: number;
}

/**
 * 4 MiB: a pack's buffer is held until its PUT is confirmed, so the writer's memory is about
 * (maxInFlight + 1) x this (12 MiB); 8 MiB packs held 32 MiB for no measurable speed on the
 * bench's radosgw (store-s3-performance.md).
 */
export const DEFAULT_PACK_TARGET = 4 * 1024 * 1024;

export class BlobWriter {
  /** Packs stored so far by this writer: [pack id, entries]. */
  readonly packs: Array<[string, PackEntry[]]> = [];
  /** Blobs new to the store / bytes of them (plaintext) / blobs already there. */
  newBlobs = 0;
  newBytes = 0;
  /** Bytes of the new blobs as stored (compressed where that paid), before sealing. */
  storedBytes = 0;
  dedupBlobs = 0;
  private readonly pending = new Set<string>();
  private pack: PackBuilder;
  private inFlight: Array<Promise<void>> = [];
  private failed: unknown = null;
  private readonly packTarget: number;
  private readonly maxInFlight: number;
  /** Pack buffers whose upload is done, for the next packs. */
  private readonly free: Buffer[] = [];
  /** Chunk buffers (chunker.ts's `acc`) and file read buffers of streams that ended, for the next ones. */
  private readonly chunkBufs: Buffer[] = [];
  private readonly readBufs: Buffer[] = [];
  private readonly capacity: number;

  constructor(
    private readonly repo: Repo,
    o: BlobWriterOptions = {},
  ) {
    this.packTarget = o.packTarget ?? DEFAULT_PACK_TARGET;
    this.maxInFlight = o.maxInFlight ?? 2;
    this.capacity = packCapacity(this.packTarget, repo.config.chunking.max);
    this.pack = this.newPack();
  }

  private newPack(): PackBuilder {
    return new PackBuilder(this.repo.keys, this.free.pop() ?? Buffer.allocUnsafeSlow(this.capacity));
  }

  /** The ids of the blobs this writer stored (or is storing): in its packs, not in the index. */
  get stored(): ReadonlySet<string> {
    return this.pending;
  }

  private has(id: string): boolean {
    return this.pending.has(id) || this.repo.index.has(id);
  }

  /** Store one blob (unless the store has it); its id. */
  async addBlob(plain: Buffer): Promise<string> {
    if (this.failed) throw this.failed;
    const id = blobId(this.repo.keys, plain);
    if (this.has(id)) {
      this.dedupBlobs++;
      return id;
    }
    this.pending.add(id);
    const packed = await maybeCompress(plain);
    if (this.failed) throw this.failed;
    // no await between the last fits() and add(): addFile and syncTree may add at the same time
    while (!this.pack.fits((packed?.bytes ?? plain).length)) {
      if (this.pack.count === 0) throw new BoxbackError('BOXBACK_ERR_INTERNAL', `a blob of ${plain.length} bytes is larger than a pack`);
      await this.closePack(this.pack);
    }
    this.pack.add(id, plain, packed);
    this.newBlobs++;
    this.newBytes += plain.length;
    this.storedBytes += (packed?.bytes ?? plain).length;
    if (this.pack.bytes >= this.packTarget) await this.closePack(this.pack);
    return id;
  }

  /** Upload the current pack (`which`: only if it is still the current one) once an upload slot is free. */
  private async closePack(which?: PackBuilder): Promise<void> {
    while (this.inFlight.length >= this.maxInFlight) await this.inFlight.shift(); // its buffer is back in `free`
    if (this.pack.count === 0 || (which && this.pack !== which)) return;
    const done = this.pack.finish();
    const buf = this.pack.buf;
    this.pack = this.newPack();
    const p = this.repo.client
      .put(packKey(done.id), done.bytes, done.id)
      .then(
        () => {
          this.packs.push([done.id, done.entries]);
        },
        (err: unknown) => {
          this.failed ??= err;
        },
      )
      .finally(() => this.free.push(buf)); // sent or failed: nothing reads it any more
    this.inFlight.push(p);
    if (this.failed) throw this.failed;
  }

  /**
   * Store a stream's content (chunked); its blobs, size and SHA-256. Each chunk is stored
   * before the next is read, so the chunker carries bytes over in a reused buffer.
   */
  async storeStream(src: AsyncIterable<Buffer>, onBytes?: (n: number) => void): Promise<ContentRef> {
    const h = createHash('sha256');
    let size = 0;
    const blobs: string[] = [];
    const hashed = async function* (): AsyncGenerator<Buffer> {
      for await (const b of src) {
        h.update(b);
        size += b.length;
        onBytes?.(b.length);
        yield b;
      }
    };
    const acc = this.chunkBufs.pop() ?? Buffer.allocUnsafeSlow(this.repo.config.chunking.max);
    try {
      for await (const chunk of cutChunks(hashed(), this.repo.gear, this.repo.config.chunking, acc)) blobs.push(await this.addBlob(chunk));
    } finally {
      this.chunkBufs.push(acc);
    }
    return { blobs, size, sha256: h.digest('hex') };
  }

  /**
   * Store a file's content, read in 1 MiB reads into a reused buffer (no buffer allocated per read).
   * `cuts`: offsets where a blob must start (an archive's independently compressed blocks,
   * BackupStaging.addFile): the file is chunked piece by piece between them, so an unchanged
   * block is the same blob wherever it lies and whatever the chunker's key; a piece up to the
   * chunker's maximum is one blob.
   */
  async storeFile(file: string, onBytes?: (n: number) => void, cuts?: readonly number[]): Promise<ContentRef> {
    const buf = this.readBufs.pop() ?? Buffer.allocUnsafeSlow(1 << 20);
    try {
      if (!cuts?.length) return await this.storeStream(readReusing(file, buf), onBytes);
      return await this.storePieces(file, buf, cuts, onBytes);
    } finally {
      this.readBufs.push(buf);
    }
  }

  private async storePieces(file: string, buf: Buffer, cuts: readonly number[], onBytes?: (n: number) => void): Promise<ContentRef> {
    const h = createHash('sha256');
    const blobs: string[] = [];
    const fh = await fsp.open(file, 'r');
    const acc = this.chunkBufs.pop() ?? Buffer.allocUnsafeSlow(this.repo.config.chunking.max);
    try {
      const size = (await fh.stat()).size;
      const bounds = [...new Set([0, ...cuts.filter((c) => c > 0 && c < size), size])].sort((a, b) => a - b);
      let pos = 0;
      // the bytes of [pos, end), hashed in file order as they are read (pieces come in order)
      const piece = async function* (end: number): AsyncGenerator<Buffer> {
        while (pos < end) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos), pos);
          if (bytesRead === 0) return; // shorter than at open: its SHA-256 will not match
          const b = buf.subarray(0, bytesRead);
          pos += bytesRead;
          h.update(b);
          onBytes?.(bytesRead);
          yield b;
        }
      };
      for (let i = 1; i < bounds.length; i++) {
        const n = bounds[i] - bounds[i - 1];
        if (n <= this.repo.config.chunking.max) {
          // one blob: gathered in acc (reads reuse buf)
          let got = 0;
          for await (const b of piece(bounds[i])) got += b.copy(acc, got);
          if (got > 0) blobs.push(await this.addBlob(acc.subarray(0, got)));
        } else {
          for await (const chunk of cutChunks(piece(bounds[i]), this.repo.gear, this.repo.config.chunking, acc))
            blobs.push(await this.addBlob(chunk));
        }
        if (pos < bounds[i]) break;
      }
      // bytes appended since the stat: read and hashed too, so the SHA-256 check sees them
      for await (const chunk of cutChunks(piece(Number.MAX_SAFE_INTEGER), this.repo.gear, this.repo.config.chunking, acc))
        blobs.push(await this.addBlob(chunk));
      return { blobs, size: pos, sha256: h.digest('hex') };
    } finally {
      this.chunkBufs.push(acc);
      await fh.close();
    }
  }

  /** Store content held in memory (a small file, a manifest). */
  async storeBuffer(b: Buffer): Promise<ContentRef> {
    if (b.length < this.repo.config.chunking.min) {
      const blobs = b.length === 0 ? [] : [await this.addBlob(b)];
      return { blobs, size: b.length, sha256: createHash('sha256').update(b).digest('hex') };
    }
    return this.storeStream(
      (async function* () {
        yield b;
      })(),
    );
  }

  /** Upload what is left and wait for every upload; throws the first failure. */
  async flush(): Promise<void> {
    await this.closePack();
    while (this.inFlight.length) await this.inFlight.shift();
    if (this.failed) throw this.failed;
  }

  /** Wait for uploads already started, ignoring their outcome (abort). */
  async settle(): Promise<void> {
    while (this.inFlight.length) await this.inFlight.shift();
  }
}

/** A file's bytes, each read a view of `buf` (valid until the next one is asked for). */
async function* readReusing(file: string, buf: Buffer): AsyncGenerator<Buffer> {
  const fh = await fsp.open(file, 'r');
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) return;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}
