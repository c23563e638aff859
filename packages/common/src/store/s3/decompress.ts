/**
 * A restore's brotli blobs decompressed by one long-lived decoder into one reused output buffer
 * (pack.ts openBlobParts with an `into`): a tree of small files is thousands of compressed
 * blobs, and zlib's brotliDecompressSync makes a new stream (its JS objects and native decoder)
 * and a new output buffer for each, garbage that the daemon's GCs and trims then chase
 * (store-s3-performance.md, session 15).
 *
 *   const d = new BlobDecompressor();
 *   const plain = d.brotli(frames, plainLength);   // a view of d's buffer, valid until its next call
 *   d.close();
 *
 * Node's zlib handle (lib/zlib.js: `_handle.writeSync(flush, in, inOff, inLen, out, outOff,
 * outLen)`, `_writeState` = [output room left, input left], `_handle.reset()`) is what its sync
 * functions use; a failed write destroys the stream (the next call makes another).
 */
import zlib from 'node:zlib';

/** zlib's native handle and its state words, as lib/zlib.js drives them (fields of Node's since 0.x). */
interface Handle {
  writeSync(flush: number, input: Buffer, inOff: number, inLen: number, out: Buffer, outOff: number, outLen: number): void;
  reset(): void;
}
interface Engine {
  _handle: Handle | null;
  _writeState: Uint32Array;
}

/** Output buffers up to this are kept for the next blob; a larger blob's is its own (unmapped once collected). */
const KEEP_MAX = 1 << 20;

export class BlobDecompressor {
  private engine?: zlib.BrotliDecompress;
  private out?: Buffer;

  /**
   * `input` (a blob's compressed bytes, in pieces) decompressed: exactly `plainLength` bytes,
   * else undefined (corrupt, truncated or longer: the caller refuses the blob). The bytes are a
   * view of this decompressor's buffer, overwritten by its next call.
   */
  brotli(input: Buffer[], plainLength: number): Buffer | undefined {
    const room = plainLength + 1; // a byte over: output that fills it is longer than the entry says
    let out = this.out;
    if (!out || out.length < room) {
      out = Buffer.allocUnsafeSlow(room <= KEEP_MAX ? Math.max(64 << 10, Math.min(KEEP_MAX, 2 ** Math.ceil(Math.log2(room)))) : room);
      if (out.length <= KEEP_MAX) this.out = out;
    }
    const e = this.decoder();
    const h = e._handle!;
    const state = e._writeState;
    h.reset();
    let at = 0;
    for (let i = 0; i < input.length; i++) {
      const last = i === input.length - 1;
      const piece = input[i];
      const left = out.length - at;
      h.writeSync(
        last ? zlib.constants.BROTLI_OPERATION_FINISH : zlib.constants.BROTLI_OPERATION_PROCESS,
        piece,
        0,
        piece.length,
        out,
        at,
        left,
      );
      if (this.engine?.destroyed) return this.drop(); // the stream is corrupt or truncated
      at += left - state[0];
      if (state[0] === 0 || (!last && state[1] !== 0)) return undefined; // longer than its entry, or bytes after its end
    }
    return at === plainLength ? out.subarray(0, at) : undefined;
  }

  private decoder(): Engine {
    if (!this.engine || this.engine.destroyed) {
      this.engine = zlib.createBrotliDecompress();
      this.engine.on('error', () => undefined); // a failed write is seen by `destroyed` (brotli above)
    }
    return this.engine as unknown as Engine;
  }

  private drop(): undefined {
    this.engine = undefined;
    return undefined;
  }

  close(): void {
    this.engine?.close();
    this.engine = undefined;
    this.out = undefined;
  }
}
