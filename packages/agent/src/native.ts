/**
 * The agent's native addon (packages/agent/native/inotify.c, built by node-gyp at `npm ci`
 * with this Node's headers, nothing downloaded): the change journal's inotify watches
 * (journal/dir-watch.ts), glibc's `malloc_trim` (memory.ts), SHA-256 and the block reads and
 * checked writes of a database archive on libuv's pool (backup/hash-thread.ts, which types those
 * functions) and a nanosecond
 * mtime setter (utimensat) that a journaled sync sets its directories' mtimes with
 * (registered below with @boxback/common's useNanosecondMtimes: no rsync run for them), and a
 * tree's read-ahead on a thread of its own (prefetch.c; registered with useReadAhead: a first S3
 * backup's trees), and AES-GCM in place (gcm.c; registered with useOpenInPlace: a restore from S3
 * decrypts blobs in their GET buffers; useSealInPlace: a backup to S3 seals them straight into
 * its packs; BOXBACK_GCM_IN_PLACE=off leaves Node's for both). Optional: on a host where it
 * was not built (no compiler), or with BOXBACK_INOTIFY_ADDON=off, it is undefined and the
 * agent uses Node's own watch handles (more memory, same behaviour) and skips the trim.
 * BOXBACK_INOTIFY_ADDON=/path/to/boxback_inotify.node names another build.
 */
import { createRequire } from 'node:module';
import { useFileDigests, useNanosecondMtimes, useOpenInPlace, useReadAhead, useSealInPlace } from '@boxback/common';
import { fileURLToPath } from 'node:url';

export interface NativeAddon {
  /** Open the process's inotify instance and poll it: `cb(Buffer)` per read of raw events, `cb(-errno)` if reading fails; 0 or -errno. */
  start(cb: (data: Buffer | number) => void): number;
  /** inotify_add_watch: a watch descriptor, or -errno. */
  add(path: string, mask: number): number;
  /** inotify_rm_watch: 0 or -errno. */
  rm(wd: number): number;
  /** Whether the watches keep the process alive. */
  ref(on: boolean): void;
  /** malloc_trim(0): 1 if memory went back to the system. */
  trim(): number;
  /** mallopt(M_MMAP_THRESHOLD, bytes): 1 if set. Absent from builds before it. */
  mmapThreshold?(bytes: number): number;
  /** utimensat: the path's mtime to the nanosecond, atime and a symlink's target untouched; 0 or -errno. Absent from builds before it. */
  setMtime?(path: string, sec: number, nsec: number): number;
  /** A tree's read-ahead on a thread of its own (prefetch.c): starts at once. Absent from builds before it. */
  prefetchStart?(root: string, windowBytes: number): object;
  /** The reader has consumed this many more bytes of the tree. */
  prefetchConsumed?(handle: object, bytes: number): void;
  /** Stop and join the thread: [files, bytes] read ahead. */
  prefetchStop?(handle: object): [number, number];
  /** Whether Node's OpenSSL SHA-256 was found (the hashing functions need it). */
  hashAvailable?(): boolean;
  /** Many files' sizes and SHA-256 in one request on the pool (digest-files.c; @boxback/common's DigestFiles). Absent from builds before it. */
  digestFiles?(paths: Buffer, count: number, sizes: Float64Array, digests: Buffer): Promise<void>;
  /** Whether Node's OpenSSL AES-GCM was found (gcm.c). Absent from builds before it. */
  gcmAvailable?(): boolean;
  /** A sealed object's frames in buf[start, end) decrypted in place: -1, or the first frame whose tag failed (gcm.c). */
  gcmOpenFrames?(key: Buffer, aad: Buffer, buf: Buffer, start: number, end: number, frameLog2: number): number;
  /** gcm.c: `plain`'s frames sealed into out[at..] (AES-256-GCM, each frame's tag after it); the bytes written, -1 on failure. */
  gcmSealAvailable?(): boolean;
  gcmSealFrames?(key: Buffer, aad: Buffer, plain: Buffer, out: Buffer, at: number, frameLog2: number): number;
}

function load(): NativeAddon | undefined {
  const env = process.env.BOXBACK_INOTIFY_ADDON;
  if (process.platform !== 'linux' || env === 'off') return undefined;
  const req = createRequire(import.meta.url);
  const candidates = env
    ? [env]
    : [
        // packages/agent/{src,dist}/ -> packages/agent/native/build/Release (npm ci builds it there)
        fileURLToPath(new URL('../native/build/Release/boxback_inotify.node', import.meta.url)),
        // a bundle (scripts/bundle.mjs): native/ beside it
        fileURLToPath(new URL('./native/boxback_inotify.node', import.meta.url)),
      ];
  for (const c of candidates) {
    try {
      return req(c) as NativeAddon;
    } catch {
      // not there: the next one, then none
    }
  }
  return undefined;
}

export const nativeAddon: NativeAddon | undefined = load();

// A journaled sync's directories' mtimes set in place (store/local/incremental-sync.ts).
if (typeof nativeAddon?.setMtime === 'function') useNanosecondMtimes(nativeAddon.setMtime.bind(nativeAddon));

// A restore's check of a fresh tree copy reads and hashes its files on the pool (file-digests.ts).
if (typeof nativeAddon?.digestFiles === 'function' && nativeAddon.hashAvailable?.())
  useFileDigests(nativeAddon.digestFiles.bind(nativeAddon));

// A first S3 backup's trees read ahead on the addon's thread (store/read-ahead.ts).
const { prefetchStart, prefetchConsumed, prefetchStop } = nativeAddon ?? {};
if (prefetchStart && prefetchConsumed && prefetchStop)
  useReadAhead((root, windowBytes) => {
    const h = prefetchStart(root, windowBytes);
    return {
      consumed: (bytes) => prefetchConsumed(h, bytes),
      stop: () => {
        const [files, bytes] = prefetchStop(h);
        return { files, bytes };
      },
    };
  });

// A restore from S3 decrypts its blobs in their GET buffers (store/s3/sealed.ts openPartsInPlace).
if (typeof nativeAddon?.gcmOpenFrames === 'function' && nativeAddon.gcmAvailable?.() && process.env.BOXBACK_GCM_IN_PLACE !== 'off')
  useOpenInPlace(nativeAddon.gcmOpenFrames.bind(nativeAddon));
// A backup to S3 seals its blobs straight into the pack's buffer (store/s3/sealed.ts sealInto).
if (typeof nativeAddon?.gcmSealFrames === 'function' && nativeAddon.gcmSealAvailable?.() && process.env.BOXBACK_GCM_IN_PLACE !== 'off')
  useSealInPlace(nativeAddon.gcmSealFrames.bind(nativeAddon));

/** Fix glibc's mmap threshold at `bytes` (`mallopt(M_MMAP_THRESHOLD)`: memory.ts); false without the addon. */
export function fixMmapThreshold(bytes: number): boolean {
  return typeof nativeAddon?.mmapThreshold === 'function' ? nativeAddon.mmapThreshold(bytes) === 1 : false;
}

/** Give the native heap's free memory back to the system (glibc `malloc_trim`); false without the addon. */
export function trimNativeHeap(): boolean {
  return nativeAddon ? nativeAddon.trim() === 1 : false;
}
