/**
 * The bytes of a zip file (PKWARE APPNOTE 6.3): local headers, data descriptors, central
 * directory records and the end records, zip64 where a size or offset needs it. What
 * zip-writer.ts writes, and nothing else: no encryption, no comments, one disk.
 *
 * What each entry carries, so that Info-ZIP `unzip` and Java's ZipInputStream read it:
 *   - "version made by" Unix (3) and external attributes = st_mode << 16: modes and symlinks
 *   - DOS date and time (local time, 2 s) plus the extended-timestamp field ("UT", mtime) in
 *     the local header and the central record: unzip restores mtimes to the second
 *   - file data deflated (method 8) with general purpose bit 3: CRC-32 and sizes follow the
 *     data in a data descriptor (what GoCD's own ZipOutputStream writes); 8-byte sizes there
 *     when the local header has a zip64 field
 *   - directories and symlinks stored (method 0) with their CRC and sizes in the local header
 *   - bit 11 (UTF-8) for names that are not ASCII
 */

export const ZIP32_MAX = 0xffffffff;
/** A file this large (or larger) gets a zip64 local header: it may pass 4 GiB while being read. */
export const ZIP64_LOCAL_FROM = 0xf0000000;

const SIG_LOCAL = 0x04034b50;
const SIG_DESCRIPTOR = 0x08074b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;
const FLAG_DESCRIPTOR = 1 << 3;
const FLAG_UTF8 = 1 << 11;
const MADE_BY_UNIX = 3 << 8;

export const METHOD_STORED = 0;
export const METHOD_DEFLATED = 8;

/** One entry as the central directory needs it. */
export interface CentralEntry {
  name: Buffer;
  method: number;
  /** Data descriptor used (deflated file data). */
  descriptor: boolean;
  /** The local header has a zip64 extra field (and the descriptor 8-byte sizes). */
  zip64Local: boolean;
  crc: number;
  compressedSize: number;
  size: number;
  offset: number;
  mode: number;
  mtime: Date;
}

function dosDateTime(d: Date): { date: number; time: number } {
  const year = d.getFullYear();
  if (year < 1980) return { date: (1 << 5) | 1, time: 0 };
  const date = ((Math.min(year, 2107) - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate();
  const time = (d.getHours() << 11) | (d.getMinutes() << 5) | Math.floor(d.getSeconds() / 2);
  return { date, time };
}

/** Extended timestamp field, mtime only (the form Info-ZIP writes in both headers). */
function utField(mtime: Date): Buffer {
  const b = Buffer.alloc(9);
  b.writeUInt16LE(0x5455, 0);
  b.writeUInt16LE(5, 2);
  b.writeUInt8(1, 4);
  b.writeInt32LE(Math.min(0x7fffffff, Math.max(-0x80000000, Math.floor(mtime.getTime() / 1000))), 5);
  return b;
}

function flagsFor(name: Buffer, descriptor: boolean): number {
  let flags = descriptor ? FLAG_DESCRIPTOR : 0;
  for (const c of name) {
    if (c >= 0x80) {
      flags |= FLAG_UTF8;
      break;
    }
  }
  return flags;
}

/**
 * A local file header. With a descriptor, CRC and sizes are zero here and follow the data.
 * A zip64 local header carries a zip64 extra field with zero sizes (the descriptor has them).
 */
export function localHeader(e: Omit<CentralEntry, 'offset' | 'compressedSize'> & { compressedSize?: number }): Buffer {
  const { date, time } = dosDateTime(e.mtime);
  const extras = [utField(e.mtime)];
  if (e.zip64Local) {
    const z = Buffer.alloc(20);
    z.writeUInt16LE(0x0001, 0);
    z.writeUInt16LE(16, 2);
    extras.push(z);
  }
  const extra = Buffer.concat(extras);
  const h = Buffer.alloc(30);
  h.writeUInt32LE(SIG_LOCAL, 0);
  h.writeUInt16LE(e.zip64Local ? 45 : 20, 4);
  h.writeUInt16LE(flagsFor(e.name, e.descriptor), 6);
  h.writeUInt16LE(e.method, 8);
  h.writeUInt16LE(time, 10);
  h.writeUInt16LE(date, 12);
  const known = !e.descriptor;
  h.writeUInt32LE(known ? e.crc >>> 0 : 0, 14);
  h.writeUInt32LE(e.zip64Local ? ZIP32_MAX : known ? (e.compressedSize ?? e.size) : 0, 18);
  h.writeUInt32LE(e.zip64Local ? ZIP32_MAX : known ? e.size : 0, 22);
  h.writeUInt16LE(e.name.length, 26);
  h.writeUInt16LE(extra.length, 28);
  return Buffer.concat([h, e.name, extra]);
}

/** The data descriptor after a deflated entry's data (signature, CRC-32, sizes). */
export function dataDescriptor(crc: number, compressedSize: number, size: number, zip64: boolean): Buffer {
  const b = Buffer.alloc(zip64 ? 24 : 16);
  b.writeUInt32LE(SIG_DESCRIPTOR, 0);
  b.writeUInt32LE(crc >>> 0, 4);
  if (zip64) {
    b.writeBigUInt64LE(BigInt(compressedSize), 8);
    b.writeBigUInt64LE(BigInt(size), 16);
  } else {
    b.writeUInt32LE(compressedSize, 8);
    b.writeUInt32LE(size, 12);
  }
  return b;
}

/** One central directory record; zip64 extra for whichever of size, compressed size, offset needs it. */
export function centralRecord(e: CentralEntry): Buffer {
  const { date, time } = dosDateTime(e.mtime);
  const z64: bigint[] = [];
  if (e.size >= ZIP32_MAX) z64.push(BigInt(e.size));
  if (e.compressedSize >= ZIP32_MAX) z64.push(BigInt(e.compressedSize));
  if (e.offset >= ZIP32_MAX) z64.push(BigInt(e.offset));
  const extras = [utField(e.mtime)];
  if (z64.length) {
    const z = Buffer.alloc(4 + 8 * z64.length);
    z.writeUInt16LE(0x0001, 0);
    z.writeUInt16LE(8 * z64.length, 2);
    z64.forEach((v, i) => z.writeBigUInt64LE(v, 4 + 8 * i));
    extras.push(z);
  }
  const extra = Buffer.concat(extras);
  const needs64 = z64.length > 0 || e.zip64Local;
  const h = Buffer.alloc(46);
  h.writeUInt32LE(SIG_CENTRAL, 0);
  h.writeUInt16LE(MADE_BY_UNIX | (needs64 ? 45 : 20), 4);
  h.writeUInt16LE(needs64 ? 45 : 20, 6);
  h.writeUInt16LE(flagsFor(e.name, e.descriptor), 8);
  h.writeUInt16LE(e.method, 10);
  h.writeUInt16LE(time, 12);
  h.writeUInt16LE(date, 14);
  h.writeUInt32LE(e.crc >>> 0, 16);
  h.writeUInt32LE(Math.min(e.compressedSize, ZIP32_MAX), 20);
  h.writeUInt32LE(Math.min(e.size, ZIP32_MAX), 24);
  h.writeUInt16LE(e.name.length, 28);
  h.writeUInt16LE(extra.length, 30);
  h.writeUInt16LE(0, 32); // comment
  h.writeUInt16LE(0, 34); // disk
  h.writeUInt16LE(0, 36); // internal attributes
  h.writeUInt32LE(((e.mode & 0xffff) << 16) >>> 0, 38);
  h.writeUInt32LE(Math.min(e.offset, ZIP32_MAX), 42);
  return Buffer.concat([h, e.name, extra]);
}

/** The end of the archive: zip64 end record and locator when needed, then the classic end record. */
export function endRecords(entries: number, cdOffset: number, cdSize: number): Buffer {
  const parts: Buffer[] = [];
  const needs64 = entries >= 0xffff || cdOffset >= ZIP32_MAX || cdSize >= ZIP32_MAX;
  if (needs64) {
    const eocd64Offset = cdOffset + cdSize;
    const r = Buffer.alloc(56);
    r.writeUInt32LE(SIG_EOCD64, 0);
    r.writeBigUInt64LE(44n, 4);
    r.writeUInt16LE(MADE_BY_UNIX | 45, 12);
    r.writeUInt16LE(45, 14);
    r.writeUInt32LE(0, 16);
    r.writeUInt32LE(0, 20);
    r.writeBigUInt64LE(BigInt(entries), 24);
    r.writeBigUInt64LE(BigInt(entries), 32);
    r.writeBigUInt64LE(BigInt(cdSize), 40);
    r.writeBigUInt64LE(BigInt(cdOffset), 48);
    const l = Buffer.alloc(20);
    l.writeUInt32LE(SIG_EOCD64_LOCATOR, 0);
    l.writeUInt32LE(0, 4);
    l.writeBigUInt64LE(BigInt(eocd64Offset), 8);
    l.writeUInt32LE(1, 16);
    parts.push(r, l);
  }
  const e = Buffer.alloc(22);
  e.writeUInt32LE(SIG_EOCD, 0);
  e.writeUInt16LE(Math.min(entries, 0xffff), 8);
  e.writeUInt16LE(Math.min(entries, 0xffff), 10);
  e.writeUInt32LE(Math.min(cdSize, ZIP32_MAX), 12);
  e.writeUInt32LE(Math.min(cdOffset, ZIP32_MAX), 16);
  parts.push(e);
  return Buffer.concat(parts);
}

/** A final, empty deflate block (fixed Huffman, end-of-block only): ends a stream of sync-flushed blocks. */
export const DEFLATE_END = Buffer.from([0x03, 0x00]);
