/**
 * Whether and how a new blob is compressed before it is sealed into a pack (pack.ts): brotli at
 * quality 2, kept only when it saves at least 1/16 of the blob. CI data is mixed: logs and
 * reports compress 3-4x, jars and zips (db.zip is deflated already) not at all, so a blob of
 * 64 KiB or more is first probed (32 KiB from its middle raw-deflated at level 1, the cheapest
 * test there is): an incompressible one costs that probe, not a whole compression. A blob under
 * the chunker's minimum (a small file whole: logs, reports) is compressed on the spot; a larger
 * one (a chunk of a big file) on libuv's thread pool in one round trip (its output buffer sized
 * for it), so the event loop keeps reading and uploading meanwhile.
 *
 * Why brotli 2 (stores before it: raw deflate level 1, flag 1, still read): on the bench's CI
 * text it stores 17% fewer bytes than deflate 1 for the same CPU (3000 logs of 1-41 KiB: ratio
 * 3.32 vs 2.83, 0.55-0.62 vs 0.55-0.60 s; 1 MiB blocks: 3.13 vs 2.79), and decompresses as fast
 * (docs/design/store-s3-performance.md). Node 20 has no zstd. Measured on the shared 2-core
 * machine: the pool's round trips cost more CPU than a small blob's compression (1000 reports of
 * 16-96 KiB deflated: 0.46 s here, 0.70 s through the pool one at a time, 1.2-1.3 s four at a time).
 */
import { promisify } from 'node:util';
import { brotliCompress, brotliCompressSync, constants as Z, deflateRawSync, type BrotliOptions } from 'node:zlib';
import { BROTLI, type Packed } from './pack.js';

const brotliAsync = promisify(brotliCompress);
const QUALITY = 2;
/** Below this, not worth a try (the sealing's own overhead is 53 bytes). */
const MIN = 512;
/** Up to this, compressed on the JS thread (the pool's round trips cost more CPU than the work); above, on the pool. */
const SYNC_MAX = 256 * 1024;
const PROBE_FROM = 64 * 1024;
const PROBE = 32 * 1024;

const worth = (packed: number, plain: number) => packed <= plain - plain / 16;

const options = (n: number): BrotliOptions => ({
  params: { [Z.BROTLI_PARAM_QUALITY]: QUALITY, [Z.BROTLI_PARAM_SIZE_HINT]: n },
});

/** The blob compressed when that is worth keeping, else undefined (stored as it is). */
export async function maybeCompress(plain: Buffer): Promise<Packed | undefined> {
  if (plain.length < MIN) return undefined;
  if (plain.length >= PROBE_FROM) {
    const mid = Math.floor((plain.length - PROBE) / 2);
    if (!worth(deflateRawSync(plain.subarray(mid, mid + PROBE), { level: 1 }).length, PROBE)) return undefined;
  }
  const bytes =
    plain.length <= SYNC_MAX
      ? brotliCompressSync(plain, options(plain.length))
      : // one output chunk as long as the blob: one pool round trip, not one per 16 KiB of output
        await brotliAsync(plain, { ...options(plain.length), chunkSize: plain.length + 1024 });
  return worth(bytes.length, plain.length) ? { bytes, codec: BROTLI } : undefined;
}
