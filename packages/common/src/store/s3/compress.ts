/**
 * Whether and how a new blob is compressed before it is sealed into a pack (pack.ts): raw
 * deflate at level 1, kept only when it saves at least 1/16 of the blob. CI data is mixed:
 * logs and reports compress 3-4x, jars and zips (db.zip is deflated already) not at all, so a
 * blob of 64 KiB or more is first probed (32 KiB from its middle deflated): an incompressible
 * one costs that probe, not a whole deflate. Blobs up to 16 KiB are deflated on the spot (a
 * thread-pool round trip costs more); larger ones on libuv's thread pool, so the event loop
 * keeps walking, reading and uploading meanwhile (measured: 2.6 s of a small box's full backup
 * was deflating reports up to 64 KiB on the JS thread).
 */
import { promisify } from 'node:util';
import { deflateRaw, deflateRawSync } from 'node:zlib';

const deflateAsync = promisify(deflateRaw);
const LEVEL = 1;
/** Below this, not worth a try (the sealing's own overhead is 53 bytes). */
const MIN = 512;
/** Up to this, deflated on the JS thread (a thread-pool round trip costs more); above, on the pool. */
const SYNC_MAX = 16 * 1024;
const PROBE_FROM = 64 * 1024;
const PROBE = 32 * 1024;

const worth = (packed: number, plain: number) => packed <= plain - plain / 16;

/** The blob's raw deflate when it is worth keeping, else undefined (stored as it is). */
export async function maybeDeflate(plain: Buffer): Promise<Buffer | undefined> {
  if (plain.length < MIN) return undefined;
  if (plain.length <= SYNC_MAX) {
    const z = deflateRawSync(plain, { level: LEVEL });
    return worth(z.length, plain.length) ? z : undefined;
  }
  if (plain.length < PROBE_FROM) {
    const z = await deflateAsync(plain, { level: LEVEL });
    return worth(z.length, plain.length) ? z : undefined;
  }
  const mid = Math.floor((plain.length - PROBE) / 2);
  if (!worth(deflateRawSync(plain.subarray(mid, mid + PROBE), { level: LEVEL }).length, PROBE)) return undefined;
  const z = await deflateAsync(plain, { level: LEVEL });
  return worth(z.length, plain.length) ? z : undefined;
}
