/**
 * Pack objects (restic's pack format is the model): many sealed blobs in one object, so a
 * backup of 100k small test reports is a few hundred PUTs, not 100k.
 *
 *   pack   = blob_1 | ... | blob_n | header | headerLength (u32 BE)
 *   blob_i = seal(enc, "blob:<id>", plaintext)          (id = HMAC-SHA256(idKey, plaintext))
 *          | seal(enc, "blobb:<id>", brotli(plaintext))       (compressed: entry flag 2, written now)
 *          | seal(enc, "blobz:<id>", deflateRaw(plaintext))   (compressed: entry flag 1, read only:
 *                                                            stores written before brotli)
 *   header = seal(enc, "pack-header", JSON [[id, offset, length, plainLength, flags?], ...])
 *
 * A blob is compressed only when that saves space (compress.ts decides); the codec's flag is
 * in its entry and in its associated data, so a compressed blob never opens as a plain one or
 * under another codec, and decompressing stops at the entry's plaintext length. A flag this
 * version does not know (a newer codec) is refused by name, never read as plain.
 *
 * The pack's object name is the SHA-256 of all its bytes (checkable without the key); the index
 * objects repeat each header so a restore never reads headers, but a lost index can be rebuilt
 * from the packs alone. A blob is read by a ranged GET of [offset, offset + length) and opened
 * with its id as associated data, then its HMAC is checked: a blob from another place fails.
 */
import { createHash } from 'node:crypto';
import { brotliDecompressSync, inflateRawSync } from 'node:zlib';
import { blobIdOfParts, type StoreKeys } from './keys.js';
import type { BlobDecompressor } from './decompress.js';
import { open, openParts, openPartsInPlace, sealInto, sealedSize, tampered } from './sealed.js';

/** [blob id, offset in pack, sealed length, plaintext length, flags (the codec: 1 deflate, 2 brotli; absent: 0, none)] */
export type PackEntry = [string, number, number, number, number?];

/** The entry flag of a blob sealed raw-deflated (stores written before brotli: read, no longer written). */
export const DEFLATED = 1;
/** The entry flag of a blob sealed brotli-compressed. */
export const BROTLI = 2;
/** How a blob's plaintext was compressed before it was sealed (its entry's flag; 0: not at all). */
export type Codec = 0 | typeof DEFLATED | typeof BROTLI;

/** A blob's plaintext compressed (compress.ts), and how. */
export interface Packed {
  bytes: Buffer;
  codec: typeof DEFLATED | typeof BROTLI;
}

const AAD_STEM = ['blob', 'blobz', 'blobb'];
const blobAad = (id: string, codec: number) => `${AAD_STEM[codec]}:${id}`;

/** A codec flag (or the boolean `deflated` of older callers) checked: one this version reads. */
function codecOf(flag: number | boolean, what: string): Codec {
  const c = flag === true ? DEFLATED : flag === false ? 0 : flag;
  if (c !== 0 && c !== DEFLATED && c !== BROTLI) throw tampered(what, `unknown codec ${c} (written by a newer boxback?)`);
  return c;
}

export interface FinishedPack {
  id: string;
  /** The pack's bytes: a view of the builder's buffer (handed back with `release` once stored). */
  bytes: Buffer;
  entries: PackEntry[];
}

/**
 * A pack built in one buffer, blobs sealed straight into it (no copy per blob, per frame or
 * per pack). `fits` says whether a blob of n plaintext bytes still has room, its header and
 * the length word included; the caller closes the pack first when it does not.
 */
export class PackBuilder {
  private size = 0;
  /** Bytes of the header's JSON so far ("[" + entries joined by "," + "]"). */
  private headerJson = 1;
  readonly entries: PackEntry[] = [];
  constructor(
    private readonly keys: StoreKeys,
    readonly buf: Buffer = Buffer.allocUnsafeSlow(packCapacity(4 * 1024 * 1024, 4 * 1024 * 1024)),
  ) {}

  get bytes(): number {
    return this.size;
  }

  get count(): number {
    return this.entries.length;
  }

  /** Room for one more blob of `stored` bytes (as sealed: plain or deflated), with the header grown by its entry? */
  fits(stored: number): boolean {
    const entry = 64 + 4 * 17 + 12; // the longest entry's JSON: id, four numbers up to 2^53, quotes and commas
    return this.size + sealedSize(stored) + sealedSize(this.headerJson + entry + 1) + 4 <= this.buf.length;
  }

  /** Add a blob: `plain`, or `packed` (its bytes compressed by a codec) when that is smaller. The caller checked `fits`. */
  add(id: string, plain: Buffer, packed?: Packed): void {
    const codec = packed?.codec ?? 0;
    const n = sealInto(this.keys.enc, blobAad(id, codec), packed?.bytes ?? plain, this.buf, this.size);
    const e: PackEntry = codec ? [id, this.size, n, plain.length, codec] : [id, this.size, n, plain.length];
    this.entries.push(e);
    this.headerJson += JSON.stringify(e).length + (this.entries.length > 1 ? 1 : 0);
    this.size += n;
  }

  finish(): FinishedPack {
    const json = Buffer.from(JSON.stringify(this.entries));
    const hlen = sealInto(this.keys.enc, 'pack-header', json, this.buf, this.size); // fits() kept room for it
    const end = this.buf.writeUInt32BE(hlen, this.size + hlen);
    const bytes = this.buf.subarray(0, end);
    return { id: createHash('sha256').update(bytes).digest('hex'), bytes, entries: this.entries };
  }
}

/** Room a pack buffer needs for `target` bytes of blobs plus the largest blob a chunker cuts. */
export function packCapacity(target: number, maxBlob: number): number {
  return Math.max(target, sealedSize(maxBlob) + sealedSize(64 * 1024) + 4);
}

/**
 * Open one sealed blob read from a pack (inflating it when its entry says so) and check it is
 * the blob asked for: GCM with the id in its associated data, then the id recomputed from the
 * plaintext. `checkId` false skips the recomputation, for a caller that compares the whole
 * file's SHA-256 with its (authenticated) manifest entry anyway: one hash of every byte, not two.
 */
export function openBlob(...args: Parameters<typeof openBlobParts>): Buffer {
  const parts = openBlobParts(...args);
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/** A decompressed blob's output buffer at most (a chunk is at most 4 MiB; larger output comes in more buffers). */
const OUT_MAX = 8 << 20;

/**
 * openBlob's plaintext as the frames it was sealed in (a stored blob: one per 64 KiB), each its
 * own buffer, for a caller that hashes and writes them in turn: not joined into one (a copy of
 * every byte). A compressed blob is one buffer (decompressed whole). The same checks as openBlob.
 * `codec`: its entry's flag (0 none, 1 deflate, 2 brotli; true and false: deflate or none).
 * `into`: the caller lends `sealed`'s bytes (decrypted in place when the addon can: the frames
 * are then views of it) and maybe a decompressor (a brotli blob's plaintext is then a view of
 * its buffer); what is returned is valid until the caller reuses either.
 */
export function openBlobParts(
  keys: StoreKeys,
  id: string,
  sealed: Buffer,
  codec: number | boolean = 0,
  plainLength?: number,
  checkId = true,
  into?: { decompressor?: BlobDecompressor },
): Buffer[] {
  const what = `blob ${id.slice(0, 12)}`;
  const c = codecOf(codec, what);
  let parts = into ? openPartsInPlace(keys.enc, blobAad(id, c), sealed, what) : openParts(keys.enc, blobAad(id, c), sealed, what);
  if (c === BROTLI && into?.decompressor && plainLength !== undefined) {
    const plain = into.decompressor.brotli(parts, plainLength);
    if (!plain) throw tampered(what, 'does not decompress to its length');
    parts = [plain];
  } else if (c !== 0) {
    try {
      const z = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      // Output into one buffer sized to the entry's length (a byte over: zlib asks for another
      // buffer when the output fills one exactly), not one per 16 KiB of output then joined.
      const o =
        plainLength === undefined
          ? {}
          : { maxOutputLength: Math.max(1, plainLength), chunkSize: Math.max(64, Math.min(plainLength, OUT_MAX) + 1) };
      parts = [c === BROTLI ? brotliDecompressSync(z, o) : inflateRawSync(z, o)];
    } catch {
      throw tampered(what, 'does not decompress to its length');
    }
  }
  if (checkId && blobIdOfParts(keys, parts) !== id) throw tampered(what, 'content does not match its id');
  return parts;
}

/** The entries of a whole pack, from its own header (index rebuild, full verify). */
export function readPackHeader(keys: StoreKeys, packId: string, bytes: Buffer): PackEntry[] {
  const what = `pack ${packId.slice(0, 12)}`;
  if (createHash('sha256').update(bytes).digest('hex') !== packId) throw tampered(what, 'SHA-256 does not match its name');
  if (bytes.length < 4) throw tampered(what, 'truncated');
  const hlen = bytes.readUInt32BE(bytes.length - 4);
  if (hlen + 4 > bytes.length) throw tampered(what, 'bad header length');
  const header = open(keys.enc, 'pack-header', bytes.subarray(bytes.length - 4 - hlen, bytes.length - 4), what);
  return JSON.parse(header.toString()) as PackEntry[];
}
