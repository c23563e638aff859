/**
 * Block index of a backup's archives: what lets the next backup reuse compressed bytes.
 *
 * zip-writer.ts deflates a large file (>= REUSE_MIN) in independent 1 MiB blocks (no
 * dictionary shared between them, each ended with a sync flush), so a block's compressed
 * bytes depend only on its own content. For each such block the index records the SHA-256
 * of the raw bytes, where its compressed bytes lie in the archive, and their CRC-32. The
 * next backup hashes each block of the new file: a block whose hash the previous index
 * holds is copied from the previous archive (after checking the copied bytes' CRC-32)
 * instead of being deflated again. A database that grew by 2% costs 2% of the deflate.
 *
 * The index is `boxback-blocks.json` in the backup directory, listed and checksummed in the
 * manifest like every other file; it is only read when its SHA-256 matches the previous
 * manifest's. A missing or damaged index only means every block is deflated again.
 * A reused block is trusted the way a hard-linked tree file is: it is the same bytes the
 * previous backup verified, checked again by CRC-32 on the way.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import type { BackupRef, BackupStore, RandomAccessFile } from '@boxback/common';

export const BLOCKS_FILE = 'boxback-blocks.json';
export const BLOCKS_FORMAT = 'boxback/zip-blocks@2';
export const BLOCK_SIZE = 1 << 20;
/** Files smaller than this are deflated whole every time (not worth an index). */
export const REUSE_MIN = 4 * BLOCK_SIZE;

/**
 * One block: [raw SHA-256 hex, raw size, offset of its compressed bytes in the archive,
 * compressed size, CRC-32 of the compressed bytes, CRC-32 of the raw bytes].
 */
export type BlockRecord = [sha: string, size: number, offset: number, csize: number, ccrc: number, crc: number];

/** archive name -> entry name -> its blocks in order. */
export type BlockIndex = Record<string, Record<string, BlockRecord[]>>;

/** What an archive being written may reuse: the previous archive and its blocks by raw hash. */
export interface ReuseSource {
  /** The previous archive's name in its backup. */
  archive: string;
  /** Opens it for random reads (through the store). */
  open(): Promise<RandomAccessFile>;
  bySha: Map<string, BlockRecord>;
}

/** Write the index (small: 1k blocks per GiB of database) into the backup directory. */
export async function writeBlockIndex(dir: string, index: BlockIndex): Promise<{ sha256: string; bytes: number } | undefined> {
  if (Object.keys(index).length === 0) return undefined;
  const text = `${JSON.stringify({ format: BLOCKS_FORMAT, blockSize: BLOCK_SIZE, archives: index })}\n`;
  await fsp.writeFile(path.join(dir, BLOCKS_FILE), text, { mode: 0o644 });
  return { sha256: createHash('sha256').update(text).digest('hex'), bytes: Buffer.byteLength(text) };
}

/**
 * The previous backup's index, when its SHA-256 is the one its manifest lists: per archive,
 * the blocks by raw hash. Anything wrong gives an empty result (everything deflated again).
 */
export async function readBlockIndex(
  store: BackupStore,
  prev: BackupRef,
  expectedSha: string | undefined,
): Promise<Map<string, ReuseSource>> {
  if (!expectedSha) return new Map();
  try {
    const text = await buffer(await store.openFile(prev, BLOCKS_FILE));
    if (createHash('sha256').update(text).digest('hex') !== expectedSha) return new Map();
    return parseBlockIndex(text, (archive) => store.openRandomAccess(prev, archive));
  } catch {
    return new Map(); // no index, or not readable: nothing to reuse
  }
}

/** An index file's archives as reuse sources, each opened by `open` (empty when it is not this format). Throws on bad JSON. */
export function parseBlockIndex(text: Buffer, open: (archive: string) => Promise<RandomAccessFile>): Map<string, ReuseSource> {
  const out = new Map<string, ReuseSource>();
  const doc = JSON.parse(text.toString('utf8')) as { format?: string; blockSize?: number; archives?: BlockIndex };
  if (doc.format !== BLOCKS_FORMAT || doc.blockSize !== BLOCK_SIZE || !doc.archives) return out;
  for (const [archive, entries] of Object.entries(doc.archives)) {
    const bySha = new Map<string, BlockRecord>();
    for (const blocks of Object.values(entries)) for (const b of blocks) if (b.length === 6 && b[1] === BLOCK_SIZE) bySha.set(b[0], b);
    out.set(archive, { archive, open: () => open(archive), bySha });
  }
  return out;
}

// CRC-32 arithmetic (zlib's crc32_combine): the CRC of a file from the CRCs of its blocks, so a
// reused block's raw bytes need no second pass. Polynomials are 32-bit, bit-reversed.
const POLY = 0xedb88320;

/** a(x) * b(x) modulo the CRC polynomial. */
function multModP(a: number, b: number): number {
  let m = 1 << 31;
  let p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** X2N[k] = x^(2^k) modulo the polynomial. */
const X2N = (() => {
  const t = new Uint32Array(32);
  let p = 1 << 30; // x^1
  t[0] = p;
  for (let n = 1; n < 32; n++) t[n] = p = multModP(p, p);
  return t;
})();

/** x^(n * 2^k) modulo the polynomial. */
function x2nModP(n: number, k: number): number {
  let p = (1 << 31) >>> 0; // x^0
  while (n) {
    if (n & 1) p = multModP(X2N[k & 31], p);
    n = Math.floor(n / 2);
    k++;
  }
  return p;
}

/** CRC-32 of A followed by B, from crc(A), crc(B) and B's length. */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  return (multModP(x2nModP(lengthB, 3), crcA) ^ crcB) >>> 0;
}
