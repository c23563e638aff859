/**
 * Whether and how a new blob is compressed before it is sealed into a pack (pack.ts): raw
 * deflate at level 1, kept only when it saves at least 1/16 of the blob. CI data is mixed:
 * logs and reports compress 3-4x, jars and zips (db.zip is deflated already) not at all, so a
 * blob of 64 KiB or more is first probed (32 KiB from its middle deflated): an incompressible
 * one costs that probe, not a whole deflate. A blob under the chunker's minimum (a small file
 * whole: logs, reports) is deflated on the spot; a larger one (a chunk of a big file) on libuv's
 * thread pool in one round trip (its output buffer sized for it), so the event loop keeps
 * reading and uploading meanwhile. Measured on the shared 2-core machine (store-s3-performance.md):
 * 1000 reports of 16-96 KiB took 0.46 s of CPU deflated here, 0.70 s through the pool one at a
 * time and 1.2-1.3 s four at a time (each async deflate is several pool round trips; with the
 * two trees and the zip writer all deflating at once, the pool's threads fought for two cores).
 */
import { promisify } from 'node:util';
import { deflateRaw, deflateRawSync } from 'node:zlib';

const deflateAsync = promisify(deflateRaw);
const LEVEL = 1;
/** Below this, not worth a try (the sealing's own overhead is 53 bytes). */
const MIN = 512;
/** Up to this, deflated on the JS thread (the pool's round trips cost more CPU than the deflate); above, on the pool. */
const SYNC_MAX = 256 * 1024;
const PROBE_FROM = 64 * 1024;
const PROBE = 32 * 1024;

const worth = (packed: number, plain: number) => packed <= plain - plain / 16;

/** The blob's raw deflate when it is worth keeping, else undefined (stored as it is). */
export async function maybeDeflate(plain: Buffer): Promise<Buffer | undefined> {
  if (plain.length < MIN) return undefined;
  if (plain.length >= PROBE_FROM) {
    const mid = Math.floor((plain.length - PROBE) / 2);
    if (!worth(deflateRawSync(plain.subarray(mid, mid + PROBE), { level: LEVEL }).length, PROBE)) return undefined;
  }
  const z =
    plain.length <= SYNC_MAX
      ? deflateRawSync(plain, { level: LEVEL })
      : // one output chunk as long as the blob: one pool round trip, not one per 16 KiB of output
        await deflateAsync(plain, { level: LEVEL, chunkSize: plain.length + 1024 });
  return worth(z.length, plain.length) ? z : undefined;
}
