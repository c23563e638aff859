/**
 * Schedules: cron expressions (croner 11, 5 or 6 fields, the 6th being seconds) in a time zone,
 * and a Scheduler that fires them with an injected clock, store and callback.
 *
 * Per schedule the Scheduler remembers the last slot it fired (a slot is a cron time, in ms),
 * through the injected store, so that it survives controller restarts. Each tick, per schedule:
 *
 *   1. A run (or a retry) of this schedule is still in flight: a newly due slot is skipped and
 *      recorded as fired ("skip"), so one schedule never overlaps itself.
 *   2. A retry is waiting for its backoff: fire it when due, unless a newer slot came due,
 *      which supersedes it (a fresh run is as good as a retry).
 *   3. Otherwise the newest due slot (<= now) newer than the last fired one is taken. After
 *      downtime that is the newest missed slot only: catch-up fires ONCE, never a storm.
 *      A schedule seen for the first time starts from now (no firing for slots before it existed).
 *   4. The slot waits for its jitter, a random delay in [0, jitterSeconds) chosen once per slot.
 *   5. Before firing, the slot is saved to the store (a crash mid-run does not fire it again;
 *      reconciliation owns the job), and no other in-flight schedule may share a host with it:
 *      if one does, the slot waits (deferred, not dropped) until that run ends.
 *   6. fire(schedule, slotMs, attempt) runs; if its promise rejects, the slot is retried after
 *      backoffSeconds * 2^(attempt-1), up to retry.attempts more times.
 *
 * `tick()` does one pass and is what tests call with a fake clock; `start()` arms an unref'd
 * timer for the next due time (at most 60 s away) and re-arms after each tick and each finished
 * run; `stop()` disarms. Retries waiting for backoff are not persisted: after a restart the
 * next slot is the next chance (the at-risk alarm covers the gap).
 */
import { Cron } from 'croner';
import { z } from 'zod';
import { BoxbackError, type Logger } from '@boxback/common';
import { isValidTimeZone } from './retention.js';

const MAX_TIMER_MS = 60_000;

function cronError(cron: string, tz: string): string | undefined {
  try {
    new Cron(cron, { timezone: tz, paused: true }).nextRun(new Date(0));
    return undefined;
  } catch (e) {
    return (e instanceof Error ? e.message : String(e)).replace(/^CronPattern: /, '');
  }
}

/** One schedule as the controller's config spells it. */
export const scheduleSchema = z
  .object({
    /** Unique; the key the last fired slot is stored under. */
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'want letters, digits, ".", "_" or "-" (at most 64)'),
    /** 5 fields (minute first) or 6 (second first), croner syntax. */
    cron: z.string().min(1),
    timezone: z.string().default('UTC').refine(isValidTimeZone, 'unknown time zone: want an IANA name such as UTC or Europe/Berlin'),
    /** Hosts by name. With neither hosts nor group: every host. */
    hosts: z.array(z.string().min(1)).min(1).optional(),
    group: z.string().min(1).optional(),
    jitterSeconds: z.number().int().nonnegative().default(0),
    kind: z.enum(['backup', 'verify', 'drill']).default('backup'),
    /** Backups only: a live backup (no quiesce). */
    live: z.boolean().optional(),
    /** Drills only: the host the backup is restored onto. */
    drillHost: z.string().min(1).optional(),
    retry: z
      .object({
        /** Retries after a failed run (0: none). */
        attempts: z.number().int().nonnegative().default(2),
        /** Wait before the first retry; doubled for each further one. */
        backoffSeconds: z.number().nonnegative().default(60),
      })
      .strict()
      .default({ attempts: 2, backoffSeconds: 60 }),
  })
  .strict()
  .superRefine((s, ctx) => {
    const err = cronError(s.cron, s.timezone);
    if (err) ctx.addIssue({ code: 'custom', path: ['cron'], message: `bad cron expression "${s.cron}": ${err}` });
  });

/** Parsed and defaulted: what the Scheduler takes. */
export type Schedule = z.infer<typeof scheduleSchema>;
/** As written in a config file, before defaults. */
export type ScheduleInput = z.input<typeof scheduleSchema>;

/** The first cron time strictly after `after`, in `tz`; null when the expression never fires again. */
export function nextRunTime(cron: string, tz: string, after: Date): Date | null {
  return cronFor(cron, tz).nextRun(after);
}

/** The newest cron time at or before `at`; null when there is none. */
export function previousRunTime(cron: string, tz: string, at: Date): Date | null {
  return cronFor(cron, tz).previousRuns(1, new Date(at.getTime() + 1))[0] ?? null;
}

const crons = new Map<string, Cron>();

function cronFor(cron: string, tz: string): Cron {
  const key = `${tz}\u0000${cron}`;
  let c = crons.get(key);
  if (!c) {
    const err = cronError(cron, tz);
    if (err) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad cron expression "${cron}" (${tz}): ${err}`);
    c = new Cron(cron, { timezone: tz, paused: true });
    crons.set(key, c);
  }
  return c;
}

// ---------------------------------------------------------------------------------------------

export interface SchedulerClock {
  now(): number;
}

/** Where the last fired slot of each schedule is kept (the catalog, in the daemon). */
export interface SlotStore {
  getLastSlot(name: string): number | null | undefined;
  setLastSlot(name: string, ms: number): void;
}

export type FireFn = (schedule: Schedule, slotMs: number, attempt: number) => Promise<unknown>;

export type SchedulerEvent =
  | { type: 'fire'; schedule: string; slotMs: number; attempt: number; catchUp: boolean }
  | { type: 'skip'; schedule: string; slotMs: number; reason: 'in-flight' }
  | { type: 'defer'; schedule: string; slotMs: number; blockedBy: string }
  | { type: 'done'; schedule: string; slotMs: number; attempt: number }
  | { type: 'failed'; schedule: string; slotMs: number; attempt: number; error: string; retryAtMs: number | null };

export interface SchedulerOptions {
  fire: FireFn;
  store: SlotStore;
  clock?: SchedulerClock;
  /** In [0, 1); jitter = random() * jitterSeconds. */
  random?: () => number;
  /** Host keys a schedule touches, for the no-overlap rule across schedules. Default: its hosts,
   *  else "group:G", else "*" (every host; overlaps everything). */
  hostsOf?: (s: Schedule) => readonly string[];
  log?: Logger;
  onEvent?: (e: SchedulerEvent) => void;
}

/** What status shows for one schedule. */
export interface ScheduleStatus {
  name: string;
  lastSlotMs: number | null;
  nextRunMs: number | null;
  running: boolean;
  /** A slot waiting for its jitter, a retry's backoff, or a busy host. */
  pending: { slotMs: number; attempt: number; dueMs: number } | null;
}

interface State {
  schedule: Schedule;
  lastSlot: number;
  inFlight: Promise<void> | null;
  pending: { slotMs: number; attempt: number; dueMs: number; catchUp: boolean; deferred?: boolean } | null;
}

export const systemClock: SchedulerClock = { now: () => Date.now() };

/** A SlotStore in memory, for tests and for a controller without a catalog. */
export class MemorySlotStore implements SlotStore {
  readonly slots = new Map<string, number>();
  getLastSlot(name: string): number | undefined {
    return this.slots.get(name);
  }
  setLastSlot(name: string, ms: number): void {
    this.slots.set(name, ms);
  }
}

function defaultHostsOf(s: Schedule): readonly string[] {
  if (s.hosts?.length) return s.hosts;
  return s.group ? [`group:${s.group}`] : ['*'];
}

export class Scheduler {
  private readonly states = new Map<string, State>();
  private readonly clock: SchedulerClock;
  private readonly random: () => number;
  private readonly hostsOf: (s: Schedule) => readonly string[];
  private timer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(
    schedules: readonly Schedule[],
    private readonly opts: SchedulerOptions,
  ) {
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? Math.random;
    this.hostsOf = opts.hostsOf ?? defaultHostsOf;
    this.setSchedules(schedules);
  }

  /** Replace the schedule set (config reload). Kept schedules keep their state and runs. */
  setSchedules(schedules: readonly Schedule[]): void {
    const names = new Set<string>();
    for (const s of schedules) {
      if (names.has(s.name)) throw new BoxbackError('BOXBACK_ERR_CONFIG_INVALID', `two schedules are named "${s.name}"`);
      names.add(s.name);
      cronFor(s.cron, s.timezone); // validate now, not at the first tick
    }
    for (const name of [...this.states.keys()]) if (!names.has(name)) this.states.delete(name);
    for (const s of schedules) {
      const st = this.states.get(s.name);
      if (st) st.schedule = s;
      else this.states.set(s.name, { schedule: s, lastSlot: this.loadLastSlot(s.name), inFlight: null, pending: null });
    }
    if (this.running) this.arm();
  }

  private loadLastSlot(name: string): number {
    const saved = this.opts.store.getLastSlot(name);
    if (typeof saved === 'number' && Number.isFinite(saved)) return saved;
    const now = this.clock.now();
    this.opts.store.setLastSlot(name, now);
    return now;
  }

  /** One pass over every schedule (see the header). Returns how many runs it started. */
  tick(): number {
    const now = this.clock.now();
    let started = 0;
    for (const st of this.states.values()) if (this.tickOne(st, now)) started++;
    return started;
  }

  private tickOne(st: State, now: number): boolean {
    const s = st.schedule;
    const due = previousRunTime(s.cron, s.timezone, new Date(now))?.getTime() ?? null;
    const fresh = due !== null && due > st.lastSlot ? due : null;
    if (st.inFlight) {
      if (fresh !== null) {
        this.setLast(st, fresh);
        this.emit({ type: 'skip', schedule: s.name, slotMs: fresh, reason: 'in-flight' });
      }
      return false;
    }
    if (fresh !== null && (!st.pending || st.pending.slotMs < fresh)) {
      // A new slot (or one that supersedes a waiting retry). Catch-up when an earlier slot was missed too.
      const missedBefore = previousRunTime(s.cron, s.timezone, new Date(fresh - 1));
      const catchUp =
        (missedBefore !== null && missedBefore.getTime() > st.lastSlot) || now - fresh > MAX_TIMER_MS + s.jitterSeconds * 1000;
      const jitterMs = Math.floor(this.random() * s.jitterSeconds * 1000);
      st.pending = { slotMs: fresh, attempt: 1, dueMs: fresh + jitterMs, catchUp };
    }
    if (!st.pending || st.pending.dueMs > now) return false;
    const blocker = this.blockingSchedule(st);
    if (blocker) {
      // Waits for the blocker to finish: its end re-arms the timer, so no polling meanwhile.
      if (!st.pending.deferred) this.emit({ type: 'defer', schedule: s.name, slotMs: st.pending.slotMs, blockedBy: blocker });
      st.pending.deferred = true;
      return false;
    }
    const p = st.pending;
    st.pending = null;
    if (p.slotMs > st.lastSlot) this.setLast(st, p.slotMs);
    this.launch(st, p.slotMs, p.attempt, p.catchUp);
    return true;
  }

  private blockingSchedule(st: State): string | undefined {
    const mine = new Set(this.hostsOf(st.schedule));
    for (const other of this.states.values()) {
      if (other === st || !other.inFlight) continue;
      const theirs = this.hostsOf(other.schedule);
      if (mine.has('*') || theirs.some((h) => h === '*' || mine.has(h))) return other.schedule.name;
    }
    return undefined;
  }

  private setLast(st: State, slot: number): void {
    st.lastSlot = slot;
    try {
      this.opts.store.setLastSlot(st.schedule.name, slot);
    } catch (e) {
      this.opts.log?.error({ err: e, schedule: st.schedule.name }, 'could not save the last fired slot');
    }
  }

  private launch(st: State, slotMs: number, attempt: number, catchUp: boolean): void {
    const s = st.schedule;
    this.emit({ type: 'fire', schedule: s.name, slotMs, attempt, catchUp });
    this.opts.log?.info({ schedule: s.name, kind: s.kind, slot: new Date(slotMs).toISOString(), attempt, catchUp }, 'schedule fired');
    let started: Promise<unknown>;
    try {
      started = Promise.resolve(this.opts.fire(s, slotMs, attempt)); // called now, in this tick
    } catch (err) {
      started = Promise.reject(err);
    }
    const run = started
      .then(
        () => this.emit({ type: 'done', schedule: s.name, slotMs, attempt }),
        (err: unknown) => this.onFailure(st, slotMs, attempt, err),
      )
      .finally(() => {
        if (st.inFlight === run) st.inFlight = null;
        if (this.running) this.arm();
      });
    st.inFlight = run;
  }

  private onFailure(st: State, slotMs: number, attempt: number, err: unknown): void {
    const s = st.schedule;
    const error = err instanceof Error ? err.message : String(err);
    const retryAtMs = attempt <= s.retry.attempts ? this.clock.now() + s.retry.backoffSeconds * 1000 * 2 ** (attempt - 1) : null;
    this.emit({ type: 'failed', schedule: s.name, slotMs, attempt, error, retryAtMs });
    this.opts.log?.warn(
      { schedule: s.name, attempt, error, retryAt: retryAtMs && new Date(retryAtMs).toISOString() },
      'scheduled run failed',
    );
    if (retryAtMs !== null && this.states.get(s.name) === st && (!st.pending || st.pending.slotMs < slotMs)) {
      st.pending = { slotMs, attempt: attempt + 1, dueMs: retryAtMs, catchUp: false };
    }
  }

  private emit(e: SchedulerEvent): void {
    try {
      this.opts.onEvent?.(e);
    } catch (err) {
      this.opts.log?.error({ err }, 'scheduler event listener threw');
    }
  }

  /** The next time anything needs a tick: a pending slot or retry, or the next cron slot. */
  nextWakeMs(): number | null {
    const now = this.clock.now();
    let wake: number | null = null;
    for (const st of this.states.values()) {
      const s = st.schedule;
      // A pending slot already due but blocked by another schedule's run is woken by that run's end.
      const pendingDue = st.pending && (st.pending.dueMs > now || !this.blockingSchedule(st)) ? st.pending.dueMs : undefined;
      const candidates = [pendingDue, nextRunTime(s.cron, s.timezone, new Date(Math.max(now, st.lastSlot)))?.getTime()];
      for (const c of candidates) if (c !== undefined && (wake === null || c < wake)) wake = c;
    }
    return wake;
  }

  status(): ScheduleStatus[] {
    const now = this.clock.now();
    return [...this.states.values()].map((st) => ({
      name: st.schedule.name,
      lastSlotMs: st.lastSlot,
      nextRunMs:
        st.pending?.dueMs ?? nextRunTime(st.schedule.cron, st.schedule.timezone, new Date(Math.max(now, st.lastSlot)))?.getTime() ?? null,
      running: st.inFlight !== null,
      pending: st.pending && { slotMs: st.pending.slotMs, attempt: st.pending.attempt, dueMs: st.pending.dueMs },
    }));
  }

  /** Resolves when no run is in flight (tests; a graceful shutdown may wait on it). */
  async whenIdle(): Promise<void> {
    for (;;) {
      const runs = [...this.states.values()].map((s) => s.inFlight).filter((p): p is Promise<void> => p !== null);
      if (runs.length === 0) return;
      await Promise.all(runs);
    }
  }

  /** Tick now, then keep ticking on a timer until stop(). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.tick();
    this.arm();
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    const wake = this.nextWakeMs();
    const delay = wake === null ? MAX_TIMER_MS : Math.min(MAX_TIMER_MS, Math.max(1, wake - this.clock.now() + 1));
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.running) return;
      try {
        this.tick();
      } catch (err) {
        this.opts.log?.error({ err }, 'scheduler tick failed');
      }
      this.arm();
    }, delay);
    this.timer.unref();
  }
}
