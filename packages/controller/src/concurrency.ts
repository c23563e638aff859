/**
 * Small primitives: a counting semaphore (the fleet-wide bound on backups in flight), an
 * async queue (events pushed by the job runner, pulled by a WatchJob stream), and a time slice
 * (long loops of status and the fleet page give the event loop a turn now and then).
 */

export class Semaphore {
  private inUse = 0;
  private readonly waiters: Array<() => void> = [];
  /** Highest number of permits held at once (tests check the bound). */
  peak = 0;

  constructor(readonly permits: number) {}

  get active(): number {
    return this.inUse;
  }

  async acquire(): Promise<() => void> {
    if (this.inUse >= this.permits) await new Promise<void>((resolve) => this.waiters.push(resolve));
    else this.inUse++;
    this.peak = Math.max(this.peak, this.inUse);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiters.shift();
      if (next)
        next(); // hand the permit over directly
      else this.inUse--;
    };
  }
}

/** A push/pull queue; `end()` finishes iteration once the buffered items are consumed. */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting?: (v: IteratorResult<T>) => void;
  private ended = false;

  push(item: T): void {
    if (this.ended) return;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w({ value: item, done: false });
    } else {
      this.items.push(item);
    }
  }

  end(): void {
    this.ended = true;
    if (this.waiting && this.items.length === 0) {
      const w = this.waiting;
      this.waiting = undefined;
      w({ value: undefined as T, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        if (this.items.length) return Promise.resolve({ value: this.items.shift() as T, done: false });
        if (this.ended) return Promise.resolve({ value: undefined as T, done: true });
        return new Promise((resolve) => (this.waiting = resolve));
      },
      return: () => {
        this.end();
        return Promise.resolve({ value: undefined as T, done: true });
      },
    };
  }
}

/** A turn of the event loop: whatever is waiting runs first (calls, streams, timers). */
export const nextTurn = () => new Promise<void>((r) => setImmediate(r));

/**
 * A loop over many items (1000 hosts' entries, the fleet page's rows) gives the event loop a
 * turn once it has held it for SLICE_MS, not every N items: rows kept between answers cost
 * microseconds each, and a turn given every 100 of them made the page wait behind whatever else
 * was queued ten times per render (p99 of the page at 1000 hosts during a fleet backup).
 */
export class TimeSlice {
  static readonly SLICE_MS = 8;
  private startMs = performance.now();

  /** The slice is used up: `await slice.turn()` before going on (checked per item: no promise while it lasts). */
  over(): boolean {
    return performance.now() - this.startMs >= TimeSlice.SLICE_MS;
  }

  /**
   * A turn of the event loop; a new slice starts after it. The loops waiting for their next slice
   * take turns, one slice per turn of the event loop between them all (sliceTurn).
   */
  async turn(): Promise<void> {
    await sliceTurn();
    this.startMs = performance.now();
  }
}

/**
 * The loops that wait for their next slice (TimeSlice.turn), first come first served: one is
 * resumed per turn of the event loop, so I/O (a status call's request, a stream's frame) is read
 * between any two slices. With one setImmediate each, every loop waiting ran its slice in the
 * same check phase: during a fleet backup's first second the status build, the fleet page's rows,
 * CreateBackup's rows and its answer held the event loop for 8 ms each, back to back, before a
 * status call's request was read.
 */
const waitingSlices: Array<() => void> = [];
let slicePump = false;

function resumeNextSlice(): void {
  const next = waitingSlices.shift();
  // the next loop's slice in the next turn (an immediate queued now runs after this turn's I/O)
  if (waitingSlices.length) setImmediate(resumeNextSlice);
  else slicePump = false;
  next?.();
}

/** Resolves in a later turn of the event loop, when this loop's slice comes (one per turn, in order). */
export function sliceTurn(): Promise<void> {
  return new Promise((resolve) => {
    waitingSlices.push(resolve);
    if (!slicePump) {
      slicePump = true;
      setImmediate(resumeNextSlice);
    }
  });
}
