/**
 * Schedules in the daemon: the Scheduler of policy/schedule.ts with the catalog behind it.
 *
 * - Last fired slots: loaded from the catalog's schedule_slots table at start into a map (the
 *   Scheduler's store is synchronous), every change written through to the catalog; a run
 *   awaits the write of its slot before it creates any job. So a restart (or a new leader)
 *   neither repeats a slot nor forgets one, and a slot missed while down is caught up once.
 * - Only the leader runs this (start on leading, stop on losing it; see leadership.ts). Each
 *   scheduled backup job records its schedule, slot and attempt; the catalog refuses a second
 *   job for the same (schedule, slot, host, attempt), which is logged and skipped.
 * - Hosts of a schedule: its `hosts`, else the hosts of its `group`, else every host, from an
 *   in-memory index of the catalog's hosts refreshed at start, on AddHost/RemoveHost and
 *   before each run. A drill schedule touches its drill host (the restore runs there).
 * - A run (fire):
 *     backup: one backup job per host (initiatedVia "schedule"); a host already running a job
 *             is skipped with a log line (its own job is as good as ours); waits for the jobs;
 *             hosts whose job Failed make the run fail, and only they are retried (backoff
 *             from the schedule's `retry`).
 *     verify: re-checks the newest Restorable backup of each host (verified_at, or it stops
 *             being Restorable); a check that could not run fails the run (retried).
 *     drill:  one drill per host onto `drillHost`, in turn, each waited for; a failed drill
 *             fails the run.
 * - Status: the next scheduled backup time per host (`nextRunMs`).
 * - Operators (`boxback schedules`): list with next runs; pause and resume (kept in the
 *   catalog's schedule_pauses, so a restart or a new leader keeps them paused: a paused
 *   schedule's slots pass without a run, nothing is caught up on resume); run now (fires the
 *   schedule at once on the leader, paused or not, as a run of the current time).
 * - A host with `--rpo none` (a spare box that only receives drills) is left out of backup
 *   and verify schedules that name a group or every host; a schedule naming it in `hosts` runs.
 */
import { BoxbackError, type Logger } from '@boxback/common';
import type { BackupRow, Catalog, HostRow, JobRow, SchedulePause } from './catalog/types.js';
import type { DrillRunner } from './drill.js';
import type { JobRunner } from './jobs.js';
import { Scheduler, nextRunTime, type Schedule } from './policy/schedule.js';

export interface ScheduleDeps {
  schedules: readonly Schedule[];
  catalog: Catalog;
  jobs: JobRunner;
  drills: DrillRunner;
  verify: (b: BackupRow) => Promise<{ ok: boolean; problems: string[] }>;
  log: Logger;
  /** Still the leader? Checked before a run creates jobs (default: always). */
  isLeader?: () => boolean;
}

const FAILED = new Set(['Failed', 'RolledBack']);

/** One schedule as `boxback schedules` shows it. */
export interface ScheduleInfo {
  name: string;
  kind: string;
  cron: string;
  timezone: string;
  hosts: string[];
  group: string;
  drillHost: string;
  /** Next run, ms since the epoch (0: paused, or never again). */
  nextRunMs: number;
  lastSlotMs: number;
  running: boolean;
  paused: boolean;
  pausedAtMs: number;
  pausedBy: string;
}

export class ScheduleRunner {
  private scheduler?: Scheduler;
  private slots = new Map<string, number>();
  private hosts: HostRow[] = [];
  /** A read of the hosts queued by refreshHosts and not started yet. */
  private hostsRead?: Promise<void>;
  /** Hosts to retry per "<schedule>@<slot>" after a run that failed on some of them. */
  private readonly retryHosts = new Map<string, string[]>();
  /** The latest write of each schedule's slot, awaited before its run creates jobs. */
  private readonly slotWrites = new Map<string, Promise<void>>();
  /** Paused schedules as last read from the catalog (status's next runs leave them out). */
  private pausedNames = new Set<string>();

  constructor(private readonly d: ScheduleDeps) {}

  async start(): Promise<void> {
    if (!this.d.schedules.length) return;
    this.slots = await this.d.catalog.listScheduleSlots();
    await this.readPauses();
    await this.refreshHosts();
    this.scheduler?.stop(); // started again (a new leadership): one Scheduler at a time
    this.scheduler = new Scheduler(this.d.schedules, {
      store: {
        getLastSlot: (name) => this.slots.get(name),
        setLastSlot: (name, ms) => {
          this.slots.set(name, ms);
          const write = this.d.catalog.setScheduleSlot(name, ms);
          this.slotWrites.set(name, write);
          write.catch((err) => this.d.log.error({ err, schedule: name }, 'saving a schedule slot failed'));
        },
      },
      hostsOf: (s) => (s.kind === 'drill' && s.drillHost ? [s.drillHost] : this.hostNames(s)),
      fire: (s, slot, attempt) => this.fire(s, slot, attempt),
      log: this.d.log,
    });
    this.scheduler.start();
    this.d.log.info({ schedules: this.d.schedules.map((s) => `${s.name} (${s.kind}, ${s.cron} ${s.timezone})`) }, 'schedules armed');
  }

  stop(): void {
    this.scheduler?.stop();
    this.scheduler = undefined;
  }

  /**
   * Read the hosts again (after AddHost, UpdateHost, RemoveHost, before a run). Without
   * schedules nothing reads them (status passes its own list): registering a fleet of 1000
   * would otherwise read 1000 x 1000 host rows. Calls made together share one read.
   */
  refreshHosts(): Promise<void> {
    if (!this.d.schedules.length) return Promise.resolve();
    this.hostsRead ??= Promise.resolve().then(async () => {
      this.hostsRead = undefined;
      this.hosts = await this.d.catalog.listHosts();
    });
    return this.hostsRead;
  }

  /** Hosts a schedule covers, by name (from `hosts`, default the index refreshed at runs). */
  hostNames(s: Schedule, hosts: readonly HostRow[] = this.hosts): string[] {
    if (s.hosts?.length) return [...s.hosts];
    const spare = (h: HostRow) => h.rpoSeconds < 0 && s.kind !== 'drill';
    return hosts.filter((h) => (!s.group || h.group === s.group) && !spare(h)).map((h) => h.name);
  }

  private mustSchedule(name: string): Schedule {
    const s = this.d.schedules.find((x) => x.name === name);
    if (!s) {
      const known = this.d.schedules.map((x) => x.name).join(', ') || 'none (controller.yaml has no schedules)';
      throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no schedule "${name}": the config's schedules are ${known}`);
    }
    return s;
  }

  /** Every schedule of the config with its next run, last slot and pause. */
  async list(): Promise<ScheduleInfo[]> {
    const paused = await this.readPauses();
    const slots = this.scheduler ? this.slots : await this.d.catalog.listScheduleSlots();
    const live = new Map((this.scheduler?.status() ?? []).map((st) => [st.name, st]));
    const now = new Date();
    return this.d.schedules.map((s) => {
      const st = live.get(s.name);
      const p = paused.get(s.name);
      const next = st ? st.nextRunMs : (nextRunTime(s.cron, s.timezone, now)?.getTime() ?? null);
      return {
        name: s.name,
        kind: s.kind,
        cron: s.cron,
        timezone: s.timezone,
        hosts: s.hosts ?? [],
        group: s.group ?? '',
        drillHost: s.drillHost ?? '',
        nextRunMs: p ? 0 : (next ?? 0),
        lastSlotMs: st?.lastSlotMs ?? slots.get(s.name) ?? 0,
        running: st?.running ?? false,
        paused: Boolean(p),
        pausedAtMs: p?.pausedAtMs ?? 0,
        pausedBy: p?.pausedBy ?? '',
      };
    });
  }

  private async readPauses(): Promise<Map<string, SchedulePause>> {
    const paused = await this.d.catalog.listSchedulePauses();
    this.pausedNames = new Set(paused.keys());
    return paused;
  }

  /** Pause (by someone) or resume (null) a schedule; kept in the catalog. */
  async setPaused(name: string, by: string | null): Promise<ScheduleInfo> {
    this.mustSchedule(name);
    const pause: SchedulePause | null = by === null ? null : { name, pausedAtMs: Date.now(), pausedBy: by };
    await this.d.catalog.setSchedulePause(name, pause);
    this.d.log.info({ schedule: name, by }, by === null ? 'schedule resumed' : 'schedule paused');
    return (await this.list()).find((x) => x.name === name)!;
  }

  /** Fire a schedule now (on the leader), paused or not; returns at once, the run goes on. */
  runNow(name: string, by: string): { name: string; slotMs: number } {
    const s = this.mustSchedule(name);
    if (this.d.isLeader && !this.d.isLeader())
      throw new BoxbackError('BOXBACK_ERR_UNREACHABLE', `this controller does not lead: run schedule ${name} on the leader`);
    const slotMs = Date.now();
    this.d.log.info({ schedule: name, by }, 'schedule run now');
    void this.fire(s, slotMs, 1, true).catch((err: unknown) =>
      this.d.log.warn({ schedule: name, err: (err as Error).message }, 'schedule run (now) failed'),
    );
    return { name, slotMs };
  }

  /**
   * Per host, the next time a backup schedule fires for it (ms since the epoch): the
   * Scheduler's view on the leader; on a follower (no Scheduler) the next cron time.
   */
  nextRuns(hosts: readonly HostRow[] = this.hosts): Map<string, number> {
    const out = new Map<string, number>();
    const now = new Date();
    const next = this.scheduler
      ? this.scheduler.status().map((st) => [st.name, st.nextRunMs] as const)
      : this.d.schedules.map((s) => [s.name, nextRunTime(s.cron, s.timezone, now)?.getTime() ?? null] as const);
    const byName = new Map(this.d.schedules.map((s) => [s.name, s]));
    for (const [name, nextRunMs] of next) {
      const s = byName.get(name);
      if (!s || s.kind !== 'backup' || nextRunMs === null || this.pausedNames.has(name)) continue;
      for (const h of this.hostNames(s, hosts)) {
        const cur = out.get(h);
        if (cur === undefined || nextRunMs < cur) out.set(h, nextRunMs);
      }
    }
    return out;
  }

  private async fire(s: Schedule, slot: number, attempt: number, now = false): Promise<void> {
    await this.slotWrites.get(s.name); // durable before any job: a new leader will not fire it again
    if (this.d.isLeader && !this.d.isLeader()) {
      this.d.log.info({ schedule: s.name, slot: new Date(slot).toISOString() }, 'no longer the leader: scheduled run not started');
      return;
    }
    if (!now && (await this.readPauses()).has(s.name)) {
      this.d.log.info({ schedule: s.name, slot: new Date(slot).toISOString() }, 'schedule paused: slot passed without a run');
      return;
    }
    await this.refreshHosts();
    const key = `${s.name}@${slot}`;
    const names = (attempt > 1 && this.retryHosts.get(key)) || this.hostNames(s);
    this.retryHosts.delete(key);
    const known = new Map(this.hosts.map((h) => [h.name, h]));
    const hosts: HostRow[] = [];
    for (const n of names) {
      const h = known.get(n);
      if (h) hosts.push(h);
      else this.d.log.warn({ schedule: s.name, host: n }, 'schedule names a host that is not registered; skipped');
    }
    const failed =
      s.kind === 'backup'
        ? await this.backups(s, slot, attempt, hosts)
        : s.kind === 'verify'
          ? await this.verifies(s, hosts)
          : await this.drills(s, hosts);
    if (failed.length) {
      this.retryHosts.set(key, failed);
      throw new BoxbackError('BOXBACK_ERR_JOB_FAILED', `scheduled ${s.kind} failed on ${failed.join(', ')}`);
    }
  }

  private async backups(s: Schedule, slot: number, attempt: number, hosts: HostRow[]): Promise<string[]> {
    const started: JobRow[] = [];
    for (const h of hosts) {
      const busy = await this.d.jobs.busyWith(h.name);
      if (busy) {
        this.d.log.info({ schedule: s.name, host: h.name, busyWith: busy }, 'scheduled backup skipped: the host is already running a job');
        continue;
      }
      try {
        started.push(
          ...(await this.d.jobs.createBackups([h], {
            live: Boolean(s.live),
            concurrency: 0,
            requestedBy: `schedule:${s.name}`,
            via: 'schedule',
            slot: { schedule: s.name, slotMs: slot, attempt },
          })),
        );
      } catch (err) {
        if ((err as BoxbackError).code === 'BOXBACK_ERR_ALREADY_EXISTS') {
          this.d.log.warn(
            { schedule: s.name, host: h.name, slot: new Date(slot).toISOString() },
            'slot already fired for this host; skipped',
          );
          continue;
        }
        if ((err as BoxbackError).code !== 'BOXBACK_ERR_BUSY') throw err;
        this.d.log.info({ schedule: s.name, host: h.name }, 'scheduled backup skipped: the host is already running a job');
      }
    }
    const ended = await Promise.all(started.map(async (j) => (await this.d.jobs.waitFor(j.id)) ?? j));
    return ended.filter((j) => FAILED.has(j.state)).map((j) => j.host);
  }

  private async verifies(s: Schedule, hosts: HostRow[]): Promise<string[]> {
    const failed: string[] = [];
    for (const h of hosts) {
      const b = await this.d.catalog.lastRestorable(h.name);
      if (!b) continue;
      try {
        const r = await this.d.verify(b);
        this.d.log[r.ok ? 'info' : 'warn'](
          { schedule: s.name, backupId: b.id, ok: r.ok, problems: r.problems.slice(0, 3) },
          r.ok ? 'scheduled verification passed' : 'scheduled verification found problems: the backup is no longer Restorable',
        );
      } catch (err) {
        this.d.log.warn({ schedule: s.name, backupId: b.id, err: (err as Error).message }, 'scheduled verification could not run');
        failed.push(h.name);
      }
    }
    return failed;
  }

  private async drills(s: Schedule, hosts: HostRow[]): Promise<string[]> {
    const failed: string[] = [];
    for (const h of hosts) {
      if (h.name === s.drillHost) continue;
      try {
        const busy = await this.d.jobs.busyWith(s.drillHost ?? '');
        if (busy) {
          this.d.log.info({ schedule: s.name, drillHost: s.drillHost, busyWith: busy }, 'scheduled drill skipped: the drill host is busy');
          failed.push(h.name);
          continue;
        }
        const row = await this.d.drills.run(h.name, s.drillHost ?? '', `schedule:${s.name}`);
        if (row.state !== 'Completed') failed.push(h.name);
      } catch (err) {
        this.d.log.warn({ schedule: s.name, host: h.name, err: (err as Error).message }, 'scheduled drill could not start');
        if ((err as BoxbackError).code !== 'BOXBACK_ERR_NOT_FOUND') failed.push(h.name);
      }
    }
    return failed;
  }
}
