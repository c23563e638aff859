/**
 * Two small primitives the job runner needs: a counting semaphore (the fleet-wide bound
 * on backups in flight) and an async queue (events pushed by the runner, pulled by a
 * WatchJob stream).
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
