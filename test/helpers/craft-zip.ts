/**
 * A tiny zip writer for crafted archives (stored, no compression, unless `deflated`) that
 * writes whatever names and Unix attributes it is given: absolute paths, '..', symlinks,
 * devices, setuid bits; and, for damaged entries, whatever compressed bytes, size and CRC-32
 * it is told. Info-ZIP and yazl both refuse or clean such names, which is the point here.
 */
import { writeFileSync } from 'node:fs';
import zlib from 'node:zlib';

export interface CraftEntry {
  name: string;
  /** Full st_mode, type bits included (0o100644 file, 0o120777 symlink, 0o020644 char device...). */
  mode?: number;
  data?: string | Buffer;
  /** Stored deflated (method 8) instead of stored as is. */
  deflated?: boolean;
  /** The compressed bytes written instead of the data's (a damaged entry). */
  raw?: Buffer;
  /** The size (uncompressed) and CRC-32 the headers give instead of the data's. */
  size?: number;
  crc?: number;
}

export const S = { file: 0o100000, dir: 0o040000, link: 0o120000, chr: 0o020000, fifo: 0o010000 };

export function craftZip(file: string, entries: CraftEntry[]): void {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const data = Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data ?? '', 'utf8');
    const crc = (e.crc ?? zlib.crc32(data)) >>> 0;
    const stored = e.raw ?? (e.deflated ? zlib.deflateRawSync(data) : data);
    const size = e.size ?? data.length;
    const method = e.deflated ? 8 : 0;
    const mode = e.mode ?? (e.name.endsWith('/') ? S.dir | 0o755 : S.file | 0o644);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(0x0800, 6);
    lh.writeUInt16LE(method, 8);
    lh.writeUInt16LE(0, 10);
    lh.writeUInt16LE(0x5821, 12);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(stored.length, 18);
    lh.writeUInt32LE(size, 22);
    lh.writeUInt16LE(name.length, 26);
    lh.writeUInt16LE(0, 28);
    locals.push(lh, name, stored);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE((3 << 8) | 30, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(0x0800, 8);
    ch.writeUInt16LE(method, 10);
    ch.writeUInt16LE(0, 12);
    ch.writeUInt16LE(0x5821, 14);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(stored.length, 20);
    ch.writeUInt32LE(size, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt16LE(0, 30);
    ch.writeUInt16LE(0, 32);
    ch.writeUInt16LE(0, 34);
    ch.writeUInt16LE(0, 36);
    const ext = (((mode & 0xffff) << 16) >>> 0) + ((mode & 0o170000) === S.dir ? 0x10 : 0);
    ch.writeUInt32LE(ext >>> 0, 38);
    ch.writeUInt32LE(offset, 42);
    centrals.push(ch, name);
    offset += lh.length + name.length + stored.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  writeFileSync(file, Buffer.concat([...locals, cd, end]));
}
