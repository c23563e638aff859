/**
 * A long-lived zlib stream taking one input at a time, its output written into a buffer the
 * caller lends, not into a new one per chunk (docs/design/agent-memory.md): the zip writer's
 * deflate of each block, the restore's inflate of each piece of an entry.
 *
 *   const pass = new ZlibPass(zlib.createDeflateRaw({ level, chunkSize: OUT, flush: Z_SYNC_FLUSH }));
 *   const pieces = await pass.run(input, out);   // views of `out` (more only when it overflowed)
 *
 * Node's zlib streams write each output into their `_outBuffer` from `_outOffset` (fields of
 * theirs since Node 0.x); setting them before the write sends the output into `out`. A
 * stream's own output buffers are a new one per chunkSize of output; a buffer per chunk that V8
 * collects only every ~64 MB of them. The stream must be made with a sync flush per write (all
 * of an input's output comes out with it) and a chunkSize no larger than `out`.
 */
import type zlib from 'node:zlib';

/** The fields of Node's zlib stream (lib/zlib.js) its next write's output goes to. */
interface ZlibOutput {
  _outBuffer: Buffer;
  _outOffset: number;
  _chunkSize: number;
}

export class ZlibPass {
  private chunks: Buffer[] = [];

  constructor(readonly z: zlib.DeflateRaw | zlib.InflateRaw) {
    z.on('data', (c: Buffer) => this.chunks.push(c));
    // A failed write rejects its run (below); this keeps the stream's 'error' from being unhandled.
    z.on('error', () => undefined);
  }

  /** `input` through the stream; its output as views of `out`, valid until `out` is lent again. */
  run(input: Buffer, out: Buffer): Promise<Buffer[]> {
    const o = this.z as unknown as ZlibOutput;
    // zlib writes up to chunkSize bytes from _outOffset: the lent buffer must hold them.
    if (out.length < o._chunkSize) throw new Error(`a zlib output buffer of ${out.length} bytes is under ${o._chunkSize}`);
    o._outBuffer = out;
    o._outOffset = 0;
    return new Promise((resolve, reject) => {
      // A stream destroyed by an error may never call the write back.
      const onError = (err: Error) => reject(err);
      this.z.once('error', onError);
      this.z.write(input, (err) => {
        // Output pushed but not yet emitted goes out on a next tick: collect after those.
        setImmediate(() => {
          this.z.off('error', onError);
          const got = this.chunks;
          this.chunks = [];
          if (err) reject(err);
          else resolve(got);
        });
      });
    });
  }

  close(): void {
    this.z.close();
  }
}
