/**
 * The embedded catalog: one SQLite file (better-sqlite3, WAL, synchronous=FULL so a
 * recorded backup survives a power cut), schema versioned with `PRAGMA user_version`.
 * better-sqlite3 is synchronous; the methods return promises to keep the Catalog
 * interface the same for PostgreSQL.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { BoxbackError } from '@boxback/common';
import { migrate } from './migrations.js';
import type { AuditEntry, BackupRow, BackupUpdate, Catalog, HostRow, HostUpdate, JobRow, JobState, JobUpdate, TokenRow } from './types.js';

type Row = Record<string, unknown>;

const camelToSnake = (k: string) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const snakeToCamel = (k: string) => k.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());

function fromDb(row: Row): Row {
  const out: Row = {};
  for (const [k, v] of Object.entries(row)) out[snakeToCamel(k)] = v;
  return out;
}

function toHost(row: Row): HostRow {
  const r = fromDb(row);
  r.group = r.grp;
  delete r.grp;
  return r as unknown as HostRow;
}

/** Listing columns: everything but the (large) manifest, and whether there is one. */
const BACKUP_LIST_COLUMNS = `id, host, created_at_ms, size_bytes, consistency, status, verified_at_ms, verify_failed, path, product_version,
  job_id, origin, quiesce_window_ms, file_count, warning_count, error_count, error_message, (manifest_json != '') AS has_manifest`;

function toBackup(row: Row): BackupRow {
  const r = fromDb(row) as unknown as BackupRow & { verifyFailed: number | boolean; hasManifest?: number };
  const hasManifest = r.hasManifest === undefined ? r.manifestJson !== '' : Boolean(r.hasManifest);
  delete r.hasManifest;
  r.manifestJson ??= '';
  r.verifyFailed = Boolean(r.verifyFailed);
  r.restorable = r.status === 'Completed' && hasManifest && !r.verifyFailed;
  return r;
}

const toJob = (row: Row) => fromDb(row) as unknown as JobRow;
const toToken = (row: Row) => fromDb(row) as unknown as TokenRow;
const toAudit = (row: Row) => fromDb(row) as unknown as AuditEntry;

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

export class SqliteCatalog implements Catalog {
  readonly schemaVersion: number;
  private readonly db: Database.Database;

  private constructor(db: Database.Database, version: number) {
    this.db = db;
    this.schemaVersion = version;
  }

  /** Open (creating if needed) and migrate the catalog file. */
  static open(file: string): SqliteCatalog {
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
      return new SqliteCatalog(db, migrate(db, file));
    } catch (err) {
      db.close();
      if (err instanceof BoxbackError) throw err;
      throw new BoxbackError('BOXBACK_ERR_CATALOG', `cannot migrate the catalog ${file}: ${(err as Error).message}`, {}, { cause: err });
    }
  }

  // ---- hosts

  async addHost(h: HostRow): Promise<void> {
    try {
      this.db
        .prepare(
          `INSERT INTO hosts (name, address, grp, rpo_seconds, plan_name, product, product_version, agent_version, last_seen_ms, created_at_ms)
           VALUES (@name, @address, @group, @rpoSeconds, @planName, @product, @productVersion, @agentVersion, @lastSeenMs, @createdAtMs)`,
        )
        .run(h);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
        throw new BoxbackError('BOXBACK_ERR_ALREADY_EXISTS', `host ${h.name} is already registered; remove it first to change its address`);
      }
      throw err;
    }
  }

  async getHost(name: string): Promise<HostRow | undefined> {
    const row = this.db.prepare('SELECT * FROM hosts WHERE name = ?').get(name) as Row | undefined;
    return row && toHost(row);
  }

  async listHosts(group?: string): Promise<HostRow[]> {
    const rows = group
      ? this.db.prepare('SELECT * FROM hosts WHERE grp = ? ORDER BY name').all(group)
      : this.db.prepare('SELECT * FROM hosts ORDER BY name').all();
    return (rows as Row[]).map(toHost);
  }

  async removeHost(name: string): Promise<boolean> {
    return this.db.prepare('DELETE FROM hosts WHERE name = ?').run(name).changes > 0;
  }

  async updateHost(name: string, u: HostUpdate): Promise<void> {
    const { sql, params } = setClause(u);
    if (sql) this.db.prepare(`UPDATE hosts SET ${sql} WHERE name = @_name`).run({ ...params, _name: name });
  }

  // ---- backups

  async putBackup(b: Omit<BackupRow, 'restorable'>): Promise<BackupRow> {
    const row = { ...b, verifyFailed: Number(b.verifyFailed) } as Row;
    this.db
      .prepare(
        `INSERT OR REPLACE INTO backups (id, host, created_at_ms, size_bytes, consistency, status, verified_at_ms, verify_failed, path,
           product_version, job_id, origin, manifest_json, quiesce_window_ms, file_count, warning_count, error_count, error_message)
         VALUES (@id, @host, @createdAtMs, @sizeBytes, @consistency, @status, @verifiedAtMs, @verifyFailed, @path,
           @productVersion, @jobId, @origin, @manifestJson, @quiesceWindowMs, @fileCount, @warningCount, @errorCount, @errorMessage)`,
      )
      .run(row);
    return (await this.getBackup(b.id))!;
  }

  async getBackup(id: string): Promise<BackupRow | undefined> {
    const row = this.db.prepare('SELECT * FROM backups WHERE id = ?').get(id) as Row | undefined;
    return row && toBackup(row);
  }

  async listBackups(host?: string): Promise<BackupRow[]> {
    const rows = host
      ? this.db.prepare(`SELECT ${BACKUP_LIST_COLUMNS} FROM backups WHERE host = ? ORDER BY created_at_ms DESC, id DESC`).all(host)
      : this.db.prepare(`SELECT ${BACKUP_LIST_COLUMNS} FROM backups ORDER BY created_at_ms DESC, id DESC`).all();
    return (rows as Row[]).map(toBackup);
  }

  async lastRestorable(host: string): Promise<BackupRow | undefined> {
    const row = this.db
      .prepare(
        `SELECT ${BACKUP_LIST_COLUMNS} FROM backups WHERE host = ? AND status = 'Completed' AND manifest_json != '' AND verify_failed = 0
         ORDER BY created_at_ms DESC, id DESC LIMIT 1`,
      )
      .get(host) as Row | undefined;
    return row && toBackup(row);
  }

  async updateBackup(id: string, u: BackupUpdate): Promise<void> {
    const { sql, params } = setClause(u);
    if (sql) this.db.prepare(`UPDATE backups SET ${sql} WHERE id = @_id`).run({ ...params, _id: id });
  }

  async deleteBackup(id: string): Promise<boolean> {
    return this.db.prepare('DELETE FROM backups WHERE id = ?').run(id).changes > 0;
  }

  // ---- jobs

  async createJob(j: JobRow): Promise<void> {
    const cols = Object.keys(j);
    this.db
      .prepare(`INSERT INTO jobs (${cols.map(camelToSnake).join(', ')}) VALUES (${cols.map((c) => `@${c}`).join(', ')})`)
      .run(j as unknown as Row);
  }

  async getJob(id: string): Promise<JobRow | undefined> {
    const row = this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as Row | undefined;
    return row && toJob(row);
  }

  async updateJob(id: string, u: JobUpdate): Promise<void> {
    const { sql, params } = setClause(u);
    if (sql) this.db.prepare(`UPDATE jobs SET ${sql} WHERE id = @_id`).run({ ...params, _id: id });
  }

  async listJobs(filter: { states?: readonly JobState[]; host?: string; limit?: number } = {}): Promise<JobRow[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (filter.states?.length) {
      where.push(`state IN (${filter.states.map(() => '?').join(', ')})`);
      params.push(...filter.states);
    }
    if (filter.host) {
      where.push('host = ?');
      params.push(filter.host);
    }
    const sql = `SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at_ms DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...params, filter.limit ?? 1000) as Row[]).map(toJob);
  }

  async countJobs(): Promise<Array<{ host: string; kind: string; state: string; count: number }>> {
    return this.db.prepare('SELECT host, kind, state, COUNT(*) AS count FROM jobs GROUP BY host, kind, state').all() as Array<{
      host: string;
      kind: string;
      state: string;
      count: number;
    }>;
  }

  async lastCompletedBackupJobs(): Promise<JobRow[]> {
    const rows = this.db
      .prepare(
        `SELECT j.* FROM jobs j JOIN (
           SELECT host, MAX(ended_at_ms) AS ended FROM jobs WHERE kind = 'backup' AND state = 'Completed' GROUP BY host
         ) last ON j.host = last.host AND j.ended_at_ms = last.ended WHERE j.kind = 'backup' AND j.state = 'Completed'`,
      )
      .all() as Row[];
    return rows.map(toJob);
  }

  // ---- tokens

  async createToken(t: Omit<TokenRow, 'id' | 'lastUsedMs'>): Promise<TokenRow> {
    try {
      const r = this.db
        .prepare('INSERT INTO tokens (name, role, hash, created_at_ms) VALUES (@name, @role, @hash, @createdAtMs)')
        .run(t as unknown as Row);
      return { ...t, id: Number(r.lastInsertRowid), lastUsedMs: 0 };
    } catch (err) {
      if (String((err as { code?: string }).code).startsWith('SQLITE_CONSTRAINT')) {
        throw new BoxbackError('BOXBACK_ERR_ALREADY_EXISTS', `a token named "${t.name}" already exists; pick another name`);
      }
      throw err;
    }
  }

  async findTokenByHash(hash: string): Promise<TokenRow | undefined> {
    const row = this.db.prepare('SELECT * FROM tokens WHERE hash = ?').get(hash) as Row | undefined;
    return row && toToken(row);
  }

  async listTokens(): Promise<TokenRow[]> {
    return (this.db.prepare('SELECT * FROM tokens ORDER BY name').all() as Row[]).map(toToken);
  }

  async touchToken(id: number, atMs: number): Promise<void> {
    this.db.prepare('UPDATE tokens SET last_used_ms = ? WHERE id = ?').run(atMs, id);
  }

  // ---- audit

  async appendAudit(e: AuditEntry): Promise<void> {
    this.db
      .prepare('INSERT INTO audit (at_ms, who, action, target, result, detail) VALUES (@atMs, @who, @action, @target, @result, @detail)')
      .run({ atMs: e.atMs, who: e.who, action: e.action, target: e.target, result: e.result, detail: e.detail });
  }

  async listAudit(limit = 100): Promise<AuditEntry[]> {
    return (this.db.prepare('SELECT * FROM audit ORDER BY id DESC LIMIT ?').all(limit) as Row[]).map(toAudit);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
