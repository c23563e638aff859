/**
 * Pack objects (restic's pack format is the model): many sealed blobs in one object, so a
 * backup of 100k small test reports is a few hundred PUTs, not 100k.
 *
 *   pack   = blob_1 | ... | blob_n | header | headerLength (u32 BE)
 *   blob_i = seal(enc, "blob:<id>", plaintext)          (id = HMAC-SHA256(idKey, plaintext))
 *          | seal(enc, "blobz:<id>", deflateRaw(plaintext))   (compressed: entry flag 1)
 *   header = seal(enc, "pack-header", JSON [[id, offset, length, plainLength, flags?], ...])
 *
 * A blob is compressed (raw deflate) only when that saves space (compress.ts decides); the
 * flag is in its entry and in its associated data, so a compressed blob never opens as a plain
 * one or the reverse, and inflating stops at the entry's plaintext length.
 *
 * The pack's object name is the SHA-256 of all its bytes (checkable without the key); the index
 * objects repeat each header so a restore never reads headers, but a lost index can be rebuilt
 * from the packs alone. A blob is read by a ranged GET of [offset, offset + length) and opened
 * with its id as associated data, then its HMAC is checked: a blob from another place fails.
 */
import { createHash } from 'node:crypto';
import { inflateRawSync } from 'node:zlib';
import { blobId, type StoreKeys } from './keys.js';
import { open, seal, tampered } from './sealed.js';

/** [blob id, offset in pack, sealed length, plaintext length, flags (1: deflated; absent: 0)] */
export type PackEntry = [string, number, number, number, number?];

/** The entry flag of a blob sealed deflated. */
export const DEFLATED = 1;

const blobAad = (id: string, deflated: boolean) => `${deflated ? 'blobz' : 'blob'}:${id}`;

export interface FinishedPack {
  id: string;
  bytes: Buffer;
  entries: PackEntry[];
}

export class PackBuilder {
  private parts: Buffer[] = [];
  private size = 0;
  readonly entries: PackEntry[] = [];
  constructor(private readonly keys: StoreKeys) {}

  get bytes(): number {
    return this.size;
  }

  get count(): number {
    return this.entries.length;
  }

  /** Add a blob: `plain`, or `deflated` (its raw deflate) when that is smaller. */
  add(id: string, plain: Buffer, deflated?: Buffer): void {
    const sealed = seal(this.keys.enc, blobAad(id, !!deflated), deflated ?? plain);
    this.entries.push(deflated ? [id, this.size, sealed.length, plain.length, DEFLATED] : [id, this.size, sealed.length, plain.length]);
    this.parts.push(sealed);
    this.size += sealed.length;
  }

  finish(): FinishedPack {
    const header = seal(this.keys.enc, 'pack-header', Buffer.from(JSON.stringify(this.entries)));
    const len = Buffer.alloc(4);
    len.writeUInt32BE(header.length);
    const bytes = Buffer.concat([...this.parts, header, len]);
    this.parts = [];
    return { id: createHash('sha256').update(bytes).digest('hex'), bytes, entries: this.entries };
  }
}

/** Open one sealed blob read from a pack (inflating it when its entry says so) and check it is the blob asked for. */
export function openBlob(keys: StoreKeys, id: string, sealed: Buffer, deflated = false, plainLength?: number): Buffer {
  const what = `blob ${id.slice(0, 12)}`;
  let plain = open(keys.enc, blobAad(id, deflated), sealed, what);
  if (deflated) {
    try {
      plain = inflateRawSync(plain, plainLength === undefined ? {} : { maxOutputLength: Math.max(1, plainLength) });
    } catch {
      throw tampered(what, 'does not inflate to its length');
    }
  }
  if (blobId(keys, plain) !== id) throw tampered(what, 'content does not match its id');
  return plain;
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
