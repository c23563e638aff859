import { describe, expect, it } from 'vitest';
import { BoxbackError } from '@boxback/common';
import {
  MemorySlotStore,
  Scheduler,
  nextRunTime,
  previousRunTime,
  scheduleSchema,
  type Schedule,
  type ScheduleInput,
  type SchedulerEvent,
} from '../../packages/controller/src/policy/index.js';

const iso = (s: string): number => Date.parse(s);

class FakeClock {
  constructor(public t: number) {}
  now(): number {
    return this.t;
  }
  set(s: string): void {
    this.t = iso(s);
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

/** Let settled fire() promises run their then/finally handlers. */
const flush = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
};

const sched = (s: ScheduleInput): Schedule => scheduleSchema.parse(s);

interface Fired {
  name: string;
  slot: string;
  attempt: number;
  at: number;
}

function harness(
  schedules: Schedule[],
  clock: FakeClock,
  opts: { store?: MemorySlotStore; random?: () => number; fire?: (s: Schedule, slot: number, attempt: number) => Promise<unknown> } = {},
) {
  const fired: Fired[] = [];
  const events: SchedulerEvent[] = [];
  const store = opts.store ?? new MemorySlotStore();
  const scheduler = new Scheduler(schedules, {
    clock,
    store,
    random: opts.random,
    onEvent: (e) => events.push(e),
    fire: (s, slot, attempt) => {
      fired.push({ name: s.name, slot: new Date(slot).toISOString(), attempt, at: clock.now() });
      return opts.fire ? opts.fire(s, slot, attempt) : Promise.resolve();
    },
  });
  return { scheduler, fired, events, store };
}

/** A promise the test settles by hand. */
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('nextRunTime and the schedule schema', () => {
  it('computes cron times in real time zones, 5 and 6 fields', () => {
    expect(nextRunTime('0 2 * * *', 'Europe/Berlin', new Date('2026-11-20T12:00:00Z'))?.toISOString()).toBe('2026-11-21T01:00:00.000Z');
    expect(nextRunTime('0 2 * * *', 'Europe/Berlin', new Date('2026-07-20T12:00:00Z'))?.toISOString()).toBe('2026-07-21T00:00:00.000Z');
    // Weekdays at 09:30 New York, asked on a Friday afternoon: Monday 14:30Z (EST).
    expect(nextRunTime('30 9 * * 1-5', 'America/New_York', new Date('2026-11-20T15:00:00Z'))?.toISOString()).toBe(
      '2026-11-23T14:30:00.000Z',
    );
    expect(nextRunTime('*/15 * * * * *', 'UTC', new Date('2026-11-20T00:00:07Z'))?.toISOString()).toBe('2026-11-20T00:00:15.000Z');
    // Strictly after: a slot exactly at `after` is not returned.
    expect(nextRunTime('0 * * * *', 'UTC', new Date('2026-11-20T05:00:00Z'))?.toISOString()).toBe('2026-11-20T06:00:00.000Z');
    expect(previousRunTime('0 * * * *', 'UTC', new Date('2026-11-20T05:00:00Z'))?.toISOString()).toBe('2026-11-20T05:00:00.000Z');
  });

  it('fills defaults and rejects bad input with the field named', () => {
    const s = sched({ name: 'nightly', cron: '0 2 * * *', group: 'gocd' });
    expect(s).toMatchObject({ timezone: 'UTC', jitterSeconds: 0, kind: 'backup', retry: { attempts: 2, backoffSeconds: 60 } });
    const bad = (x: unknown): string => {
      const r = scheduleSchema.safeParse(x);
      return r.success ? 'ok' : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    };
    expect(bad({ name: 'x', cron: '61 * * * *' })).toMatch(/^cron: bad cron expression "61 \* \* \* \*": Invalid value for minute/);
    expect(bad({ name: 'x', cron: '* * *' })).toMatch(/^cron: /);
    expect(bad({ name: 'x', cron: '0 2 * * *', timezone: 'Mars/Olympus' })).toMatch(/^timezone: unknown time zone/);
    expect(bad({ name: 'x', cron: '0 2 * * *', kind: 'restore' })).toMatch(/^kind: /);
    expect(bad({ name: 'x', cron: '0 2 * * *', retry: { attempts: -1 } })).toMatch(/^retry.attempts: /);
    expect(bad({ name: 'x', cron: '0 2 * * *', hourly: true })).toMatch(/hourly/);
    expect(() => nextRunTime('nope', 'UTC', new Date())).toThrow(BoxbackError);
  });
});

describe('Scheduler with an injected clock', () => {
  it('fires a slot when it comes due, once, and does not fire slots from before it existed', async () => {
    const clock = new FakeClock(iso('2026-11-20T10:20:00Z'));
    const { scheduler, fired } = harness([sched({ name: 'hourly', cron: '0 * * * *' })], clock);
    expect(scheduler.tick()).toBe(0); // 10:00 was before the schedule existed
    clock.set('2026-11-20T10:59:59Z');
    expect(scheduler.tick()).toBe(0);
    clock.set('2026-11-20T11:00:00Z');
    expect(scheduler.tick()).toBe(1);
    expect(scheduler.tick()).toBe(0);
    await flush();
    clock.set('2026-11-20T11:30:00Z');
    expect(scheduler.tick()).toBe(0);
    expect(fired).toEqual([{ name: 'hourly', slot: '2026-11-20T11:00:00.000Z', attempt: 1, at: iso('2026-11-20T11:00:00Z') }]);
    expect(scheduler.status()[0]).toMatchObject({
      lastSlotMs: iso('2026-11-20T11:00:00Z'),
      nextRunMs: iso('2026-11-20T12:00:00Z'),
      running: false,
    });
  });

  it('after a 3-day downtime fires the newest missed slot once (catch-up, not a storm), then resumes', async () => {
    const store = new MemorySlotStore();
    const nightly = sched({ name: 'nightly', cron: '0 2 * * *', timezone: 'Europe/Berlin' });
    const clock = new FakeClock(iso('2026-11-17T00:59:00Z'));
    const before = harness([nightly], clock, { store });
    clock.set('2026-11-17T01:00:00Z'); // 02:00 in Berlin
    expect(before.scheduler.tick()).toBe(1);
    await flush();
    expect(store.getLastSlot('nightly')).toBe(iso('2026-11-17T01:00:00Z'));

    // The controller is down from the 17th to the 20th, 10:00 UTC: three nightly slots missed.
    clock.set('2026-11-20T10:00:00Z');
    const after = harness([nightly], clock, { store });
    expect(after.scheduler.tick()).toBe(1);
    await flush();
    for (let i = 0; i < 10; i++) {
      clock.advance(60_000);
      after.scheduler.tick();
    }
    await flush();
    expect(after.fired).toEqual([{ name: 'nightly', slot: '2026-11-20T01:00:00.000Z', attempt: 1, at: iso('2026-11-20T10:00:00Z') }]);
    expect(after.events.find((e) => e.type === 'fire')).toMatchObject({ catchUp: true });
    // The next night fires normally.
    clock.set('2026-11-21T01:00:00Z');
    expect(after.scheduler.tick()).toBe(1);
    await flush();
    expect(after.fired.map((f) => f.slot)).toEqual(['2026-11-20T01:00:00.000Z', '2026-11-21T01:00:00.000Z']);
    expect(after.events.filter((e) => e.type === 'fire').map((e) => (e as { catchUp: boolean }).catchUp)).toEqual([true, false]);
  });

  it('never overlaps a run of one schedule: a slot due while it runs is skipped', async () => {
    const clock = new FakeClock(iso('2026-11-20T10:00:05Z'));
    const runs: ReturnType<typeof deferred>[] = [];
    const { scheduler, fired, events } = harness([sched({ name: 'fast', cron: '*/10 * * * * *', hosts: ['h1'] })], clock, {
      fire: () => {
        const d = deferred();
        runs.push(d);
        return d.promise;
      },
    });
    clock.set('2026-11-20T10:00:10Z');
    expect(scheduler.tick()).toBe(1);
    clock.set('2026-11-20T10:00:20Z');
    expect(scheduler.tick()).toBe(0);
    clock.set('2026-11-20T10:00:30Z');
    expect(scheduler.tick()).toBe(0);
    expect(scheduler.status()[0].running).toBe(true);
    runs[0].resolve();
    await flush();
    clock.set('2026-11-20T10:00:35Z');
    expect(scheduler.tick()).toBe(0); // the skipped 10:00:30 slot is not caught up afterwards
    clock.set('2026-11-20T10:00:40Z');
    expect(scheduler.tick()).toBe(1);
    expect(fired.map((f) => f.slot)).toEqual(['2026-11-20T10:00:10.000Z', '2026-11-20T10:00:40.000Z']);
    expect(events.filter((e) => e.type === 'skip').map((e) => e.slotMs)).toEqual([
      iso('2026-11-20T10:00:20Z'),
      iso('2026-11-20T10:00:30Z'),
    ]);
    runs[1].resolve();
    await scheduler.whenIdle();
  });

  it('defers a schedule that shares a host with a running one until that run ends', async () => {
    const clock = new FakeClock(iso('2026-11-20T01:59:00Z'));
    const backupRun = deferred();
    const { scheduler, fired, events } = harness(
      [
        sched({ name: 'backup-h1', cron: '0 2 * * *', hosts: ['h1'] }),
        sched({ name: 'verify-h1-h2', cron: '0 2 * * *', hosts: ['h2', 'h1'], kind: 'verify' }),
        sched({ name: 'backup-h3', cron: '0 2 * * *', hosts: ['h3'] }),
      ],
      clock,
      { fire: (s) => (s.name === 'backup-h1' ? backupRun.promise : Promise.resolve()) },
    );
    clock.set('2026-11-20T02:00:00Z');
    expect(scheduler.tick()).toBe(2); // backup-h1 and backup-h3; verify waits for h1
    clock.advance(30_000);
    expect(scheduler.tick()).toBe(0);
    expect(events.filter((e) => e.type === 'defer')).toEqual([
      { type: 'defer', schedule: 'verify-h1-h2', slotMs: iso('2026-11-20T02:00:00Z'), blockedBy: 'backup-h1' },
    ]);
    backupRun.resolve();
    await flush();
    expect(scheduler.tick()).toBe(1);
    expect(fired.map((f) => `${f.name}@${new Date(f.at).toISOString().slice(11, 19)}`)).toEqual([
      'backup-h1@02:00:00',
      'backup-h3@02:00:00',
      'verify-h1-h2@02:00:30',
    ]);
  });

  it('retries a failed run with exponential backoff, up to retry.attempts more times', async () => {
    const clock = new FakeClock(iso('2026-11-20T02:59:00Z'));
    const { scheduler, fired, events } = harness(
      [sched({ name: 'nightly', cron: '0 3 * * *', retry: { attempts: 2, backoffSeconds: 60 } })],
      clock,
      {
        fire: () => Promise.reject(new Error('agent unreachable')),
      },
    );
    clock.set('2026-11-20T03:00:00Z');
    expect(scheduler.tick()).toBe(1);
    await flush();
    clock.advance(59_999);
    expect(scheduler.tick()).toBe(0);
    clock.advance(1);
    expect(scheduler.tick()).toBe(1); // first retry after 60 s
    await flush();
    clock.advance(119_999);
    expect(scheduler.tick()).toBe(0);
    clock.advance(1);
    expect(scheduler.tick()).toBe(1); // second retry after 120 s more
    await flush();
    clock.advance(3_600_000);
    expect(scheduler.tick()).toBe(0); // gave up
    expect(fired.map((f) => [f.attempt, f.slot, new Date(f.at).toISOString().slice(11, 19)])).toEqual([
      [1, '2026-11-20T03:00:00.000Z', '03:00:00'],
      [2, '2026-11-20T03:00:00.000Z', '03:01:00'],
      [3, '2026-11-20T03:00:00.000Z', '03:03:00'],
    ]);
    const failed = events.filter((e) => e.type === 'failed');
    expect(failed.map((e) => (e as { retryAtMs: number | null }).retryAtMs)).toEqual([
      iso('2026-11-20T03:01:00Z'),
      iso('2026-11-20T03:03:00Z'),
      null,
    ]);
    expect(failed[0]).toMatchObject({ error: 'agent unreachable' });
  });

  it('a successful retry ends the retries', async () => {
    const clock = new FakeClock(iso('2026-11-20T02:59:00Z'));
    let calls = 0;
    const { scheduler, fired } = harness([sched({ name: 'n', cron: '0 3 * * *', retry: { attempts: 5, backoffSeconds: 10 } })], clock, {
      fire: () => (++calls === 1 ? Promise.reject(new Error('busy')) : Promise.resolve()),
    });
    clock.set('2026-11-20T03:00:00Z');
    scheduler.tick();
    await flush();
    for (let i = 0; i < 600; i++) {
      clock.advance(1000);
      scheduler.tick();
      await flush();
    }
    expect(fired.map((f) => f.attempt)).toEqual([1, 2]);
  });

  it('delays each slot by a jitter in [0, jitterSeconds), chosen per slot', async () => {
    const clock = new FakeClock(iso('2026-11-20T00:30:00Z'));
    const { scheduler, fired } = harness([sched({ name: 'j', cron: '0 * * * *', jitterSeconds: 30 })], clock);
    const dues: number[] = [];
    for (let hour = 1; hour <= 24; hour++) {
      clock.t = iso('2026-11-20T00:00:00Z') + hour * 3_600_000;
      for (let step = 0; step < 130; step++) {
        if (scheduler.tick() > 0) await flush();
        const p = scheduler.status()[0].pending;
        if (p && step === 0) dues.push(p.dueMs);
        if (step === 0 && !p) dues.push(clock.t); // a jitter of 0 fires at once
        clock.advance(250);
      }
    }
    expect(fired.length).toBe(24);
    expect(dues.length).toBe(24);
    const delays = fired.map((f) => f.at - iso(f.slot));
    fired.forEach((f, i) => {
      const jitter = dues[i] - iso(f.slot);
      expect(jitter).toBeGreaterThanOrEqual(0);
      expect(jitter).toBeLessThan(30_000);
      // Fired at the first tick at or after the jittered due time (ticks are 250 ms apart here).
      expect(f.at).toBeGreaterThanOrEqual(dues[i]);
      expect(f.at - dues[i]).toBeLessThan(250);
    });
    expect(new Set(delays).size).toBeGreaterThan(1); // really random per slot

    // With a fixed random the delay is exact: 0.5 * 30 s.
    const c2 = new FakeClock(iso('2026-11-20T00:59:00Z'));
    const h2 = harness([sched({ name: 'j', cron: '0 * * * *', jitterSeconds: 30 })], c2, { random: () => 0.5 });
    c2.set('2026-11-20T01:00:14.999Z');
    expect(h2.scheduler.tick()).toBe(0);
    expect(h2.scheduler.status()[0].pending).toEqual({
      slotMs: iso('2026-11-20T01:00:00Z'),
      attempt: 1,
      dueMs: iso('2026-11-20T01:00:15Z'),
    });
    c2.set('2026-11-20T01:00:15Z');
    expect(h2.scheduler.tick()).toBe(1);
  });

  it('survives a restart without firing a slot twice', async () => {
    const store = new MemorySlotStore();
    const s = sched({ name: 'hourly', cron: '0 * * * *' });
    const clock = new FakeClock(iso('2026-11-20T09:30:00Z'));
    const a = harness([s], clock, { store });
    clock.set('2026-11-20T10:00:00Z');
    expect(a.scheduler.tick()).toBe(1);
    clock.set('2026-11-20T10:00:05Z');
    const b = harness([s], clock, { store }); // restarted mid-run: reconciliation owns that job
    expect(b.scheduler.tick()).toBe(0);
    await flush();
  });

  it('rejects two schedules with one name', () => {
    const s = sched({ name: 'dup', cron: '0 * * * *' });
    expect(() => harness([s, s], new FakeClock(0))).toThrow(/two schedules are named "dup"/);
  });
});

describe('Scheduler with the real clock', () => {
  it('fires a per-second cron 2 to 4 times in about 3 s', async () => {
    const fires: number[] = [];
    const scheduler = new Scheduler([sched({ name: 'every-second', cron: '*/1 * * * * *' })], {
      store: new MemorySlotStore(),
      fire: async (_s, slot) => {
        fires.push(slot);
      },
    });
    scheduler.start();
    await new Promise((r) => setTimeout(r, 3000));
    scheduler.stop();
    await scheduler.whenIdle();
    expect(fires.length).toBeGreaterThanOrEqual(2);
    expect(fires.length).toBeLessThanOrEqual(4);
    for (let i = 1; i < fires.length; i++) expect(fires[i] - fires[i - 1]).toBe(1000);
    const n = fires.length;
    await new Promise((r) => setTimeout(r, 1100));
    expect(fires.length).toBe(n); // stopped means stopped
  });
});
