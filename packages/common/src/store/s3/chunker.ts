/**
 * Content-defined chunking (a gear rolling hash, as in FastCDC): a file is cut where the hash of
 * the last 32 bytes has its top `bits` bits zero, but never before `min` nor after `max` bytes.
 * An insertion or a grown database moves only the cuts near the change, so the next backup of
 * an H2 file that grew by 2% uploads about 2%; our zip writer deflates 1 MiB blocks on their own,
 * so unchanged blocks of `db.zip` are unchanged bytes and fall into the same chunks again.
 * The gear table comes from the store's key (keys.ts), so chunk sizes do not tell the server
 * which known file was stored. Files smaller than `min` are one chunk (one blob).
 */
import { hkdfSync } from 'node:crypto';

export interface ChunkParams {
  min: number;
  /** Average distance past min is 2^bits. */
  bits: number;
  max: number;
}

export const DEFAULT_CHUNKING: ChunkParams = { min: 256 * 1024, bits: 20, max: 4 * 1024 * 1024 };

export function gearTable(chunkKey: Buffer): Uint32Array {
  const raw = Buffer.from(hkdfSync('sha256', chunkKey, Buffer.alloc(0), 'boxback gear table v1', 1024));
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) t[i] = raw.readUInt32BE(i * 4);
  return t;
}

let hashState = 0;

/**
 * Scan b[from, to) for a cut: the index just past it, or -1 (the hash to carry on with is left
 * in hashState). Kept small and int32-only so V8 optimises it (about 10x the naive loop).
 */
function scan(b: Buffer, from: number, to: number, h: number, mask: number, gear: Int32Array): number {
  for (let i = from; i < to; i++) {
    h = ((h << 1) + gear[b[i]]) | 0;
    if ((h & mask) === 0) {
      hashState = 0;
      return i + 1;
    }
  }
  hashState = h;
  return -1;
}

/**
 * Cut a byte stream into chunks; each yielded Buffer is one chunk. With `acc` (a buffer of at
 * least p.max bytes) nothing is allocated per chunk: a chunk is a view of the read it lies in,
 * or of `acc` when it spans reads (bytes carried over are copied into `acc`, so `src` may reuse
 * its buffer too); each chunk is then valid only until the next one is asked for.
 */
export async function* cutChunks(
  src: AsyncIterable<Buffer>,
  gearU: Uint32Array,
  p: ChunkParams = DEFAULT_CHUNKING,
  acc?: Buffer,
): AsyncGenerator<Buffer> {
  if (acc && acc.length < p.max) throw new RangeError('cutChunks: acc is smaller than a chunk');
  const gear = new Int32Array(gearU.buffer, gearU.byteOffset, 256);
  const mask = ((1 << p.bits) - 1) << (32 - p.bits);
  let parts: Buffer[] = [];
  let len = 0; // bytes of the current chunk held in parts (or in acc)
  let h = 0; // carried across reads: cuts must not depend on where reads end
  const carried = (): Buffer => (acc ? acc.subarray(0, len) : parts.length === 1 ? parts[0] : Buffer.concat(parts));
  const carry = (piece: Buffer) => {
    if (acc) piece.copy(acc, len);
    else parts.push(piece);
    len += piece.length;
  };
  for await (const b of src) {
    let start = 0; // start of the current chunk's bytes within b
    let i = 0;
    while (i < b.length) {
      const cur = len + (i - start);
      if (cur < p.min - 64) {
        // nothing can cut before min: skip to 64 bytes before it (the hash needs 32 to warm up)
        i += Math.min(b.length - i, p.min - 64 - cur);
        h = 0;
        continue;
      }
      // hash up to the max boundary or the end of this read; a cut counts only from min on
      const to = Math.min(b.length, i + (p.max - cur));
      const hashFrom = Math.min(to, i + Math.max(0, p.min - 1 - cur));
      for (; i < hashFrom; i++) h = ((h << 1) + gear[b[i]]) | 0; // warm-up: no cuts yet
      const cut = scan(b, i, to, h, mask, gear);
      h = hashState;
      i = cut < 0 ? to : cut;
      if (cut >= 0 || len + (i - start) >= p.max) {
        if (len === 0) yield b.subarray(start, i);
        else {
          carry(b.subarray(start, i));
          yield carried();
        }
        parts = [];
        len = 0;
        start = i;
        h = 0;
      }
    }
    if (start < b.length) carry(b.subarray(start));
  }
  if (len > 0) yield carried();
}
