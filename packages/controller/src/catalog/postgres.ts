/**
 * The catalog on PostgreSQL (`catalog: postgres://user@host:port/db`): the same Catalog as
 * sqlite.ts on a `pg` Pool, for a fleet whose catalog must outlive one machine and for two
 * controllers on one catalog (see leadership.ts and docs/design/catalog-postgres.md).
 *
 * - Schema: the same migrations (migrations.ts, PostgreSQL dialect), versioned in the one-row
 *   table `schema_version`, applied in one transaction under an advisory lock so that two
 *   controllers starting together migrate once.
 * - int8 (BIGINT, COUNT) is parsed to a JavaScript number (the pool's own type parser; every
 *   value here is milliseconds, bytes or a count, far below 2^53).
 * - Transactions where SQLite has them (updateHosts, migrations).
 * - `generation` also moves every SHARED_STALE_MS: another controller may change hosts and
 *   backups, so status re-reads them at least that often.
 * - The password never appears in the URL: it comes from a password file or PGPASSWORD.
 */
import pg from 'pg';
import { BoxbackError } from '@boxback/common';
import { MIGRATIONS, migrationSql, newerSchemaError } from './migrations.js';
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

/** Advisory lock keys (two-int form): namespace "bb" (0x6262), then what the lock is for. */
export const LOCK_NS = 0x6262;
export const LOCK_MIGRATE = 1;
export const LOCK_LEADER = 2;
/** Per-controller liveness locks are (LOCK_NS_LIVE, hashtext(controller id)). */
export const LOCK_NS_LIVE = 0x6263;

const SHARED_STALE_MS = 2_000;
const UNIQUE_VIOLATION = '23505';

export interface PgConnectOptions {
  /** postgres://user@host:port/db (no password in it). */
  url: string;
  /** Password (from catalogPasswordFile); undefined: PGPASSWORD or none. */
  password?: string;
  /** What the server shows in pg_stat_activity. */
  applicationName?: string;
}

const int8AsNumber: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === pg.types.builtins.INT8
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

/**
 * Client settings for a connection to the catalog (pool or the leadership connection), from
 * postgres://user@host:port/db[?sslmode=require|verify-full][&host=/unix/socket/dir].
 * Parsed here (not passed as a connection string: pg would let the URL's missing password
 * override the one from the password file).
 */
export function pgClientConfig(o: PgConnectOptions): pg.ClientConfig {
  const u = new URL(o.url);
  const sslmode = u.searchParams.get('sslmode') ?? '';
  return {
    host: u.searchParams.get('host') ?? decodeURIComponent(u.hostname.replace(/^\[(.*)\]$/, '$1')),
    port: u.port ? Number(u.port) : 5432,
    user: u.username ? decodeURIComponent(u.username) : undefined,
    database: decodeURIComponent(u.pathname.slice(1)),
    ...(o.password !== undefined ? { password: o.password } : {}),
    ...(sslmode === 'require' ? { ssl: { rejectUnauthorized: false } } : sslmode === 'verify-full' ? { ssl: true } : {}),
    application_name: o.applicationName ?? 'boxback-controller',
    types: int8AsNumber,
    keepAlive: true,
    connectionTimeoutMillis: 10_000,
  };
}

/** The URL without any password, for messages and logs. */
export function describePgUrl(url: string): string {
  try {
    const u = new URL(url);
    u.password = '';
    return u.toString();
  } catch {
    return 'postgres://(unparsable URL)';
  }
}

const pgCode = (err: unknown) => (err as { code?: string } | undefined)?.code;

function catalogError(where: string, err: unknown): BoxbackError {
  if (err instanceof BoxbackError) return err;
  return new BoxbackError('BOXBACK_ERR_CATALOG', `catalog ${where}: ${(err as Error).message}`, {}, { cause: err });
}

/** "a = $3, b = $4" for the keys present in `u`, numbering from `first`. */
function setClause(u: Record<string, unknown>, first: number): { sql: string; values: unknown[] } {
  const parts: string[] = [];
  const values: unknown[] = [];
  for (const [k, v] of Object.entries(u)) {
    if (v === undefined) continue;
    values.push(typeof v === 'boolean' ? Number(v) : v);
    parts.push(`${camelToSnake(k)} = $${first + values.length - 1}`);
  }
  return { sql: parts.join(', '), values };
}

const BACKUP_COLUMNS = [
  'id',
  'host',
  'createdAtMs',
  'sizeBytes',
  'consistency',
  'status',
  'verifiedAtMs',
  'verifyFailed',
  'path',
  'productVersion',
  'jobId',
  'origin',
  'manifestJson',
  'quiesceWindowMs',
  'fileCount',
  'warningCount',
  'errorCount',
  'errorMessage',
  'initiatedVia',
] as const;

/** Bring the schema up to date in one transaction, under the migration lock. Returns the version. */
async function migratePg(pool: pg.Pool, where: string): Promise<number> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    await c.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_NS, LOCK_MIGRATE]);
    await c.query(
      'CREATE TABLE IF NOT EXISTS schema_version (one INTEGER PRIMARY KEY DEFAULT 1 CHECK (one = 1), version INTEGER NOT NULL)',
    );
    const r = await c.query<{ version: number }>('SELECT version FROM schema_version');
    const current = r.rows[0]?.version ?? 0;
    if (!r.rows.length) await c.query('INSERT INTO schema_version (version) VALUES (0)');
    if (current > MIGRATIONS.length) throw newerSchemaError(where, current);
    for (let v = current; v < MIGRATIONS.length; v++) {
      await c.query(migrationSql(v, 'postgres'));
      await c.query('UPDATE schema_version SET version = $1', [v + 1]);
    }
    await c.query('COMMIT');
    return MIGRATIONS.length;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    c.release();
  }
}

export class PgCatalog implements Catalog {
  readonly schemaVersion: number;
  private gen = 0;
  private tick = 0;

  private constructor(
    private readonly pool: pg.Pool,
    readonly where: string,
    version: number,
  ) {
    this.schemaVersion = version;
  }

  get generation(): number {
    const t = Math.floor(Date.now() / SHARED_STALE_MS);
    if (t !== this.tick) {
      this.tick = t;
      this.gen++;
    }
    return this.gen;
  }

  /** Connect, check the server answers, and migrate. `onError`: an idle pooled connection broke. */
  static async open(o: PgConnectOptions, onError: (err: Error) => void = () => undefined): Promise<PgCatalog> {
    const where = describePgUrl(o.url);
    const pool = new pg.Pool({ ...pgClientConfig(o), max: 10, idleTimeoutMillis: 30_000 });
    pool.on('error', onError);
    try {
      const version = await migratePg(pool, where);
      return new PgCatalog(pool, where, version);
    } catch (err) {
      await pool.end().catch(() => undefined);
      if (err instanceof BoxbackError) throw err;
      throw new BoxbackError('BOXBACK_ERR_CATALOG', `cannot open the catalog ${where}: ${(err as Error).message}`, {}, { cause: err });
    }
  }

  private async q<T extends Row = Row>(sql: string, values: unknown[] = []): Promise<pg.QueryResult<T>> {
    try {
      return await this.pool.query<T>(sql, values);
    } catch (err) {
      if (pgCode(err) === UNIQUE_VIOLATION) throw err; // the caller says what already exists
      throw catalogError(this.where, err);
    }
  }

  private async tx(fn: (c: pg.PoolClient) => Promise<void>): Promise<void> {
    let c: pg.PoolClient;
    try {
      c = await this.pool.connect();
    } catch (err) {
      throw catalogError(this.where, err);
    }
    try {
      await c.query('BEGIN');
      await fn(c);
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw catalogError(this.where, err);
    } finally {
      c.release();
    }
  }

  // ---- hosts

  async addHost(h: HostRow): Promise<void> {
    this.gen++;
    try {
      await this.q(
        `INSERT INTO hosts (name, address, grp, rpo_seconds, plan_name, product, product_version, agent_version, last_seen_ms, created_at_ms)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
        [h.name, h.address, h.group, h.rpoSeconds, h.planName, h.product, h.productVersion, h.agentVersion, h.lastSeenMs, h.createdAtMs],
      );
    } catch (err) {
      if (pgCode(err) === UNIQUE_VIOLATION) {
        throw new BoxbackError('BOXBACK_ERR_ALREADY_EXISTS', `host ${h.name} is already registered; remove it first to change its address`);
      }
      throw err;
    }
  }

  async getHost(name: string): Promise<HostRow | undefined> {
    const r = await this.q('SELECT * FROM hosts WHERE name = $1', [name]);
    return r.rows[0] && toHost(r.rows[0]);
  }

  async listHosts(group?: string): Promise<HostRow[]> {
    const r = group
      ? await this.q('SELECT * FROM hosts WHERE grp = $1 ORDER BY name', [group])
      : await this.q('SELECT * FROM hosts ORDER BY name');
    return r.rows.map(toHost);
  }

  async removeHost(name: string): Promise<boolean> {
    this.gen++;
    return ((await this.q('DELETE FROM hosts WHERE name = $1', [name])).rowCount ?? 0) > 0;
  }

  async updateHost(name: string, u: HostUpdate): Promise<void> {
    this.gen++;
    const { group, ...rest } = u;
    const { sql, values } = setClause(group === undefined ? rest : { ...rest, grp: group }, 2);
    if (sql) await this.q(`UPDATE hosts SET ${sql} WHERE name = $1`, [name, ...values]);
  }

  async updateHosts(updates: ReadonlyArray<{ name: string; update: HostUpdate }>): Promise<void> {
    this.gen++;
    if (!updates.length) return;
    // As on SQLite: what a poll learns is learnt again at the next poll; no flush wait of its own.
    await this.tx(async (c) => {
      await c.query('SET LOCAL synchronous_commit = off');
      for (const { name, update } of updates) {
        const { sql, values } = setClause(update, 2);
        if (sql) await c.query(`UPDATE hosts SET ${sql} WHERE name = $1`, [name, ...values]);
      }
    });
  }

  // ---- backups

  async putBackup(b: NewBackup): Promise<BackupRow> {
    this.gen++;
    const row = { ...b, verifyFailed: Number(b.verifyFailed), initiatedVia: b.initiatedVia ?? 'cli' } as Row;
    const cols = BACKUP_COLUMNS.map(camelToSnake);
    // Replaces the whole row as SQLite's INSERT OR REPLACE does (drill fields back to their defaults).
    await this.q(
      `INSERT INTO backups (${cols.join(', ')}) VALUES (${cols.map((_c, i) => `$${i + 1}`).join(', ')})
         ON CONFLICT (id) DO UPDATE SET ${cols
           .filter((c) => c !== 'id')
           .map((c) => `${c} = excluded.${c}`)
           .join(', ')}, drill_passed_at_ms = 0, drill_at_ms = 0, drill_duration_ms = 0, drill_result = ''`,
      BACKUP_COLUMNS.map((k) => row[k]),
    );
    return (await this.getBackup(b.id))!;
  }

  async getBackup(id: string): Promise<BackupRow | undefined> {
    const r = await this.q('SELECT * FROM backups WHERE id = $1', [id]);
    return r.rows[0] && toBackup(r.rows[0]);
  }

  async listBackups(host?: string): Promise<BackupRow[]> {
    const r = host
      ? await this.q(`SELECT ${BACKUP_LIST_COLUMNS} FROM backups WHERE host = $1 ORDER BY created_at_ms DESC, id DESC`, [host])
      : await this.q(`SELECT ${BACKUP_LIST_COLUMNS} FROM backups ORDER BY created_at_ms DESC, id DESC`);
    return r.rows.map(toBackup);
  }

  async lastRestorable(host: string): Promise<BackupRow | undefined> {
    const r = await this.q(
      `SELECT ${BACKUP_LIST_COLUMNS} FROM backups WHERE host = $1 AND status = 'Completed' AND manifest_json != '' AND verify_failed = 0
         ORDER BY created_at_ms DESC, id DESC LIMIT 1`,
      [host],
    );
    return r.rows[0] && toBackup(r.rows[0]);
  }

  async statusBackups(): Promise<{ lastRestorable: Map<string, BackupRow>; lastDrilled: Map<string, BackupRow> }> {
    const good = await this.q(
      `SELECT DISTINCT ON (host) ${BACKUP_LIST_COLUMNS} FROM backups
         WHERE host IN (SELECT name FROM hosts) AND status = 'Completed' AND manifest_json != '' AND verify_failed = 0
         ORDER BY host, created_at_ms DESC, id DESC`,
    );
    const drilled = await this.q(
      `SELECT DISTINCT ON (host) ${BACKUP_LIST_COLUMNS} FROM backups
         WHERE host IN (SELECT name FROM hosts) AND drill_passed_at_ms > 0
         ORDER BY host, drill_passed_at_ms DESC`,
    );
    const byHost = (rows: Row[]) => new Map(rows.map(toBackup).map((b) => [b.host, b]));
    return { lastRestorable: byHost(good.rows), lastDrilled: byHost(drilled.rows) };
  }

  async lastDrilled(host: string): Promise<BackupRow | undefined> {
    const r = await this.q(
      `SELECT ${BACKUP_LIST_COLUMNS} FROM backups WHERE host = $1 AND drill_passed_at_ms > 0 ORDER BY drill_passed_at_ms DESC LIMIT 1`,
      [host],
    );
    return r.rows[0] && toBackup(r.rows[0]);
  }

  async updateBackup(id: string, u: BackupUpdate): Promise<void> {
    this.gen++;
    const { sql, values } = setClause(u, 2);
    if (sql) await this.q(`UPDATE backups SET ${sql} WHERE id = $1`, [id, ...values]);
  }

  async deleteBackup(id: string): Promise<boolean> {
    this.gen++;
    return ((await this.q('DELETE FROM backups WHERE id = $1', [id])).rowCount ?? 0) > 0;
  }

  // ---- jobs

  async createJob(j: JobRow, first?: JobEventRow): Promise<void> {
    const cols = Object.keys(j).filter((k) => (j as unknown as Row)[k] !== undefined);
    try {
      await this.q(
        `INSERT INTO jobs (${cols.map(camelToSnake).join(', ')}) VALUES (${cols.map((_c, i) => `$${i + 1}`).join(', ')})`,
        cols.map((c) => (j as unknown as Row)[c]),
      );
    } catch (err) {
      if (pgCode(err) === UNIQUE_VIOLATION) throw jobExists(j);
      throw err;
    }
    if (first) await this.appendJobEvent(first);
  }

  async getJob(id: string): Promise<JobRow | undefined> {
    const r = await this.q('SELECT * FROM jobs WHERE id = $1', [id]);
    return r.rows[0] && toJob(r.rows[0]);
  }

  async updateJob(id: string, u: JobUpdate): Promise<void> {
    const { sql, values } = setClause(u, 2);
    if (sql) await this.q(`UPDATE jobs SET ${sql} WHERE id = $1`, [id, ...values]);
  }

  async updateJobProgress(id: string, phase: string, progressJson: string): Promise<void> {
    await this.q('UPDATE jobs SET phase = $2, progress_json = $3 WHERE id = $1', [id, phase, progressJson]);
  }

  async listJobs(filter: JobFilter = {}): Promise<JobRow[]> {
    const where: string[] = [];
    const values: unknown[] = [];
    if (filter.states?.length) {
      values.push([...filter.states]);
      where.push(`state = ANY($${values.length})`);
    }
    if (filter.kinds?.length) {
      values.push([...filter.kinds]);
      where.push(`kind = ANY($${values.length})`);
    }
    if (filter.host) {
      values.push(filter.host);
      where.push(`host = $${values.length}`);
    }
    values.push(filter.limit ?? 1000);
    const sql = `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at_ms DESC LIMIT $${values.length}`;
    return (await this.q(sql, values)).rows.map(toJob);
  }

  async countJobs(): Promise<Array<{ host: string; kind: string; state: string; count: number }>> {
    const r = await this.q<{ host: string; kind: string; state: string; count: number }>(
      `SELECT CASE WHEN kind = 'drill' AND strpos(backup_id, '@') > 0 THEN split_part(backup_id, '@', 1) ELSE host END AS host,
              kind, state, COUNT(*) AS count
         FROM jobs WHERE kind != 'verify' AND NOT (kind = 'restore' AND params_json LIKE '%"dryRun":true%') GROUP BY 1, 2, 3
       UNION ALL
       SELECT host, 'verify' AS kind, CASE WHEN passed = 1 THEN 'Completed' ELSE 'Failed' END AS state, COUNT(*) AS count
         FROM evidence WHERE kind = 'verify' GROUP BY 1, 3`,
    );
    return r.rows;
  }

  async lastCompletedBackupJobs(): Promise<JobRow[]> {
    const r = await this.q(
      `SELECT j.* FROM jobs j JOIN (
           SELECT host, MAX(ended_at_ms) AS ended FROM jobs WHERE kind = 'backup' AND state = 'Completed' GROUP BY host
         ) last ON j.host = last.host AND j.ended_at_ms = last.ended WHERE j.kind = 'backup' AND j.state = 'Completed'`,
    );
    return r.rows.map(toJob);
  }

  // ---- tokens

  async createToken(t: Omit<TokenRow, 'id' | 'lastUsedMs' | 'revokedAtMs'>): Promise<TokenRow> {
    try {
      const r = await this.q<{ id: number }>(
        'INSERT INTO tokens (name, role, hash, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5) RETURNING id',
        [t.name, t.role, t.hash, t.createdAtMs, t.expiresAtMs],
      );
      return { ...t, id: Number(r.rows[0].id), lastUsedMs: 0, revokedAtMs: 0 };
    } catch (err) {
      if (pgCode(err) === UNIQUE_VIOLATION) {
        throw new BoxbackError('BOXBACK_ERR_ALREADY_EXISTS', `a token named "${t.name}" already exists; pick another name`);
      }
      throw err;
    }
  }

  async findTokenByHash(hash: string): Promise<TokenRow | undefined> {
    const r = await this.q('SELECT * FROM tokens WHERE hash = $1', [hash]);
    return r.rows[0] && toToken(r.rows[0]);
  }

  async listTokens(): Promise<TokenRow[]> {
    return (await this.q('SELECT * FROM tokens ORDER BY name')).rows.map(toToken);
  }

  async touchToken(id: number, atMs: number): Promise<void> {
    await this.q('UPDATE tokens SET last_used_ms = $2 WHERE id = $1', [id, atMs]);
  }

  async revokeToken(nameOrId: string, atMs: number): Promise<TokenRow | undefined> {
    const where = /^\d+$/.test(nameOrId) ? 'id = $1::bigint' : 'name = $1';
    await this.q(`UPDATE tokens SET revoked_at_ms = $2 WHERE ${where} AND revoked_at_ms = 0`, [nameOrId, atMs]);
    const r = await this.q(`SELECT * FROM tokens WHERE ${where}`, [nameOrId]);
    return r.rows[0] && toToken(r.rows[0]);
  }

  // ---- schedules

  async listScheduleSlots(): Promise<Map<string, number>> {
    const r = await this.q<{ name: string; last_slot_ms: number }>('SELECT name, last_slot_ms FROM schedule_slots');
    return new Map(r.rows.map((x) => [x.name, x.last_slot_ms]));
  }

  async setScheduleSlot(name: string, slotMs: number): Promise<void> {
    await this.q(
      'INSERT INTO schedule_slots (name, last_slot_ms) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET last_slot_ms = excluded.last_slot_ms',
      [name, slotMs],
    );
  }

  async appendJobEvent(e: JobEventRow): Promise<void> {
    await this.q('INSERT INTO job_events (job_id, at_ms, phase, state, message) VALUES ($1, $2, $3, $4, $5)', [
      e.jobId,
      e.atMs,
      e.phase,
      e.state,
      e.message,
    ]);
  }

  async listJobEvents(jobId: string): Promise<JobEventRow[]> {
    const r = await this.q('SELECT job_id, at_ms, phase, state, message FROM job_events WHERE job_id = $1 ORDER BY id', [jobId]);
    return r.rows.map((row) => fromDb(row) as unknown as JobEventRow);
  }

  // ---- evidence (drills and verifies)

  async appendEvidence(e: Omit<EvidenceRow, 'id'>): Promise<void> {
    await this.q(
      `INSERT INTO evidence (host, kind, backup_id, at_ms, passed, duration_ms, target, job_id, detail)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
      [e.host, e.kind, e.backupId, e.atMs, Number(e.passed), e.durationMs, e.target, e.jobId, e.detail],
    );
    this.gen++;
  }

  async listEvidence(f: EvidenceFilter = {}): Promise<EvidenceRow[]> {
    const r = await this.q(
      `SELECT ${EVIDENCE_COLUMNS} FROM evidence WHERE ($1 = '' OR host = $1) AND ($2 = '' OR kind = $2)
       ORDER BY at_ms DESC, id DESC LIMIT $3`,
      [f.host ?? '', f.kind ?? '', f.limit || 100],
    );
    return r.rows.map(toEvidence);
  }

  async lastPassedEvidence(kind: EvidenceKind, host?: string): Promise<Map<string, EvidenceRow>> {
    const r = await this.q(
      `SELECT DISTINCT ON (host) ${EVIDENCE_COLUMNS} FROM evidence WHERE kind = $1 AND passed = 1 AND ($2 = '' OR host = $2)
         ORDER BY host, at_ms DESC, id DESC`,
      [kind, host ?? ''],
    );
    return new Map(r.rows.map((row) => [String(row.host), toEvidence(row)]));
  }

  async listSchedulePauses(): Promise<Map<string, SchedulePause>> {
    const r = await this.q('SELECT name, paused_at_ms, paused_by FROM schedule_pauses');
    return new Map(r.rows.map((row) => [String(row.name), fromDb(row) as unknown as SchedulePause]));
  }

  async setSchedulePause(name: string, pause: SchedulePause | null): Promise<void> {
    if (!pause) await this.q('DELETE FROM schedule_pauses WHERE name = $1', [name]);
    else
      await this.q(
        'INSERT INTO schedule_pauses (name, paused_at_ms, paused_by) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET paused_at_ms = excluded.paused_at_ms, paused_by = excluded.paused_by',
        [name, pause.pausedAtMs, pause.pausedBy],
      );
  }

  // ---- audit

  async appendAudit(e: AuditEntry): Promise<void> {
    await this.q('INSERT INTO audit (at_ms, who, action, target, result, detail) VALUES ($1, $2, $3, $4, $5, $6)', [
      e.atMs,
      e.who,
      e.action,
      e.target,
      e.result,
      e.detail,
    ]);
  }

  async listAudit(limit = 100): Promise<AuditEntry[]> {
    return (await this.q('SELECT * FROM audit ORDER BY id DESC LIMIT $1', [limit])).rows.map(toAudit);
  }

  private closed = false;
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}
