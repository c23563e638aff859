/**
 * The embedded catalog: one SQLite file (better-sqlite3, WAL, synchronous=FULL so a
 * recorded backup survives a power cut), schema versioned with `PRAGMA user_version`.
 * better-sqlite3 is synchronous; the methods return promises to keep the Catalog
 * interface the same for PostgreSQL.
 *
 * Group commit: the durable writes of the busy paths (jobs, backups, hosts, audit) are queued
 * and committed together in one transaction at the next turn of the event loop, so one fsync
 * covers every write made meanwhile (a fleet backup of 1000 hosts makes thousands; one fsync
 * each on the event loop held every status call behind them). A write's promise resolves after
 * its commit, as before; one failing write rolls back to its own savepoint and only its promise
 * rejects. `generation` moves when a batch that changed hosts or backups has committed, so a
 * reader never caches the rows before the change under the generation after it; each such
 * write also marks the host it changed with that generation (`changedHosts`: a status build
 * reads again only the hosts changed since the rows it holds, not 1000 hosts a second while a
 * fleet backs up).
 * Light writes (a job's progress and log lines: learnt again or only describing) join the same
 * queue in order: a batch of light writes only commits without an fsync (WAL, synchronous =
 * NORMAL), and a job's progress queued again before the commit replaces the queued one (one row
 * update per job per batch). A fleet backup made ~5 single-statement commits per host of them,
 * each with two PRAGMA switches, on the event loop.
 */
import { closeSync, fsync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { BoxbackError } from '@boxback/common';
import { migrateSqlite } from './migrations.js';
import { WalCheckpointer } from './sqlite-checkpoint.js';
import {
  BACKUP_LIST_COLUMNS,
  EVIDENCE_COLUMNS,
  camelToSnake,
  fromDb,
  jobExists,
  toAudit,
  toBackup,
  toEvidence,
  toHost,
  toJob,
  toToken,
  type Row,
} from './rows.js';
import type {
  AuditEntry,
  BackupRow,
  BackupUpdate,
  Catalog,
  EvidenceFilter,
  EvidenceKind,
  EvidenceRow,
  HostRow,
  HostUpdate,
  JobEventRow,
  JobFilter,
  JobRow,
  JobUpdate,
  NewBackup,
  SchedulePause,
  TokenRow,
} from './types.js';

/** "SET a = @a, b = @b" for the keys present in `u` (camelCase keys -> snake_case columns). */
function setClause(u: Record<string, unknown>, rename: Record<string, string> = {}): { sql: string; params: Row } {
  const parts: string[] = [];
  const params: Row = {};
  for (const [k, v] of Object.entries(u)) {
    if (v === undefined) continue;
    const col = rename[k] ?? camelToSnake(k);
    parts.push(`${col} = @${k}`);
    params[k] = typeof v === 'boolean' ? Number(v) : v;
  }
  return { sql: parts.join(', '), params };
}

/**
 * What a write changes that status caches (keyed on `generation`): nothing (false), the rows of
 * one host (its name), or hosts not known here (true: every host is read again).
 */
type Bump = boolean | string;

interface QueuedWrite {
  fn: () => unknown;
  /** The write changes hosts, backups or evidence (status caches key on `generation`). */
  bumps: Bump;
  /** Needs no fsync of its own (see withoutFsync). */
  light: boolean;
  /** Callers waiting for it (more than one when a keyed write replaced a queued one). */
  waiters: Array<{ resolve: (v: unknown) => void; reject: (err: unknown) => void }>;
}

/**
 * Writes committed together at most; more wait for the next turn's commit. A fleet backup of
 * 1000 hosts queues 2000 writes at once (its jobs and their first log lines): one transaction of
 * them held the event loop for 40-100 ms, and every status call behind it.
 */
export const MAX_WRITES_PER_COMMIT = 200;

/**
 * A commit takes no more writes once it has run this long (a write is a few to tens of
 * microseconds; 200 job rows still held the event loop ~10-25 ms on a loaded box): a status
 * call waits for at most one such slice of the catalog's writes.
 */
export const COMMIT_SLICE_MS = 4;

export class SqliteCatalog implements Catalog {
  readonly schemaVersion: number;
  generation = 0;
  /** Per host, the generation its rows last changed at (changedHosts). */
  private readonly hostMarks = new Map<string, number>();
  /** The generation of the last change not marked on one host (a host added or removed). */
  private wholeMark = 0;
  private readonly db: Database.Database;
  private queue: QueuedWrite[] = [];
  /** Queued keyed writes (a job's progress) by key: a newer one replaces the queued one's statement. */
  private keyed = new Map<string, QueuedWrite>();
  private flushing?: NodeJS.Immediate;
  /** Commits so far and writes in them (a test and the fleet bench read them). */
  readonly commits = { batches: 0, writes: 0, fsyncs: 0, largest: 0 };
  /** Prepared statements by SQL text: preparing costs more than running (status asks hundreds per call). */
  private readonly stmts = new Map<string, Database.Statement>();
  /** createJob's INSERT by the row's columns (a fleet backup built the same text 1000 times). */
  private readonly jobInserts = new Map<string, string>();

  /** The WAL file's descriptor: the group commit's fsync, off the event loop (syncWal). */
  private walFd?: number;
  /** The catalog is in WAL mode (else the group commit is a FULL commit, fsync on the event loop). */
  private readonly wal: boolean;
  /** The WAL fsync under way (close waits for it and any it starts). */
  private readonly syncing = new Set<Promise<void>>();
  /** Whether a WAL fsync is in flight, and the batches committed since it started (they wait for the next). */
  private syncInFlight = false;
  private syncWaiters: Array<(err?: unknown) => void> = [];
  /** WAL checkpoints with their fsyncs in the pool (sqlite-checkpoint.ts); none without WAL. */
  readonly checkpointer?: WalCheckpointer;

  private constructor(
    db: Database.Database,
    version: number,
    private readonly file: string,
    private readonly commitSliceMs: number,
  ) {
    this.db = db;
    this.schemaVersion = version;
    this.wal = db.pragma('journal_mode', { simple: true }) === 'wal';
    if (this.wal) this.checkpointer = new WalCheckpointer(db, file, () => this.openWal());
  }

  private stmt(sql: string): Database.Statement {
    let st = this.stmts.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.stmts.set(sql, st);
    }
    return st;
  }

  /**
   * Queue a write for the next group commit; resolves with `fn`'s value once committed. `light`:
   * no fsync needed for it; `key`: a queued write with the same key takes this one's statement
   * (its place in the queue stays: only one statement per key and batch is run).
   */
  private write<T>(fn: () => T, bumps: Bump = false, { light = false, key }: { light?: boolean; key?: string } = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const waiter = { resolve: resolve as (v: unknown) => void, reject };
      const queued = key === undefined ? undefined : this.keyed.get(key);
      if (queued) {
        queued.fn = fn;
        queued.waiters.push(waiter);
        return;
      }
      const w: QueuedWrite = { fn, bumps, light, waiters: [waiter] };
      this.queue.push(w);
      if (key !== undefined) this.keyed.set(key, w);
      this.flushing ??= setImmediate(() => this.flush());
    });
  }

  /**
   * One transaction (one fsync) for the queued writes (at most MAX_WRITES_PER_COMMIT, or what
   * COMMIT_SLICE_MS allows; the rest in the next turn), each write in its own savepoint. The
   * commit writes the WAL without an fsync (synchronous = NORMAL) and the WAL file is then
   * fsynced in libuv's thread pool (syncWal): the callers' promises resolve after it, as durable
   * as a FULL commit, but the event loop does not wait for the disk (at 1000 hosts the commit's
   * fsync was the largest part of the controller's long turns, 2.1 of 21 s of a fleet backup).
   * Rows are visible to reads (and the generation moves) at the commit.
   */
  private flush(): void {
    this.flushing = undefined;
    const queue = this.queue;
    if (!queue.length) return;
    const limit = Math.min(queue.length, MAX_WRITES_PER_COMMIT);
    const outcome: Array<{ ok: boolean; value: unknown }> = [];
    const savepoint = this.stmt('SAVEPOINT w');
    const release = this.stmt('RELEASE w');
    const rollbackTo = this.stmt('ROLLBACK TO w');
    const startMs = performance.now();
    // each write in its own savepoint (prepared once: a transaction wrapper per write was a third
    // of the commit's time), until MAX_WRITES_PER_COMMIT or COMMIT_SLICE_MS of them
    const commit = () =>
      this.db.transaction(() => {
        for (let i = 0; i < limit; i++) {
          if (i > 0 && performance.now() - startMs >= this.commitSliceMs) break;
          savepoint.run();
          try {
            outcome.push({ ok: true, value: queue[i].fn() });
            release.run();
          } catch (err) {
            rollbackTo.run();
            release.run();
            outcome.push({ ok: false, value: err });
          }
        }
      })();
    const light = queue.slice(0, limit).every((w) => w.light);
    try {
      if (light || this.wal) this.withoutFsync(commit);
      else commit(); // no WAL (a file system without shared memory): the commit's own fsync
    } catch (err) {
      // the commit itself failed (disk full, I/O error): nothing of these writes is recorded
      const failed = queue.slice(0, outcome.length || limit);
      this.dequeue(failed.length);
      for (const w of failed) for (const x of w.waiters) x.reject(err);
      return;
    }
    // the rest in the next turn's commit (still in order; their keys stay queued for it)
    const batch = queue.slice(0, outcome.length);
    this.dequeue(batch.length);
    this.commits.batches++;
    this.commits.writes += batch.length;
    this.commits.largest = Math.max(this.commits.largest, batch.length);
    const changed = batch.filter((w, i) => w.bumps !== false && outcome[i].ok);
    if (changed.length) this.bump(...changed.map((w) => w.bumps));
    const settle = (syncErr?: unknown) =>
      batch.forEach((w, i) => {
        for (const x of w.waiters) {
          if (syncErr) x.reject(syncErr);
          else if (outcome[i].ok) x.resolve(outcome[i].value);
          else x.reject(outcome[i].value);
        }
      });
    // a batch of light writes only (progress, log lines) needs no fsync of its own
    if (light || !this.wal) settle();
    else this.syncWal(settle);
  }

  /** Take the first `n` queued writes off the queue (and their keys); the rest commit at the next turn. */
  private dequeue(n: number): void {
    if (n >= this.queue.length) {
      this.queue = [];
      this.keyed.clear();
      return;
    }
    const done = new Set(this.queue.slice(0, n));
    this.queue = this.queue.slice(n);
    for (const [k, w] of this.keyed) if (done.has(w)) this.keyed.delete(k);
    this.flushing ??= setImmediate(() => this.flush());
  }

  /**
   * fsync the WAL file (what a commit with synchronous = FULL does before it returns) in the
   * thread pool; `done` with the error when it failed (the batch's callers see it: durable or
   * not is then unknown, as after a failed FULL commit). The WAL keeps its file while this
   * connection is open (a checkpoint rewrites it from the start, the same file).
   */
  private syncWal(done: (err?: unknown) => void): void {
    this.syncWaiters.push(done);
    if (!this.syncInFlight) this.startSync();
  }

  /**
   * One fsync for every batch committed since the last one started: at most one is in flight,
   * and batches committed meanwhile wait for the next (each batch's fsync starts after its
   * commit, so it is as durable as before). A loaded disk took 10-50 ms an fsync, and one per
   * turn of the event loop had each turn wake a pool thread for it.
   */
  private startSync(): void {
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    let fd: number;
    try {
      fd = this.openWal();
    } catch (err) {
      for (const w of waiters) w(err);
      return;
    }
    this.syncInFlight = true;
    this.commits.fsyncs++;
    const p = new Promise<void>((resolve) =>
      fsync(fd, (err) => {
        this.syncInFlight = false;
        this.syncing.delete(p);
        for (const w of waiters) w(err ?? undefined);
        if (this.syncWaiters.length) this.startSync();
        resolve();
      }),
    );
    this.syncing.add(p);
  }

  /** The WAL file's descriptor, opened once. */
  private openWal(): number {
    return (this.walFd ??= openSync(`${this.file}-wal`, 'r'));
  }

  /** Move the generation after a change, marking the hosts it changed (true: not one host's). */
  private bump(...what: Bump[]): void {
    const g = ++this.generation;
    for (const b of what) {
      if (b === true) this.wholeMark = g;
      else if (b !== false) this.hostMarks.set(b, g);
    }
  }

  changedHosts(since: number): ReadonlySet<string> | undefined {
    if (this.wholeMark > since) return undefined;
    const out = new Set<string>();
    for (const [host, g] of this.hostMarks) if (g > since) out.add(host);
    return out;
  }

  /** Open (creating if needed) and migrate the catalog file. */
  /** `commitSliceMs`: COMMIT_SLICE_MS unless given (a test pins how writes split into commits). */
  static open(file: string, { commitSliceMs = COMMIT_SLICE_MS }: { commitSliceMs?: number } = {}): SqliteCatalog {
    let db: Database.Database;
    try {
      mkdirSync(path.dirname(file), { recursive: true });
      db = new Database(file);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      db.pragma('busy_timeout = 5000');
    } catch (err) {
      throw new BoxbackError('BOXBACK_ERR_CATALOG', `cannot open the catalog ${file}: ${(err as Error).message}`, {}, { cause: err });
    }
    try {
      return new SqliteCatalog(db, migrateSqlite(db, file), file, commitSliceMs);
    } catch (err) {
      db.close();
      if (err instanceof BoxbackError) throw err;
      throw new BoxbackError('BOXBACK_ERR_CATALOG', `cannot migrate the catalog ${file}: ${(err as Error).message}`, {}, { cause: err });
    }
  }

  // ---- hosts

  async addHost(h: HostRow): Promise<void> {
    await this.write(() => {
      try {
        this.stmt(
          `INSERT INTO hosts (name, address, grp, rpo_seconds, plan_name, product, product_version, agent_version, last_seen_ms, created_at_ms)
             VALUES (@name, @address, @group, @rpoSeconds, @planName, @product, @productVersion, @agentVersion, @lastSeenMs, @createdAtMs)`,
        ).run(h);
      } catch (err) {
        if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
          throw new BoxbackError(
            'BOXBACK_ERR_ALREADY_EXISTS',
            `host ${h.name} is already registered; remove it first to change its address`,
          );
        }
        throw err;
      }
    }, true); // a host added: the host list changes (every host is read again)
  }

  async getHost(name: string): Promise<HostRow | undefined> {
    const row = this.stmt('SELECT * FROM hosts WHERE name = ?').get(name) as Row | undefined;
    return row && toHost(row);
  }

  async listHosts(group?: string): Promise<HostRow[]> {
    const rows = group
      ? this.stmt('SELECT * FROM hosts WHERE grp = ? ORDER BY name').all(group)
      : this.stmt('SELECT * FROM hosts ORDER BY name').all();
    return (rows as Row[]).map(toHost);
  }

  async removeHost(name: string): Promise<boolean> {
    this.bump(true);
    return this.stmt('DELETE FROM hosts WHERE name = ?').run(name).changes > 0;
  }

  async updateHost(name: string, u: HostUpdate): Promise<void> {
    const { sql, params } = setClause(u, { group: 'grp' });
    if (sql) await this.write(() => this.stmt(`UPDATE hosts SET ${sql} WHERE name = @_name`).run({ ...params, _name: name }), name);
  }

  async updateHosts(updates: ReadonlyArray<{ name: string; update: HostUpdate }>): Promise<void> {
    this.bump(...updates.map((u) => u.name));
    // What a poll learns (versions, last seen) is learnt again at the next poll: committed
    // without an fsync of its own (WAL + NORMAL), so a fleet poll never stalls status calls.
    this.withoutFsync(() =>
      this.db.transaction(() => {
        for (const { name, update } of updates) {
          const { sql, params } = setClause(update);
          if (sql) this.stmt(`UPDATE hosts SET ${sql} WHERE name = @_name`).run({ ...params, _name: name });
        }
      })(),
    );
  }

  /**
   * Commit without an fsync of its own (WAL + synchronous=NORMAL): for what is learnt again or
   * only describes (polls, progress, job log lines). A power cut may lose such a commit, never a
   * job's state or a backup row; the next FULL commit makes it durable. A fleet's worth of
   * these (1000 hosts, 50 backups at once) would otherwise stall every call behind fsyncs.
   */
  private withoutFsync<T>(fn: () => T): T {
    this.stmt('PRAGMA synchronous = NORMAL').run();
    try {
      return fn();
    } finally {
      this.stmt('PRAGMA synchronous = FULL').run();
      this.checkpointer?.schedule(); // its frames reach the database file within a second, off the event loop
    }
  }

  // ---- backups

  async putBackup(b: NewBackup): Promise<BackupRow> {
    const row = { ...b, verifyFailed: Number(b.verifyFailed), initiatedVia: b.initiatedVia ?? 'cli' } as Row;
    const sql = `INSERT OR REPLACE INTO backups (id, host, created_at_ms, size_bytes, consistency, status, verified_at_ms, verify_failed, path,
           product_version, job_id, origin, manifest_json, quiesce_window_ms, file_count, warning_count, error_count, error_message,
           initiated_via)
         VALUES (@id, @host, @createdAtMs, @sizeBytes, @consistency, @status, @verifiedAtMs, @verifyFailed, @path,
           @productVersion, @jobId, @origin, @manifestJson, @quiesceWindowMs, @fileCount, @warningCount, @errorCount, @errorMessage,
           @initiatedVia)`;
    // INSERT OR REPLACE: a replaced row of another host (the same id) is that host's change too
    const before = this.backupHost(b.id);
    await this.write(() => this.stmt(sql).run(row), before && before !== b.host ? true : b.host);
    return (await this.getBackup(b.id))!;
  }

  async getBackup(id: string): Promise<BackupRow | undefined> {
    const row = this.stmt('SELECT * FROM backups WHERE id = ?').get(id) as Row | undefined;
    return row && toBackup(row);
  }

  async listBackups(host?: string): Promise<BackupRow[]> {
    const rows = host
      ? this.stmt(`SELECT ${BACKUP_LIST_COLUMNS} FROM backups WHERE host = ? ORDER BY created_at_ms DESC, id DESC`).all(host)
      : this.stmt(`SELECT ${BACKUP_LIST_COLUMNS} FROM backups ORDER BY created_at_ms DESC, id DESC`).all();
    return (rows as Row[]).map(toBackup);
  }

  async lastRestorable(host: string): Promise<BackupRow | undefined> {
    const row = this.stmt(
      `SELECT ${BACKUP_LIST_COLUMNS} FROM backups WHERE host = ? AND status = 'Completed' AND manifest_json != '' AND verify_failed = 0
         ORDER BY created_at_ms DESC, id DESC LIMIT 1`,
    ).get(host) as Row | undefined;
    return row && toBackup(row);
  }

  async statusBackups(): Promise<{ lastRestorable: Map<string, BackupRow>; lastDrilled: Map<string, BackupRow> }> {
    const good = this.stmt(
      `SELECT ${BACKUP_LIST_COLUMNS} FROM backups WHERE rowid IN (
         SELECT (SELECT x.rowid FROM backups x WHERE x.host = h.name AND x.status = 'Completed' AND x.manifest_json != '' AND x.verify_failed = 0
                 ORDER BY x.created_at_ms DESC, x.id DESC LIMIT 1) FROM hosts h)`,
    ).all() as Row[];
    const drilled = this.stmt(
      `SELECT ${BACKUP_LIST_COLUMNS} FROM backups WHERE rowid IN (
         SELECT (SELECT x.rowid FROM backups x WHERE x.host = h.name AND x.drill_passed_at_ms > 0
                 ORDER BY x.drill_passed_at_ms DESC LIMIT 1) FROM hosts h)`,
    ).all() as Row[];
    const byHost = (rows: Row[]) => new Map(rows.map(toBackup).map((b) => [b.host, b]));
    return { lastRestorable: byHost(good), lastDrilled: byHost(drilled) };
  }

  async lastDrilled(host: string): Promise<BackupRow | undefined> {
    const row = this.stmt(
      `SELECT ${BACKUP_LIST_COLUMNS} FROM backups WHERE host = ? AND drill_passed_at_ms > 0 ORDER BY drill_passed_at_ms DESC LIMIT 1`,
    ).get(host) as Row | undefined;
    return row && toBackup(row);
  }

  async updateBackup(id: string, u: BackupUpdate): Promise<void> {
    const { sql, params } = setClause(u);
    if (sql)
      await this.write(
        () => this.stmt(`UPDATE backups SET ${sql} WHERE id = @_id`).run({ ...params, _id: id }),
        this.backupHost(id) ?? false,
      );
  }

  /** The host a backup row belongs to (a backup never moves to another host), or undefined with no such row. */
  private backupHost(id: string): string | undefined {
    const row = this.stmt('SELECT host FROM backups WHERE id = ?').get(id) as { host: string } | undefined;
    return row?.host;
  }

  async deleteBackup(id: string): Promise<boolean> {
    this.bump(this.backupHost(id) ?? false);
    return this.stmt('DELETE FROM backups WHERE id = ?').run(id).changes > 0;
  }

  // ---- jobs

  async createJob(j: JobRow, first?: JobEventRow): Promise<void> {
    const cols = Object.keys(j).filter((k) => (j as unknown as Row)[k] !== undefined);
    const key = cols.join();
    let sql = this.jobInserts.get(key);
    if (sql === undefined)
      this.jobInserts.set(
        key,
        (sql = `INSERT INTO jobs (${cols.map(camelToSnake).join(', ')}) VALUES (${cols.map((c) => `@${c}`).join(', ')})`),
      );
    const insert = this.stmt(sql);
    const row = { ...j } as unknown as Row;
    await this.write(() => {
      try {
        insert.run(row);
      } catch (err) {
        if (String((err as { code?: string }).code).startsWith('SQLITE_CONSTRAINT')) throw jobExists(j);
        throw err;
      }
      if (first) this.insertJobEvent(first);
    });
  }

  async getJob(id: string): Promise<JobRow | undefined> {
    const row = this.stmt('SELECT * FROM jobs WHERE id = ?').get(id) as Row | undefined;
    return row && toJob(row);
  }

  async updateJob(id: string, u: JobUpdate): Promise<void> {
    const { sql, params } = setClause(u);
    if (sql) await this.write(() => this.stmt(`UPDATE jobs SET ${sql} WHERE id = @_id`).run({ ...params, _id: id }));
  }

  async updateJobProgress(id: string, phase: string, progressJson: string): Promise<void> {
    await this.write(() => this.stmt('UPDATE jobs SET phase = ?, progress_json = ? WHERE id = ?').run(phase, progressJson, id), false, {
      light: true,
      key: `progress:${id}`,
    });
  }

  async listJobs(filter: JobFilter = {}): Promise<JobRow[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.states?.length) {
      where.push(`state IN (${filter.states.map(() => '?').join(', ')})`);
      params.push(...filter.states);
    }
    if (filter.kinds?.length) {
      where.push(`kind IN (${filter.kinds.map(() => '?').join(', ')})`);
      params.push(...filter.kinds);
    }
    if (filter.host) {
      where.push('host = ?');
      params.push(filter.host);
    }
    const sql = `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at_ms DESC LIMIT ?`;
    return (this.stmt(sql).all(...params, filter.limit ?? 1000) as Row[]).map(toJob);
  }

  async countJobs(): Promise<Array<{ host: string; kind: string; state: string; count: number }>> {
    return this.stmt(
      `SELECT CASE WHEN kind = 'drill' AND instr(backup_id, '@') > 0 THEN substr(backup_id, 1, instr(backup_id, '@') - 1) ELSE host END AS host,
              kind, state, COUNT(*) AS count
         FROM jobs WHERE kind != 'verify' AND NOT (kind = 'restore' AND params_json LIKE '%"dryRun":true%') GROUP BY 1, 2, 3
       UNION ALL
       SELECT host, 'verify' AS kind, CASE WHEN passed = 1 THEN 'Completed' ELSE 'Failed' END AS state, COUNT(*) AS count
         FROM evidence WHERE kind = 'verify' GROUP BY 1, 3`,
    ).all() as Array<{
      host: string;
      kind: string;
      state: string;
      count: number;
    }>;
  }

  async lastCompletedBackupJobs(): Promise<JobRow[]> {
    const rows = this.stmt(
      `SELECT j.* FROM jobs j JOIN (
           SELECT host, MAX(ended_at_ms) AS ended FROM jobs WHERE kind = 'backup' AND state = 'Completed' GROUP BY host
         ) last ON j.host = last.host AND j.ended_at_ms = last.ended WHERE j.kind = 'backup' AND j.state = 'Completed'`,
    ).all() as Row[];
    return rows.map(toJob);
  }

  // ---- tokens

  async createToken(t: Omit<TokenRow, 'id' | 'lastUsedMs' | 'revokedAtMs'>): Promise<TokenRow> {
    try {
      const r = this.stmt(
        'INSERT INTO tokens (name, role, hash, created_at_ms, expires_at_ms) VALUES (@name, @role, @hash, @createdAtMs, @expiresAtMs)',
      ).run(t as unknown as Row);
      return { ...t, id: Number(r.lastInsertRowid), lastUsedMs: 0, revokedAtMs: 0 };
    } catch (err) {
      if (String((err as { code?: string }).code).startsWith('SQLITE_CONSTRAINT')) {
        throw new BoxbackError('BOXBACK_ERR_ALREADY_EXISTS', `a token named "${t.name}" already exists; pick another name`);
      }
      throw err;
    }
  }

  async findTokenByHash(hash: string): Promise<TokenRow | undefined> {
    const row = this.stmt('SELECT * FROM tokens WHERE hash = ?').get(hash) as Row | undefined;
    return row && toToken(row);
  }

  async listTokens(): Promise<TokenRow[]> {
    return (this.stmt('SELECT * FROM tokens ORDER BY name').all() as Row[]).map(toToken);
  }

  async touchToken(id: number, atMs: number): Promise<void> {
    this.stmt('UPDATE tokens SET last_used_ms = ? WHERE id = ?').run(atMs, id);
  }

  async revokeToken(nameOrId: string, atMs: number): Promise<TokenRow | undefined> {
    const where = /^\d+$/.test(nameOrId) ? 'id = ?' : 'name = ?';
    const key = /^\d+$/.test(nameOrId) ? Number(nameOrId) : nameOrId;
    this.stmt(`UPDATE tokens SET revoked_at_ms = ? WHERE ${where} AND revoked_at_ms = 0`).run(atMs, key);
    const row = this.stmt(`SELECT * FROM tokens WHERE ${where}`).get(key) as Row | undefined;
    return row && toToken(row);
  }

  // ---- schedules

  async listScheduleSlots(): Promise<Map<string, number>> {
    const rows = this.stmt('SELECT name, last_slot_ms FROM schedule_slots').all() as Array<{ name: string; last_slot_ms: number }>;
    return new Map(rows.map((r) => [r.name, r.last_slot_ms]));
  }

  async setScheduleSlot(name: string, slotMs: number): Promise<void> {
    this.stmt(
      'INSERT INTO schedule_slots (name, last_slot_ms) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET last_slot_ms = excluded.last_slot_ms',
    ).run(name, slotMs);
  }

  async appendJobEvent(e: JobEventRow): Promise<void> {
    await this.write(() => this.insertJobEvent(e), false, { light: true });
  }

  private insertJobEvent(e: JobEventRow): void {
    this.stmt('INSERT INTO job_events (job_id, at_ms, phase, state, message) VALUES (?, ?, ?, ?, ?)').run(
      e.jobId,
      e.atMs,
      e.phase,
      e.state,
      e.message,
    );
  }

  async listJobEvents(jobId: string): Promise<JobEventRow[]> {
    const rows = this.stmt('SELECT job_id, at_ms, phase, state, message FROM job_events WHERE job_id = ? ORDER BY id').all(jobId) as Row[];
    return rows.map((r) => fromDb(r) as unknown as JobEventRow);
  }

  // ---- evidence (drills and verifies)

  async appendEvidence(e: Omit<EvidenceRow, 'id'>): Promise<void> {
    this.stmt(
      `INSERT INTO evidence (host, kind, backup_id, at_ms, passed, duration_ms, target, job_id, detail)
       VALUES (@host, @kind, @backupId, @atMs, @passed, @durationMs, @target, @jobId, @detail)`,
    ).run({ ...e, passed: Number(e.passed) });
    this.bump(e.host);
  }

  async listEvidence(f: EvidenceFilter = {}): Promise<EvidenceRow[]> {
    const rows = this.stmt(
      `SELECT ${EVIDENCE_COLUMNS} FROM evidence WHERE (@host = '' OR host = @host) AND (@kind = '' OR kind = @kind)
       ORDER BY at_ms DESC, id DESC LIMIT @limit`,
    ).all({ host: f.host ?? '', kind: f.kind ?? '', limit: f.limit || 100 }) as Row[];
    return rows.map(toEvidence);
  }

  async lastPassedEvidence(kind: EvidenceKind, host?: string): Promise<Map<string, EvidenceRow>> {
    const rows = this.stmt(
      `SELECT ${EVIDENCE_COLUMNS} FROM evidence e WHERE kind = @kind AND passed = 1 AND (@host = '' OR host = @host)
         AND id = (SELECT x.id FROM evidence x WHERE x.host = e.host AND x.kind = e.kind AND x.passed = 1 ORDER BY x.at_ms DESC, x.id DESC LIMIT 1)`,
    ).all({ kind, host: host ?? '' }) as Row[];
    return new Map(rows.map((r) => [String(r.host), toEvidence(r)]));
  }

  async listSchedulePauses(): Promise<Map<string, SchedulePause>> {
    const rows = this.stmt('SELECT name, paused_at_ms, paused_by FROM schedule_pauses').all() as Row[];
    return new Map(rows.map((r) => [String(r.name), fromDb(r) as unknown as SchedulePause]));
  }

  async setSchedulePause(name: string, pause: SchedulePause | null): Promise<void> {
    if (!pause) this.stmt('DELETE FROM schedule_pauses WHERE name = ?').run(name);
    else
      this.stmt(
        'INSERT INTO schedule_pauses (name, paused_at_ms, paused_by) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET paused_at_ms = excluded.paused_at_ms, paused_by = excluded.paused_by',
      ).run(name, pause.pausedAtMs, pause.pausedBy);
  }

  // ---- audit

  async appendAudit(e: AuditEntry): Promise<void> {
    const row = { atMs: e.atMs, who: e.who, action: e.action, target: e.target, result: e.result, detail: e.detail };
    await this.write(() =>
      this.stmt(
        'INSERT INTO audit (at_ms, who, action, target, result, detail) VALUES (@atMs, @who, @action, @target, @result, @detail)',
      ).run(row),
    );
  }

  async listAudit(limit = 100): Promise<AuditEntry[]> {
    return (this.stmt('SELECT * FROM audit ORDER BY id DESC LIMIT ?').all(limit) as Row[]).map(toAudit);
  }

  async close(): Promise<void> {
    // every queued write committed now (a large queue takes several commits)
    while (this.db.open && (this.queue.length || this.flushing)) {
      if (this.flushing) clearImmediate(this.flushing);
      this.flush();
    }
    if (this.flushing) clearImmediate(this.flushing);
    this.flushing = undefined;
    while (this.syncing.size) await Promise.all(this.syncing);
    await this.checkpointer?.close();
    if (this.walFd !== undefined) closeSync(this.walFd);
    this.walFd = undefined;
    if (this.db.open) this.db.close();
  }
}
