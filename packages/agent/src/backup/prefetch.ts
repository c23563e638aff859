/**
 * Before the window: the window's datasets are read once, so that the copy taken while the
 * services are stopped finds their pages in the page cache.
 *
 *   list      the datasets' files (a directory dataset walked, a file dataset's files), with
 *             their sizes, until the budget is reached: a quarter of the memory available now
 *   read      each file end to end into one of two 1 MiB buffers (the bytes are dropped: only
 *             the kernel's cached pages matter), 2 files at a time, under the job's signal
 *
 * Why: a file the service has not touched for a while may have left the page cache (this VM's
 * host pages out file pages unused for 60 s; any box under memory pressure does the same).
 * Then the window's copy reads it from disk while the service's users wait: at the bench's
 * default size the window's copy of a cold 1 GiB database took 2.6 s against 0.5 s for `cp -a`
 * of the same files warm. Read here, the disk time moves before the window. Datasets larger
 * than the budget are not read (they would push each other out); a failure to read is not an
 * error (the window's copy reports its own).
 *
 * Beside the stop: the services' stop is mostly the service's own time (its shutdown, its stop
 * command's start-up), when this box's CPUs and disk are idle. The read starts first; after its
 * first quarter (DECIDE_AFTER bytes at least), when the rest at that rate would take at most
 * STOP_SHARE of the time this agent process's last stop took, the stop starts beside it
 * (`onReady`); else the stop waits for the whole read. The window's copy always waits for the read to end. So the window stays as
 * long as before (the read ends within the stop) and the backup is shorter by the read (small
 * bench, 71 MB: QUIESCE 0.19-0.23 s -> 0.14-0.18 s). Decided by this read's own rate, not by the
 * last backup's read (a database in the page cache last time and not now, the default bench's
 * 1 GiB, made the window wait for the whole read), and only once: started beside the tail of a
 * large read (when the rest fell under the bar), the stop slowed the read down and the window's
 * copy grew from 0.31 to 0.46 s at the default size. The first backup after the agent starts
 * reads first. BOXBACK_READ_BESIDE_STOP=off always reads first.
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { mapLimit } from '@boxback/common';
import type { PlanDataset } from '../plan.js';

const CHUNK = 1 << 20;
/** The stop starts beside the read when its rest should take at most this share of the last stop. */
const STOP_SHARE = 0.8;
/** The rate that decides is the one over the first quarter of the read, and at least this many bytes. */
const DECIDE_AFTER = 4 * CHUNK;

/** This process's last stop of the services (ms). */
let lastStopMs: number | undefined;

/** How long the rest of the read may still take when the stop starts (ms): 0 reads first. */
export function besideStopMs(): number {
  if (process.env.BOXBACK_READ_BESIDE_STOP === 'off' || lastStopMs === undefined) return 0;
  return STOP_SHARE * lastStopMs;
}

/** What this backup's stop took: the next backup's besideStopMs. */
export function recordStopTime(stopMs: number): void {
  lastStopMs = stopMs;
}

/** Forget it (tests). */
export function resetStopTime(): void {
  lastStopMs = undefined;
}

export interface PrefetchResult {
  files: number;
  bytes: number;
  /** True when the datasets were larger than the budget and were not read. */
  skipped: boolean;
}

/** Every regular file under `p` (or `p` itself), with its size; stops early once `budget` is exceeded. */
async function listFiles(p: string, out: { file: string; size: number }[], budget: { left: number }): Promise<void> {
  if (budget.left < 0) return;
  const st = await fsp.lstat(p);
  if (st.isFile()) {
    out.push({ file: p, size: st.size });
    budget.left -= st.size;
  } else if (st.isDirectory()) {
    for (const e of await fsp.readdir(p)) await listFiles(path.join(p, e), out, budget);
  }
}

async function readThrough(file: string, buf: Buffer, signal: AbortSignal, progress: (n: number) => void): Promise<void> {
  const fh = await fsp.open(file, 'r');
  try {
    while (!signal.aborted) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      progress(bytesRead);
    }
  } finally {
    await fh.close();
  }
}

/**
 * Read the window's datasets into the page cache (see the header); never throws but on abort.
 * `beside`: `onReady` is called once, when the rest of the read should take at most `ms` at its
 * rate (decided after its first quarter: the services' stop may start), else when the read ends,
 * is skipped or is cancelled.
 */
export async function prefetchWindow(
  datasets: Pick<PlanDataset, 'path' | 'files'>[],
  signal: AbortSignal,
  budgetBytes = Math.floor(os.freemem() / 4),
  beside?: { ms: number; onReady: () => void },
): Promise<PrefetchResult> {
  let ready = false;
  const readyNow = () => {
    if (!ready) beside?.onReady();
    ready = true;
  };
  try {
    const files: { file: string; size: number }[] = [];
    const budget = { left: budgetBytes };
    for (const p of datasets.flatMap((d) => (d.path ? [d.path] : (d.files ?? []))))
      // A path that cannot be listed is skipped, not the ones after it: the window's copy says why.
      await listFiles(p, files, budget).catch(() => undefined);
    if (budget.left < 0) return { files: 0, bytes: 0, skipped: true };
    const total = files.reduce((n, f) => n + f.size, 0);
    const startedAt = performance.now();
    let done = 0;
    // Decided once, after the read's first quarter: a read that slows down once the stop starts
    // beside it (the service's shutdown on the same disk) must not be caught at its tail. The
    // rate is taken from the first read's end: the first reads (small files first, a cold
    // file's read-ahead ramping up) are slower than the rest.
    let decided = false;
    let first: { at: number; done: number } | undefined;
    const progress = (n: number) => {
      done += n;
      if (decided || !beside?.ms) return;
      const now = performance.now();
      first ??= { at: now, done };
      if (done < Math.min(total, Math.max(DECIDE_AFTER, total / 4))) return;
      decided = true;
      const rate = now > first.at ? (done - first.done) / (now - first.at) : done / Math.max(1, now - startedAt); // bytes per ms
      if ((total - done) / rate <= beside.ms) readyNow();
    };
    const buffers = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
    let bytes = 0;
    await mapLimit(files, 2, async (f) => {
      signal.throwIfAborted();
      const buf = buffers.pop()!;
      try {
        await readThrough(f.file, buf, signal, progress);
        bytes += f.size;
      } catch {
        /* gone or unreadable: the window's copy reports it */
      } finally {
        buffers.push(buf);
      }
    });
    signal.throwIfAborted();
    return { files: files.length, bytes, skipped: false };
  } finally {
    readyNow();
  }
}
