/**
 * Fleet status. A monitor asks every agent for its info every `pollSeconds` (bounded
 * parallelism, and at most POLLS_PER_SECOND new polls a second: a fleet of 1000 is polled
 * every 50 s, and a poll may need a new TLS handshake, see agent-client.ts), keeps the answers
 * in memory and records plan, versions and last-seen in the catalog. GetStatus answers from that memory (fast at hundreds of hosts) unless the
 * caller asks for a refresh; a host never polled yet is asked inline.
 * At risk: no Restorable backup younger than the host's RPO (or the default RPO); every
 * computation reports each host's flag to `onAtRisk` (webhooks). Each host also shows its next
 * scheduled backup (`nextRuns`, from the scheduler) and its last passed restore drill.
 */
import { BOXBACK_VERSION, mapLimit, type AgentInfo, type Logger, type Progress, type wire } from '@boxback/common';
import type { Agents } from './agent-client.js';
import type { BackupRow, Catalog, EvidenceRow, HostRow, HostUpdate, JobRow } from './catalog/types.js';
import { backupMsg, hostMsg, jobMsg } from './convert.js';
import type { ActiveJob, JobRunner } from './jobs.js';
import { nextTurn, TimeSlice } from './concurrency.js';
import type { AtRiskInput } from './notifications.js';
import { entryProto, registerParts } from './status-encoding.js';
import { PRESENCE_EVERY_MS } from './store-agreement.js';

interface Seen {
  atMs: number;
  info?: AgentInfo;
  error?: string;
  /** Asked right after a job of the host ended (refreshAfterJob): the poll round skips it. */
  afterJob?: boolean;
}

/** Polls started per second at most (1000 hosts: one round every 50 s; up to 300 hosts: every pollSeconds). */
export const POLLS_PER_SECOND = 20;
/** A poll's deadline when it needs a new connection (TCP, TLS handshake with certificates, HTTP/2). */
const NEW_CHANNEL_DEADLINE_MS = 10_000;
/** Poll answers are written to the catalog in batches of this many (last-seen stays fresh during a long round). */
const POLL_BATCH = 100;

/**
 * How long a built status is reused for calls without refresh while jobs run (progress is at
 * most this old; the dashboard's progress feed ticks once a second too). 1000 hosts: a build
 * reads 2000 catalog rows and makes ~2 MB that lives past a young-generation collection.
 */
const STATUS_REUSE_MS = 1_000;
/**
 * While jobs run, an answer up to this old is given at once when it is older than
 * STATUS_REUSE_MS, and the next one is built meanwhile (no caller waits behind a build of 1000
 * hosts; progress shown is then at most STATUS_REUSE_MS plus one build old).
 */
const STATUS_STALE_MS = 10_000;
/** With no job running, an answer is reused this long while nothing it was built from changed (ages are in seconds). */
const IDLE_REUSE_MS = 1_000;

/** At most this many hosts changed since the rows held are read one by one (more: every host is read again). */
const REREAD_AT_MOST = 200;
/** Past this many hosts a full read of the rows gives the event loop a turn between its queries (synchronous on SQLite). */
const BIG_FLEET = 200;
const turnIf = (yes: boolean) => (yes ? nextTurn() : Promise.resolve());

/** What of a poll's answer status shows: a change makes the next status call build anew. */
const seenKey = (s: Seen) =>
  s.info
    ? `up|${s.info.agentVersion}|${s.info.planName}|${s.info.productVersion}|${s.info.safetyCopies.map((c) => c.sizeBytes).join(',')}`
    : `down|${s.error ?? ''}`;

/** Plain values (objects, arrays, scalars) equal field by field. */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (!sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  return true;
}
type StatusAnswer = Awaited<ReturnType<HostMonitor['build']>>;

export class HostMonitor {
  private readonly seen = new Map<string, Seen>();
  /** Moves when a poll's answer changes what status shows (reachability, versions, safety copies). */
  private seenVersion = 0;
  private timer?: NodeJS.Timeout;
  private polling?: Promise<void>;
  private stopped = false;
  /** Hosts and their newest Restorable / drilled backups as of a catalog generation. */
  private built?: { atMs: number; answer: StatusAnswer; generation: number; seenVersion: number; busy: boolean };
  /** Builds started, and which of them made `built` (the newest ended wins). */
  private builds = 0;
  private builtSeq = 0;
  /** The answer being built for calls without refresh (shared by the calls arriving meanwhile). */
  private building?: { answer: Promise<StatusAnswer>; generation: number; seenVersion: number };
  private cache?: {
    generation: number;
    /** When the rows below were read (an at-risk verdict is as old as its data). */
    readAtMs: number;
    hosts: HostRow[];
    /** Each host's place in `hosts`. */
    index: Map<string, number>;
    /** Per host, its newest Restorable backup. */
    lastRestorable: Map<string, BackupRow>;
    /** Per host, its newest passed drill (evidence: still there when that backup is deleted). */
    drills: Map<string, EvidenceRow>;
  };
  /** Per host, what its entry in the last answer was made from (an entry is made again only when one of them moved). */
  private inputs = new Map<string, EntryInputs>();
  /** Per host, the seenVersion at which its poll's verdict last changed what status shows. */
  private readonly seenRevs = new Map<string, number>();
  /** Next scheduled backup per host (the scheduler's). */
  nextRuns: (hosts: readonly HostRow[]) => Map<string, number> = () => new Map();
  /** Who leads (status shows it). */
  leadership?: { readonly id: string; leader(): string };
  /** Told each host's at-risk flag whenever status is computed (webhooks). */
  onAtRisk: (h: AtRiskInput) => void = () => undefined;
  /** Called with every answer of an agent (agent-outbox.ts takes the results it could not deliver). */
  onInfo: (h: HostRow, info: AgentInfo) => void = () => undefined;
  /** Checks that each host's newest Restorable backup is still in the store (store-agreement.ts); returns how many it marked. */
  checkPresence?: (backups: Iterable<BackupRow>) => Promise<number>;
  private presenceAtMs = 0;
  private pollMs = 15_000;
  /** What the agents asked after their jobs reported, written together (refreshAfterJob). */
  private afterJobUpdates: Array<{ name: string; update: HostUpdate }> = [];
  private afterJobFlush?: NodeJS.Timeout;

  constructor(
    private readonly catalog: Catalog,
    private readonly agents: Agents,
    private readonly jobs: JobRunner,
    private readonly log: Logger,
    private readonly defaultRpoSeconds: number,
  ) {}

  start(pollSeconds: number): void {
    this.pollMs = pollSeconds * 1000;
    const tick = () => {
      this.polling ??= this.pollAll()
        .catch((err) => this.log.warn({ err }, 'polling agents failed'))
        .finally(() => (this.polling = undefined));
    };
    tick();
    this.timer = setInterval(tick, pollSeconds * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.afterJobFlush);
    await this.polling;
  }

  forget(name: string): void {
    this.seen.delete(name);
    this.seenRevs.set(name, ++this.seenVersion);
  }

  private remember(name: string, s: Seen): void {
    const before = this.seen.get(name);
    if (!before || seenKey(before) !== seenKey(s)) this.seenRevs.set(name, ++this.seenVersion);
    this.seen.set(name, s);
  }

  last(name: string): Seen | undefined {
    return this.seen.get(name);
  }

  /**
   * Ask every agent (8 at a time and POLLS_PER_SECOND a second at most: a background poll must
   * not starve status calls); record what they report in transactions of POLL_BATCH hosts.
   */
  async pollAll(): Promise<void> {
    const hosts = await this.catalog.listHosts();
    let updates: Array<{ name: string; update: HostUpdate }> = [];
    const spacingMs = 1000 / POLLS_PER_SECOND;
    let next = Date.now();
    await mapLimit(hosts, 8, async (h) => {
      // asked after its job within the last pollSeconds (on the job's channel): not again now
      const seen = this.seen.get(h.name);
      if (seen?.afterJob && Date.now() - seen.atMs < this.pollMs) return;
      const wait = next - Date.now();
      next = Math.max(next, Date.now()) + spacingMs;
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (this.stopped) return;
      await this.poll(h, 3_000, updates);
      if (updates.length >= POLL_BATCH) {
        const batch = updates;
        updates = [];
        await this.catalog.updateHosts(batch);
      }
    });
    if (updates.length) await this.catalog.updateHosts(updates);
  }

  /**
   * Ask a host's agent right after a job of it ended, while the job's channel is still open (no
   * TLS handshake; past 256 hosts a poll of the round would need one, agent-client.ts): its
   * answer stands for this round's poll, which skips the host. During a fleet backup of 1000
   * hosts the backups' connections then serve the polls too. The answers reach the catalog
   * together, once a second.
   */
  refreshAfterJob(h: HostRow): void {
    if (this.stopped) return;
    void this.poll(h, 3_000, this.afterJobUpdates, true);
    this.afterJobFlush ??= setTimeout(() => {
      this.afterJobFlush = undefined;
      const batch = this.afterJobUpdates;
      this.afterJobUpdates = [];
      if (batch.length) this.catalog.updateHosts(batch).catch((err: unknown) => this.log.warn({ err }, 'recording agent answers failed'));
    }, 1_000);
    this.afterJobFlush.unref();
  }

  /**
   * Ask one agent; remember the answer; record what it reports in the catalog (or in `batch`).
   * A host whose channel was closed to make room (agent-client.ts) first needs a new TLS
   * handshake, which a loaded controller may take seconds for: its deadline is
   * NEW_CHANNEL_DEADLINE_MS, so a slow handshake is not reported as the agent being down.
   */
  async poll(h: HostRow, deadlineMs = 3_000, batch?: Array<{ name: string; update: HostUpdate }>, afterJob = false): Promise<Seen> {
    const now = Date.now();
    try {
      const info = await this.agents.get(h).getInfo(deadlineMs, NEW_CHANNEL_DEADLINE_MS);
      const s: Seen = { atMs: now, info, ...(afterJob ? { afterJob } : {}) };
      this.remember(h.name, s);
      this.onInfo(h, info);
      const update = {
        planName: info.planName,
        product: info.product,
        productVersion: info.productVersion,
        agentVersion: info.agentVersion,
        lastSeenMs: now,
      };
      if (batch) batch.push({ name: h.name, update });
      else await this.catalog.updateHost(h.name, update);
      return s;
    } catch (err) {
      const s: Seen = { atMs: now, error: (err as Error).message };
      this.remember(h.name, s);
      return s;
    }
  }

  /**
   * The newest Restorable backups must still be in the store (every call with refresh, else at
   * most every PRESENCE_EVERY_MS); the metrics and `status --refresh` wait for it before they
   * read them, a status call without refresh starts it and answers meanwhile.
   */
  async checkStore(refresh: boolean, now = Date.now()): Promise<void> {
    if (!this.checkPresence || (!refresh && now - this.presenceAtMs < PRESENCE_EVERY_MS)) return;
    this.presenceAtMs = now;
    const newest =
      this.cache?.generation === this.catalog.generation ? this.cache.lastRestorable : (await this.catalog.statusBackups()).lastRestorable;
    await this.checkPresence(newest.values()).catch((err: unknown) => this.log.warn({ err }, 'store presence check failed'));
  }

  /**
   * The fleet status. Without `refresh`, while jobs run, an answer built in the last
   * STATUS_REUSE_MS (1 s) is given again (its progress at most that old): during a fleet backup of
   * 1000 hosts every finished job changes the catalog, and the dashboard and CLIs asking
   * meanwhile share one build instead of each rebuilding it. With no job running an answer is
   * given again for IDLE_REUSE_MS while the catalog (its generation) and every poll's verdict
   * are unchanged: it is then the answer a rebuild would give, but for ages up to 1 s.
   */
  async status(refresh: boolean): Promise<StatusAnswer> {
    const last = this.built;
    const busy = this.jobs.activeJobs().length > 0;
    const age = last ? Date.now() - last.atMs : Infinity;
    if (!refresh && last) {
      if (busy && age < STATUS_REUSE_MS) {
        // jobs began since that answer: the first answer with them is built now, aside, so that no
        // caller waits for it once this one is too old (a fleet backup's first answer has 1000 new
        // entries: the callers that arrived meanwhile waited 100-400 ms at a load of 8-12)
        if (!last.busy && !this.building)
          this.startBuild(busy).answer.catch((err: unknown) => this.log.warn({ err }, 'building the status failed'));
        return last.answer;
      }
      // still busy since that answer: the next one is built aside, this caller does not wait for it
      // (not when who leads has changed since: a takeover shows at once)
      if (busy && last.busy && age < STATUS_STALE_MS && last.answer.leader === (this.leadership?.leader() ?? '')) {
        if (!this.building) this.startBuild(busy).answer.catch((err: unknown) => this.log.warn({ err }, 'building the status failed'));
        return last.answer;
      }
      const same = last.generation === this.catalog.generation && last.seenVersion === this.seenVersion;
      if (!busy && !last.busy && same && age < IDLE_REUSE_MS) return last.answer;
    }
    // a call arriving while an answer is being built from the same catalog and polls waits for
    // it rather than build its own (after a write of its own it builds anew: it sees that write)
    const b = this.building;
    if (!refresh && b && b.generation === this.catalog.generation && b.seenVersion === this.seenVersion) return b.answer;
    if (!refresh) return this.startBuild(busy).answer;
    const generation = this.catalog.generation;
    const seenVersion = this.seenVersion;
    const seq = ++this.builds;
    const answer = await this.build(true);
    if (seq >= this.builtSeq) {
      this.builtSeq = seq;
      this.built = { atMs: Date.now(), answer, generation, seenVersion, busy };
    }
    return answer;
  }

  /** Build an answer without refresh; it becomes the one given again (status()). */
  private startBuild(busy: boolean): NonNullable<HostMonitor['building']> {
    const building = { answer: this.build(false), generation: this.catalog.generation, seenVersion: this.seenVersion };
    this.building = building;
    const seq = ++this.builds;
    building.answer
      .then(
        (answer) => {
          // an older build ending after a newer one does not replace it
          if (seq < this.builtSeq) return;
          this.builtSeq = seq;
          this.built = { atMs: Date.now(), answer, generation: building.generation, seenVersion: building.seenVersion, busy };
        },
        () => undefined,
      )
      .finally(() => {
        if (this.building === building) this.building = undefined;
      });
    return building;
  }

  /**
   * The catalog rows status is built from, as of the catalog's generation now. A catalog that
   * tracks which hosts changed (SQLite: `changedHosts`) has only those read again: during a
   * fleet backup one finished job changes one host, and reading 1000 hosts and their newest
   * backups a second made ~2 MB of rows that outlived a young-generation collection.
   */
  private async readRows(): Promise<NonNullable<HostMonitor['cache']>> {
    const generation = this.catalog.generation;
    const c = this.cache;
    if (c?.generation === generation) return c;
    const readAtMs = Date.now();
    const changed = c && this.catalog.changedHosts?.(c.generation);
    if (c && changed && changed.size <= REREAD_AT_MOST) {
      // new arrays and maps (a build under way keeps reading the ones it has)
      const hosts = c.hosts.slice();
      const lastRestorable = new Map(c.lastRestorable);
      const drills = new Map(c.drills);
      for (const name of changed) {
        const i = c.index.get(name);
        const row = await this.catalog.getHost(name);
        // a host added or removed moves the whole list (changedHosts says undefined): not here
        if (i === undefined || !row) return this.readAll(generation, readAtMs);
        hosts[i] = row;
        const last = await this.catalog.lastRestorable(name);
        if (last) lastRestorable.set(name, last);
        else lastRestorable.delete(name);
        const drill = (await this.catalog.lastPassedEvidence('drill', name)).get(name);
        if (drill) drills.set(name, drill);
        else drills.delete(name);
      }
      this.cache = { generation, readAtMs, hosts, index: c.index, lastRestorable, drills };
      return this.cache;
    }
    return this.readAll(generation, readAtMs);
  }

  private async readAll(generation: number, readAtMs: number): Promise<NonNullable<HostMonitor['cache']>> {
    const big = (this.cache?.hosts.length ?? 0) > BIG_FLEET;
    const hosts = await this.catalog.listHosts();
    // past BIG_FLEET hosts a turn of the event loop between the reads (synchronous on SQLite)
    const { lastRestorable } = await turnIf(big).then(() => this.catalog.statusBackups());
    const drills = await turnIf(big).then(() => this.catalog.lastPassedEvidence('drill'));
    this.cache = { generation, readAtMs, hosts, index: new Map(hosts.map((h, i) => [h.name, i])), lastRestorable, drills };
    return this.cache;
  }

  private async build(refresh: boolean) {
    const now = Date.now();
    // with refresh the store is checked first; else in the background (1000 hosts: 1000 stats
    // no caller waits for): a backup found missing moves the generation, the next answer shows it
    if (refresh) await this.checkStore(true, now);
    else this.checkStore(false, now).catch((err: unknown) => this.log.warn({ err }, 'store presence check failed'));
    const { hosts, lastRestorable, readAtMs, drills } = await this.readRows();
    const nextRuns = this.nextRuns(hosts);
    // only the hosts never polled yet (or all, on refresh) are asked now; the rest is built
    // synchronously from memory (1000 hosts: no await per host)
    const fresh = new Map<string, HostRow>();
    await mapLimit(
      hosts.filter((h) => refresh || !this.seen.has(h.name)),
      16,
      async (h) => {
        await this.poll(h, refresh ? 3_000 : 1_500);
        fresh.set(h.name, (await this.catalog.getHost(h.name)) ?? h);
      },
    );
    const entries: Entry[] = [];
    const ages: number[] = [];
    const inputs = new Map<string, EntryInputs>();
    const out: wire.HostStatus[] = [];
    const slice = new TimeSlice();
    for (const h of hosts) {
      // a turn of the event loop every TimeSlice.SLICE_MS: calls arriving meanwhile are answered
      if (slice.over()) await slice.turn();
      const s = this.seen.get(h.name) ?? { atMs: now, error: 'not polled yet' };
      const last = lastRestorable.get(h.name);
      const ageS = last ? Math.max(0, Math.floor((now - last.createdAtMs) / 1000)) : -1;
      const rpo = h.rpoSeconds > 0 ? h.rpoSeconds : this.defaultRpoSeconds;
      const atRisk = h.rpoSeconds >= 0 && (!last || ageS > rpo); // rpo none: a drill-only spare is never at risk
      this.onAtRisk({
        host: h.name,
        atRisk,
        lastGoodBackupId: last?.id ?? '',
        lastGoodAgeSeconds: ageS,
        rpoSeconds: rpo,
        asOfMs: readAtMs,
      });
      const x: Omit<EntryInputs, 'entry'> = {
        host: fresh.get(h.name) ?? h,
        seen: this.seen.has(h.name) ? (this.seenRevs.get(h.name) ?? -1) : -1,
        last,
        drilled: drills.get(h.name),
        job: this.jobs.activeJobFor(h.name),
        nextRunMs: nextRuns.get(h.name) ?? 0,
        atRisk,
      };
      const prev = this.inputs.get(h.name);
      const made = prev && sameInputs(prev, x) ? prev : { ...x, entry: this.entry(x, s, prev), ...jobMark(x.job) };
      // a new entry's bytes made now, in this slice (the answer is then joined from them, status-encoding.ts)
      if (made.entry !== prev?.entry) entryProto(made.entry);
      inputs.set(h.name, made);
      const entry = made.entry;
      entries.push(entry);
      ages.push(ageS);
      out.push(withAge(entry, ageS));
    }
    this.inputs = inputs;
    const answer = {
      hosts: out,
      totalHosts: out.length,
      reachableHosts: out.filter((h) => h.reachable).length,
      atRiskHosts: out.filter((h) => h.atRisk).length,
      runningJobs: this.jobs.activeJobs().filter((a) => a.row.state === 'Running').length,
      controllerVersion: BOXBACK_VERSION,
      atMs: now,
      leader: this.leadership?.leader() ?? '',
      controller: this.leadership?.id ?? '',
    };
    registerParts(answer, entries, ages);
    return answer;
  }

  /**
   * A host's entry made from its inputs; the previous one when equal field by field (its
   * encodings are kept, status-encoding.ts). Its host and backup messages are the previous
   * entry's while their rows are the same objects (their bytes are then made once).
   */
  private entry(x: Omit<EntryInputs, 'entry'>, s: Seen, prevInputs: EntryInputs | undefined): Entry {
    const prev = prevInputs?.entry;
    const copies = s.info?.safetyCopies ?? [];
    const running = x.job;
    const made: Entry = {
      host: prev?.host && prevInputs?.host === x.host ? prev.host : hostMsg(x.host),
      reachable: Boolean(s.info),
      unreachableReason: s.error ?? '',
      runningJob: running ? jobMsg(running.row, running.progress) : null,
      lastGoodBackup:
        prev?.lastGoodBackup && x.last && prevInputs?.last === x.last ? prev.lastGoodBackup : x.last ? backupMsg(x.last) : null,
      nextRunMs: x.nextRunMs,
      atRisk: x.atRisk,
      safetyCopies: copies.length,
      safetyCopyBytes: copies.reduce((n, c) => n + Number(c.sizeBytes), 0),
      lastDrillBackupId: x.drilled?.backupId ?? '',
      lastDrillAtMs: x.drilled?.atMs ?? 0,
      lastDrillDurationMs: x.drilled?.durationMs ?? 0,
    };
    return prev && sameValue(prev, made) ? prev : made;
  }
}

/** A host's status but for its age (status-encoding.ts: the one field that moves every second for every host). */
type Entry = Omit<wire.HostStatus, 'lastGoodAgeSeconds'>;

/**
 * The entry with its age, as the answer's `hosts` hold it: an object literal of the wire type
 * (1000 a second while jobs run: `{ ...entry, age }` took V8's slow path, ~5 µs each).
 */
function withAge(e: Entry, ageS: number): wire.HostStatus {
  return {
    host: e.host,
    reachable: e.reachable,
    unreachableReason: e.unreachableReason,
    runningJob: e.runningJob,
    lastGoodBackup: e.lastGoodBackup,
    nextRunMs: e.nextRunMs,
    atRisk: e.atRisk,
    safetyCopies: e.safetyCopies,
    safetyCopyBytes: e.safetyCopyBytes,
    lastDrillBackupId: e.lastDrillBackupId,
    lastDrillAtMs: e.lastDrillAtMs,
    lastDrillDurationMs: e.lastDrillDurationMs,
    lastGoodAgeSeconds: ageS,
  };
}

/**
 * What one host's entry is made from: rows by identity (the catalog's rows of a host are read
 * again only when it changed, readRows), the poll's verdict by revision, the running job by
 * what jobMsg copies from it. Equal inputs make an equal entry: it is not made again.
 */
interface EntryInputs {
  host: HostRow;
  /** seenRevs of the host (-1: never polled). */
  seen: number;
  last: BackupRow | undefined;
  drilled: EvidenceRow | undefined;
  job: ActiveJob | undefined;
  nextRunMs: number;
  atRisk: boolean;
  entry: Entry;
  /** The job's fields as its message was made (jobMark). */
  jobRow?: Partial<JobRow>;
  jobProgress?: Progress;
}

/** The fields of a running job's row jobMsg reads, and its live progress, as they are now. */
function jobMark(a: ActiveJob | undefined): Pick<EntryInputs, 'jobRow' | 'jobProgress'> {
  return a ? { jobRow: { ...a.row }, jobProgress: a.progress } : {};
}

function sameInputs(a: EntryInputs, b: Omit<EntryInputs, 'entry'>): boolean {
  if (a.host !== b.host || a.seen !== b.seen || a.last !== b.last || a.drilled !== b.drilled) return false;
  if (a.job !== b.job || a.nextRunMs !== b.nextRunMs || a.atRisk !== b.atRisk) return false;
  if (!b.job) return true;
  // the job's row is changed in place (jobs.ts): compared field by field with the copy taken when the entry was made
  if (a.jobProgress !== b.job.progress || !a.jobRow) return false;
  const row = b.job.row as unknown as Record<string, unknown>;
  const was = a.jobRow as Record<string, unknown>;
  for (const k in row) if (row[k] !== was[k]) return false;
  return true;
}
