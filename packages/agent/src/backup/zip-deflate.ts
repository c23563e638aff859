/**
 * A block's compressed bytes without a buffer or a zlib stream made per block
 * (docs/design/agent-memory.md, "No dead buffer per block, per chunk or per hashed file").
 *
 *   stored   a block kept as is (level 0: it does not compress) is framed by hand: stored
 *            deflate blocks of up to 65,535 bytes, each a 5-byte header (BFINAL 0, BTYPE 00,
 *            LEN, NLEN) and a slice of the raw bytes; no copy, no zlib
 *   deflated a block is written to one of a few long-lived raw deflate streams (one per block
 *            in flight and level), each write ended with a sync flush and the stream reset
 *            after it, so every block is still independent (zip-blocks.ts); its output goes
 *            into a buffer the caller lends (OUT_BYTES: the worst case of a block fits;
 *            common/zlib-pass.ts), so a block's compressed bytes are a slice of a pooled
 *            buffer, not a new one
 *
 * `zlib.deflateRaw(block)` made per block a stream (~300 KB of native state) and a 1 MiB output
 * buffer, whatever the block compressed to: at 1 GiB of database that is over a GiB of
 * ArrayBuffers that V8 collects only once external memory grew by ~64 MB since its last GC.
 */
import zlib from 'node:zlib';
import { ZlibPass } from '@boxback/common';

/** The longest stored deflate block (RFC 1951 3.2.4: LEN is 16 bits). */
const STORED_MAX = 0xffff;
/**
 * The size of the output buffer a caller lends: a 1 MiB block deflates to at most 1 MiB and a
 * few hundred bytes (stored blocks' headers, the sync flush); the 64 KiB over is a margin.
 */
export const OUT_BYTES = (1 << 20) + 64 * 1024;

/** `raw` as stored deflate blocks: 5-byte headers and slices of `raw` (valid while `raw` is). */
export function storedBlocks(raw: Buffer): Buffer[] {
  const n = Math.ceil(raw.length / STORED_MAX);
  const heads = Buffer.allocUnsafe(5 * n);
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const from = i * STORED_MAX;
    const len = Math.min(STORED_MAX, raw.length - from);
    const h = heads.subarray(5 * i, 5 * i + 5);
    // BFINAL 0, BTYPE 00, then padding to the byte: one zero byte (every block starts byte-aligned).
    h[0] = 0;
    h.writeUInt16LE(len, 1);
    h.writeUInt16LE(~len & 0xffff, 3);
    out.push(h, raw.subarray(from, from + len));
  }
  return out;
}

/** One raw deflate stream taking one block at a time, reset after each (blocks stay independent). */
class Deflater {
  private readonly pass: ZlibPass;

  constructor(readonly level: number) {
    // Each write ends with a sync flush: byte-aligned, all its output out.
    this.pass = new ZlibPass(zlib.createDeflateRaw({ level, chunkSize: OUT_BYTES, flush: zlib.constants.Z_SYNC_FLUSH }));
  }

  async run(raw: Buffer, out: Buffer): Promise<Buffer[]> {
    const data = await this.pass.run(raw, out);
    // The next block starts a fresh deflate stream (no dictionary from this one).
    (this.pass.z as zlib.DeflateRaw).reset();
    return data;
  }

  close(): void {
    this.pass.close();
  }
}

/** Deflate streams by level, each lent to one block at a time; `close` frees them. */
export class DeflatePool {
  private readonly idle = new Map<number, Deflater[]>();
  private readonly all: Deflater[] = [];

  /**
   * `raw` deflated at `level` (0: stored blocks, slices of `raw`) as independent, byte-aligned
   * deflate blocks, in `out` (OUT_BYTES long; a slice of it unless the output outgrew it).
   */
  async deflate(raw: Buffer, level: number, out: Buffer): Promise<Buffer[]> {
    if (level === 0) return storedBlocks(raw);
    const free = this.idle.get(level) ?? [];
    this.idle.set(level, free);
    let d = free.pop();
    if (!d) {
      d = new Deflater(level);
      this.all.push(d);
    }
    const data = await d.run(raw, out);
    // A stream that failed is not lent again (run rejected above, so it never gets here).
    free.push(d);
    return data;
  }

  close(): void {
    for (const d of this.all) d.close();
    this.all.length = 0;
    this.idle.clear();
  }
}
