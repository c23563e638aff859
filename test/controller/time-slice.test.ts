// Loops that give the event loop a turn once their slice of time is used up (TimeSlice) take
// turns one slice per turn of the event loop: whatever else waits for a turn (here a ticker that
// queues itself each turn, as a request's I/O callback would come) runs between any two slices,
// not after every waiting loop's slice, and every loop still finishes.
import { describe, expect, it } from 'vitest';
import { TimeSlice } from '../../packages/controller/src/concurrency.js';

const busy = (ms: number) => {
  const until = performance.now() + ms;
  while (performance.now() < until);
};

describe('TimeSlice', () => {
  it('runs one waiting loop’s slice per turn of the event loop', async () => {
    const log: string[] = [];
    let running = true;
    const tick = () => {
      if (!running) return;
      log.push('tick');
      setImmediate(tick);
    };
    setImmediate(tick);
    const loop = async (name: string) => {
      const slice = new TimeSlice();
      for (let i = 0; i < 12; i++) {
        if (slice.over()) await slice.turn();
        log.push(name);
        busy(TimeSlice.SLICE_MS / 2 + 0.5); // two items per slice at most
      }
    };
    await Promise.all([loop('a'), loop('b'), loop('c')]);
    running = false;
    expect(log.filter((x) => x !== 'tick')).toHaveLength(36);
    // the slices as runs of one loop's items; a tick between any two of them
    // (the loops' first slices run as they are called, before any turn: from the first tick on)
    const runs: string[] = [];
    for (const x of log.slice(log.indexOf('tick'))) if (x === 'tick' || x !== runs.at(-1)) runs.push(x);
    const slices = runs.filter((x) => x !== 'tick').length;
    expect(slices).toBeGreaterThanOrEqual(15);
    for (let i = 1; i < runs.length; i++)
      if (runs[i] !== 'tick' && runs[i - 1] !== 'tick') expect.fail(`slices back to back: ${runs.join(' ')}`);
  });
});
