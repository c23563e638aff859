/**
 * Giving memory back once a burst of work is over (docs/design/agent-memory.md).
 *
 * A backup, a restore or a watcher's first scan leaves tens of MiB of garbage in V8's old
 * space. The daemon is then idle, allocates nothing, so no GC comes to collect it: V8's
 * memory reducer may run 10-30 s later, or not at all, and until then the RSS stays at the
 * job's peak (measured: 206 MB for an hour-long idle after the first scan of a 200k-file
 * tree, 100 MB once collected). So when such a burst ends, the agent asks for one full GC
 * (the daemon runs with --expose-gc, node-flags.ts), a moment later, once:
 *
 *   releaseMemorySoon(log, 'backup finished');   // after a job, after a first scan
 *
 * The freed pages go back to the system a moment after the GC (V8 unmaps them in the
 * background), so the log line's RSS figure is the one before that.
 *
 * Without --expose-gc (the agent's code run in another process: tests, one-shot runs) it
 * does nothing. Calls within the delay share one GC.
 */
import v8 from 'node:v8';
import type { Logger } from '@boxback/common';
import { fixMmapThreshold, trimNativeHeap } from './native.js';

const DELAY_MS = 1000;
let pending: NodeJS.Timeout | undefined;

/** V8's gc() (full, synchronous; the options form does not collect on Node 20). */
type Gc = () => void;

function setCompacting(on: boolean): void {
  try {
    v8.setFlagsFromString(on ? '--compact-on-every-full-gc' : '--no-compact-on-every-full-gc');
  } catch {
    // a Node whose V8 flags are frozen: the GC still runs, without the extra compaction
  }
}

/** Entries a job handled since its last full GC (collectEvery). */
let handled = 0;
const ENTRIES_PER_GC = 20_000;

/**
 * A job going through a backup's entries one by one (a restore's VERIFY) reports how many it
 * handled; every 20k the daemon runs one full GC. Each entry leaves garbage (its manifest line,
 * the parsed entry, an lstat result, promises) that outlives the young generation while its
 * I/O is in flight, and V8 lets the old generation grow to a multiple of what the watcher keeps
 * live before it collects: a restore at 120k entries went from 100 to 220 MB of JS heap.
 * A full GC costs a few tens of ms. Without --expose-gc it does nothing.
 */
export function collectEvery(entries: number): void {
  const gc = (globalThis as { gc?: Gc }).gc;
  if (!gc) return;
  handled += entries;
  if (handled < ENTRIES_PER_GC) return;
  handled = 0;
  gc();
}

/** What waits for the GC that is due (releaseMemorySoon's `then`). */
let after: Array<() => void> = [];

/**
 * Run one full GC after DELAY_MS (unless one is already due), and log what it freed; then
 * `then`, if given (without --expose-gc: `then` after DELAY_MS all the same). A restore's
 * re-watch of the trees it replaced waits for it: the scan then starts from the heap the
 * restore left collected, not on top of its garbage. Due while a job runs (boundHeap), it waits
 * for the job's end: its compaction would add to the job's peak RSS.
 */
export function releaseMemorySoon(log: Logger, why: string, then?: () => void): void {
  const gc = (globalThis as { gc?: Gc }).gc;
  if (then) after.push(then);
  if (pending) return;
  const runAfter = () => {
    const fns = after;
    after = [];
    for (const fn of fns) fn();
  };
  if (!gc) {
    if (after.length) {
      pending = setTimeout(() => {
        pending = undefined;
        runAfter();
      }, DELAY_MS);
      pending.unref();
    }
    return;
  }
  pending = setTimeout(() => {
    pending = undefined;
    if (jobs > 0) {
      // A job started meanwhile (the bench's and a controller's first job come right after the
      // daemon's start, as its watchers' first scans end): a compacting GC now would add its
      // evacuation pages (+25-30 MB for ~50 ms) to the job's own peak; the job's end collects
      // (server.ts), and its heap is bounded until then (boundHeap). What waits for this GC
      // (a re-watch after a restore) waits for that one.
      deferred ??= { log, why };
      return;
    }
    try {
      collectNow(log, why);
    } finally {
      runAfter();
    }
  }, DELAY_MS);
  pending.unref();
}

/** Jobs running under boundHeap; a release GC due meanwhile waits for the last one's end (deferred). */
let jobs = 0;
let deferred: { log: Logger; why: string } | undefined;

function jobEnded(): void {
  if (--jobs > 0 || !deferred) return;
  const d = deferred;
  deferred = undefined;
  releaseMemorySoon(d.log, `${d.why} (after the job)`);
}

/** One full compacting GC now, then malloc_trim, and a log line of what they freed. */
function collectNow(log: Logger, why: string): void {
  const gc = (globalThis as { gc?: Gc }).gc;
  if (!gc) return;
  const before = process.memoryUsage();
  const t0 = performance.now();
  // Compacting this one GC moves the survivors out of the half-empty pages the burst left,
  // so those pages go back too (measured: old space 76 -> 35 MiB after a 200k-file first
  // scan). V8 reads the flag during the GC; it is set back at once.
  setCompacting(true);
  try {
    gc();
  } finally {
    setCompacting(false);
  }
  // glibc keeps the memory a job freed (its arenas' free chunks) mapped: give it back.
  const trimmed = trimNativeHeap();
  const now = process.memoryUsage();
  const mb = (b: number) => Math.round(b / 1e5) / 10;
  log.debug(
    {
      why,
      ms: Math.round(performance.now() - t0),
      heapUsedMb: [mb(before.heapUsed), mb(now.heapUsed)],
      heapTotalMb: [mb(before.heapTotal), mb(now.heapTotal)],
      rssMb: [mb(before.rss), mb(now.rss)],
      trimmed,
    },
    'memory released',
  );
}

/** glibc's initial mmap threshold, which the daemon keeps (fixNativeHeap). */
const MMAP_THRESHOLD = 128 * 1024;

/**
 * At the daemon's start: glibc's mmap threshold fixed at 128 KiB (its initial value), so that
 * every buffer of 128 KiB or more (a GET's, a pack's, a zip block's, a decompressed blob's) is
 * a mapping of its own, given back to the system as soon as V8 frees its ArrayBuffer.
 *
 * By default glibc raises the threshold to the size of each mmapped chunk that is freed (up to
 * 32 MiB): after the first 4 MiB buffer is freed, every later one up to that size comes from
 * the main heap, whose freed pages stay resident until a malloc_trim (boundHeap runs one every
 * second) and fragment around live ones. In the S3 restore the main heap grew to 54 MB while
 * the ArrayBuffers fell from 45 to 26 MB, and the peak was there (store-s3-performance.md).
 * BOXBACK_MMAP_THRESHOLD=0 leaves glibc's default; MALLOC_MMAP_THRESHOLD_ in the environment
 * (glibc's own setting) is left alone too. Without the addon it does nothing.
 */
export function fixNativeHeap(log: Logger, env: NodeJS.ProcessEnv = process.env): void {
  if (env.MALLOC_MMAP_THRESHOLD_ !== undefined) return;
  const want = env.BOXBACK_MMAP_THRESHOLD === undefined ? MMAP_THRESHOLD : Number(env.BOXBACK_MMAP_THRESHOLD);
  if (!Number.isInteger(want) || want <= 0) return;
  if (fixMmapThreshold(want)) log.debug({ bytes: want }, 'native heap: mmap threshold fixed');
}

/** boundHeap's budgets for one job, in bytes (default HEAP_BUDGET and BUFFER_BUDGET). */
export interface HeapBudgets {
  heap: number;
  buffers: number;
}

/**
 * A restore's budgets: half the backups'. Its garbage is mostly buffers (every small file's
 * decrypted and decompressed blob, every GET's socket buffers: ~150-250 MB per small-box
 * restore), and the database archive's extraction runs beside the trees' fetch, so its peak
 * was the buffers' and the heap's highs on top of both (store-s3-performance.md, session 14).
 */
export const RESTORE_BUDGETS: HeapBudgets = { heap: 16 * 1024 * 1024, buffers: 12 * 1024 * 1024 };

/** Garbage a job may pile up in the JS heap before boundHeap collects it. */
const HEAP_BUDGET = 24 * 1024 * 1024;
/** Dead buffers (ArrayBuffers' memory, outside the JS heap) a job may pile up before boundHeap collects them. */
const BUFFER_BUDGET = 24 * 1024 * 1024;
const HEAP_CHECK_MS = 250;
/** Every this many checks (1 s), and at the check after each of its GCs, boundHeap gives glibc's free memory back (malloc_trim). */
const TRIM_EVERY = 4;

/**
 * Run job `fn` with its memory bounded: every HEAP_CHECK_MS, when the JS heap has grown by more
 * than HEAP_BUDGET since the lowest it was seen (after our GC or V8's), or the ArrayBuffers'
 * memory by more than BUFFER_BUDGET since theirs, one full GC.
 *
 * A backup or a restore at the default file counts makes its garbage by the 120k-entry pass
 * (manifest lines, parsed entries, lstat results, promises), and the pieces outlive the young
 * generation while their I/O is in flight; V8 then lets the old generation grow to several
 * times what is live before a major GC: the heap reached 137-150 MB in an incremental and a
 * restore with ~50 MB live (docs/design/agent-memory.md). Buffers die the same way (each archive
 * written leaves its write, read-back and block buffers, 3-25 MiB), and V8 collects dead
 * ArrayBuffers only once external memory has grown by ~64 MB since its last full GC: a backup's
 * ArrayBuffers reached 54 MB, most of them dead. Without --expose-gc it just runs `fn`.
 *
 * With the native addon it also runs malloc_trim every second and at the check after each of its GCs:
 * what a job frees natively (its buffers' backing stores, zlib streams, the thread pool's
 * arenas) stays mapped in glibc's arenas until a trim, and the daemon's RSS at the default
 * size grew ~10 MB outside the JS heap and ArrayBuffers during an incremental
 * (docs/design/agent-memory.md).
 */
export async function boundHeap<T>(log: Logger, fn: () => Promise<T>, budgets: Partial<HeapBudgets> = {}): Promise<T> {
  const heapBudget = budgets.heap ?? HEAP_BUDGET;
  const bufferBudget = budgets.buffers ?? BUFFER_BUDGET;
  const gc = (globalThis as { gc?: Gc }).gc;
  if (!gc) return fn();
  jobs++;
  const buffers = () => process.memoryUsage().arrayBuffers;
  let floor = v8.getHeapStatistics().used_heap_size;
  let bufferFloor = buffers();
  let runs = 0;
  let ms = 0;
  let ticks = 0;
  const trims = { n: 0, ms: 0, bytes: 0 };
  let trimNext = false;
  const trim = () => {
    const t0 = performance.now();
    const before = process.memoryUsage.rss();
    if (!trimNativeHeap()) return;
    trims.n++;
    trims.bytes += Math.max(0, before - process.memoryUsage.rss());
    trims.ms += performance.now() - t0;
  };
  const timer = setInterval(() => {
    const used = v8.getHeapStatistics().used_heap_size;
    const ab = buffers();
    if (used < floor) floor = used;
    if (ab < bufferFloor) bufferFloor = ab;
    if (used - floor <= heapBudget && ab - bufferFloor <= bufferBudget) {
      if (++ticks % TRIM_EVERY === 0 || trimNext) {
        trimNext = false;
        trim();
      }
      return;
    }
    const t0 = performance.now();
    gc();
    ms += performance.now() - t0;
    runs++;
    floor = v8.getHeapStatistics().used_heap_size;
    bufferFloor = buffers();
    // V8 frees the dead buffers' memory after the GC, on its sweeper thread: a trim now would
    // find little of it free (a restore's peak was ~30 MB of small buffers freed into glibc's
    // heap just after a GC, kept until the next second's trim). The next check trims.
    trimNext = true;
  }, HEAP_CHECK_MS);
  timer.unref();
  try {
    return await fn();
  } finally {
    clearInterval(timer);
    jobEnded();
    log.debug(
      { gcs: runs, gcMs: Math.round(ms), trims: trims.n, trimMs: Math.round(trims.ms), trimmedMb: Math.round(trims.bytes / 1e5) / 10 },
      'heap bounded during the job',
    );
  }
}
