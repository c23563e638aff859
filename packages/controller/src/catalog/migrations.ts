/**
 * Schema migrations of the catalog, one list for both dialects. Migration i (0-based) takes
 * the schema from version i to i+1: SQLite keeps the version in `PRAGMA user_version`,
 * PostgreSQL in the one-row table `schema_version`. A migration is one SQL text for both, or
 * `{ sqlite, postgres }` where the dialects differ (PostgreSQL: BIGINT for every integer that
 * holds milliseconds or bytes, BIGSERIAL for ids, a plpgsql trigger function).
 * Append only: never edit or reorder a shipped migration.
 */
import type Database from 'better-sqlite3';
import { BoxbackError } from '@boxback/common';

export type Dialect = 'sqlite' | 'postgres';
export type Migration = string | { readonly sqlite: string; readonly postgres: string };

export const MIGRATIONS: readonly Migration[] = [
  // 1: hosts, backups, jobs, tokens and the append-only audit log.
  {
    sqlite: `
  CREATE TABLE hosts (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    grp TEXT NOT NULL DEFAULT '',
    rpo_seconds INTEGER NOT NULL DEFAULT 0,
    plan_name TEXT NOT NULL DEFAULT '',
    product TEXT NOT NULL DEFAULT '',
    product_version TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    last_seen_ms INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL
  );
  CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    consistency TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('Queued','Running','Completed','PartiallyFailed','Failed')),
    verified_at_ms INTEGER NOT NULL DEFAULT 0,
    verify_failed INTEGER NOT NULL DEFAULT 0,
    path TEXT NOT NULL,
    product_version TEXT NOT NULL DEFAULT '',
    job_id TEXT NOT NULL DEFAULT '',
    origin TEXT NOT NULL DEFAULT 'boxback',
    manifest_json TEXT NOT NULL DEFAULT '',
    quiesce_window_ms INTEGER NOT NULL DEFAULT 0,
    file_count INTEGER NOT NULL DEFAULT 0,
    warning_count INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    error_message TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX backups_by_host ON backups (host, created_at_ms DESC);
  CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    host TEXT NOT NULL,
    state TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT '',
    progress_json TEXT NOT NULL DEFAULT '',
    requested_by TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    started_at_ms INTEGER NOT NULL DEFAULT 0,
    ended_at_ms INTEGER NOT NULL DEFAULT 0,
    error_code TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    backup_id TEXT NOT NULL DEFAULT '',
    warning_count INTEGER NOT NULL DEFAULT 0,
    dry_run_report TEXT NOT NULL DEFAULT '',
    params_json TEXT NOT NULL DEFAULT '{}',
    result_json TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX jobs_by_state ON jobs (state);
  CREATE INDEX jobs_by_host ON jobs (host, created_at_ms DESC);
  CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin','viewer')),
    hash TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL DEFAULT 0
  );
  CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
  );
  CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
  CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
  `,
    postgres: `
  CREATE TABLE hosts (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    grp TEXT NOT NULL DEFAULT '',
    rpo_seconds BIGINT NOT NULL DEFAULT 0,
    plan_name TEXT NOT NULL DEFAULT '',
    product TEXT NOT NULL DEFAULT '',
    product_version TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    last_seen_ms BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
  );
  CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    size_bytes BIGINT NOT NULL DEFAULT 0,
    consistency TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('Queued','Running','Completed','PartiallyFailed','Failed')),
    verified_at_ms BIGINT NOT NULL DEFAULT 0,
    verify_failed BIGINT NOT NULL DEFAULT 0,
    path TEXT NOT NULL,
    product_version TEXT NOT NULL DEFAULT '',
    job_id TEXT NOT NULL DEFAULT '',
    origin TEXT NOT NULL DEFAULT 'boxback',
    manifest_json TEXT NOT NULL DEFAULT '',
    quiesce_window_ms BIGINT NOT NULL DEFAULT 0,
    file_count BIGINT NOT NULL DEFAULT 0,
    warning_count BIGINT NOT NULL DEFAULT 0,
    error_count BIGINT NOT NULL DEFAULT 0,
    error_message TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX backups_by_host ON backups (host, created_at_ms DESC);
  CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    host TEXT NOT NULL,
    state TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT '',
    progress_json TEXT NOT NULL DEFAULT '',
    requested_by TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL DEFAULT 0,
    ended_at_ms BIGINT NOT NULL DEFAULT 0,
    error_code TEXT NOT NULL DEFAULT '',
    error_message TEXT NOT NULL DEFAULT '',
    backup_id TEXT NOT NULL DEFAULT '',
    warning_count BIGINT NOT NULL DEFAULT 0,
    dry_run_report TEXT NOT NULL DEFAULT '',
    params_json TEXT NOT NULL DEFAULT '{}',
    result_json TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX jobs_by_state ON jobs (state);
  CREATE INDEX jobs_by_host ON jobs (host, created_at_ms DESC);
  CREATE TABLE tokens (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin','viewer')),
    hash TEXT NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    last_used_ms BIGINT NOT NULL DEFAULT 0
  );
  CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
  );
  CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
  CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
  CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
  CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
`,
  },
  // 2: manual vs scheduled backups (retention), restore drill results, the scheduler's last fired slots.
  {
    sqlite: `
  ALTER TABLE backups ADD COLUMN initiated_via TEXT NOT NULL DEFAULT 'cli';
  ALTER TABLE backups ADD COLUMN drill_passed_at_ms INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE backups ADD COLUMN drill_duration_ms INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE backups ADD COLUMN drill_result TEXT NOT NULL DEFAULT '';
  ALTER TABLE backups ADD COLUMN drill_at_ms INTEGER NOT NULL DEFAULT 0;
  CREATE TABLE schedule_slots (
    name TEXT PRIMARY KEY,
    last_slot_ms INTEGER NOT NULL
  );
  `,
    postgres: `
  ALTER TABLE backups ADD COLUMN initiated_via TEXT NOT NULL DEFAULT 'cli';
  ALTER TABLE backups ADD COLUMN drill_passed_at_ms BIGINT NOT NULL DEFAULT 0;
  ALTER TABLE backups ADD COLUMN drill_duration_ms BIGINT NOT NULL DEFAULT 0;
  ALTER TABLE backups ADD COLUMN drill_result TEXT NOT NULL DEFAULT '';
  ALTER TABLE backups ADD COLUMN drill_at_ms BIGINT NOT NULL DEFAULT 0;
  CREATE TABLE schedule_slots (
    name TEXT PRIMARY KEY,
    last_slot_ms BIGINT NOT NULL
  );
  `,
  },
  // 3: the schedule, slot and attempt a job was fired for, with one job per (schedule, slot, host,
  //    attempt) at most: the database's own guarantee that two controllers never fire a slot twice
  //    (a retry of a failed run is the next attempt). And the controller that runs a job
  //    (reconciliation only takes over the jobs of one that is gone).
  {
    sqlite: `
  ALTER TABLE jobs ADD COLUMN schedule TEXT NOT NULL DEFAULT '';
  ALTER TABLE jobs ADD COLUMN slot_ms INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
  CREATE UNIQUE INDEX jobs_one_per_slot ON jobs (schedule, slot_ms, host, attempt) WHERE schedule != '';
  `,
    postgres: `
  ALTER TABLE jobs ADD COLUMN schedule TEXT NOT NULL DEFAULT '';
  ALTER TABLE jobs ADD COLUMN slot_ms BIGINT NOT NULL DEFAULT 0;
  ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
  CREATE UNIQUE INDEX jobs_one_per_slot ON jobs (schedule, slot_ms, host, attempt) WHERE schedule != '';
  `,
  },
  // 4: each job's log (`boxback job logs`): its phases' starts and ends, cancel requests, its end.
  {
    sqlite: `
  CREATE TABLE job_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    phase TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX job_events_by_job ON job_events (job_id, id);
  `,
    postgres: `
  CREATE TABLE job_events (
    id BIGSERIAL PRIMARY KEY,
    job_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    phase TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX job_events_by_job ON job_events (job_id, id);
  `,
  },
  // 5: the operator role (backs up and verifies; api/routes.ts orders viewer < operator < admin).
  //    SQLite cannot alter a CHECK: the tokens table is rebuilt with its rows and ids.
  {
    sqlite: `
  CREATE TABLE tokens_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('admin','operator','viewer')),
    hash TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL DEFAULT 0
  );
  INSERT INTO tokens_new (id, name, role, hash, created_at_ms, last_used_ms)
    SELECT id, name, role, hash, created_at_ms, last_used_ms FROM tokens;
  DROP TABLE tokens;
  ALTER TABLE tokens_new RENAME TO tokens;
  `,
    postgres: `
  ALTER TABLE tokens DROP CONSTRAINT tokens_role_check;
  ALTER TABLE tokens ADD CONSTRAINT tokens_role_check CHECK (role IN ('admin','operator','viewer'));
  `,
  },
  // 6: evidence: every drill and verify of a host's backups (when, which backup, passed or not,
  //    how long), kept after the backup is deleted: no foreign key to backups. Seeded from the
  //    drill and verify columns of the backups still listed.
  {
    sqlite: `
  CREATE TABLE evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('drill','verify')),
    backup_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    target TEXT NOT NULL DEFAULT '',
    job_id TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX evidence_by_host ON evidence (host, kind, at_ms);
  INSERT INTO evidence (host, kind, backup_id, at_ms, passed, duration_ms, detail)
    SELECT host, 'drill', id, drill_at_ms, CASE WHEN drill_result LIKE 'passed%' THEN 1 ELSE 0 END, drill_duration_ms, drill_result
    FROM backups WHERE drill_at_ms > 0;
  INSERT INTO evidence (host, kind, backup_id, at_ms, passed, detail)
    SELECT host, 'verify', id, verified_at_ms, CASE WHEN verify_failed = 0 THEN 1 ELSE 0 END, error_message
    FROM backups WHERE verified_at_ms > 0;
  `,
    postgres: `
  CREATE TABLE evidence (
    id BIGSERIAL PRIMARY KEY,
    host TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('drill','verify')),
    backup_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    passed BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL DEFAULT 0,
    target TEXT NOT NULL DEFAULT '',
    job_id TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX evidence_by_host ON evidence (host, kind, at_ms);
  INSERT INTO evidence (host, kind, backup_id, at_ms, passed, duration_ms, detail)
    SELECT host, 'drill', id, drill_at_ms, CASE WHEN drill_result LIKE 'passed%' THEN 1 ELSE 0 END, drill_duration_ms, drill_result
    FROM backups WHERE drill_at_ms > 0;
  INSERT INTO evidence (host, kind, backup_id, at_ms, passed, detail)
    SELECT host, 'verify', id, verified_at_ms, CASE WHEN verify_failed = 0 THEN 1 ELSE 0 END, error_message
    FROM backups WHERE verified_at_ms > 0;
  `,
  },
  // 7: schedules paused by an operator (`boxback schedules pause`; the config still lists them),
  //    and a backup's label (`backup create --label`) and pin (retention never deletes a pinned one).
  {
    sqlite: `
  CREATE TABLE schedule_pauses (
    name TEXT PRIMARY KEY,
    paused_at_ms INTEGER NOT NULL,
    paused_by TEXT NOT NULL DEFAULT ''
  );
  ALTER TABLE backups ADD COLUMN label TEXT NOT NULL DEFAULT '';
  ALTER TABLE backups ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
  `,
    postgres: `
  CREATE TABLE schedule_pauses (
    name TEXT PRIMARY KEY,
    paused_at_ms BIGINT NOT NULL,
    paused_by TEXT NOT NULL DEFAULT ''
  );
  ALTER TABLE backups ADD COLUMN label TEXT NOT NULL DEFAULT '';
  ALTER TABLE backups ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
  `,
  },
  // 8: token expiry and revocation (a revoked token's row stays, so that a call with it is told so).
  {
    sqlite: `
  ALTER TABLE tokens ADD COLUMN expires_at_ms INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE tokens ADD COLUMN revoked_at_ms INTEGER NOT NULL DEFAULT 0;
  `,
    postgres: `
  ALTER TABLE tokens ADD COLUMN expires_at_ms BIGINT NOT NULL DEFAULT 0;
  ALTER TABLE tokens ADD COLUMN revoked_at_ms BIGINT NOT NULL DEFAULT 0;
  `,
  },
];

/** The SQL of migration `i` in a dialect. */
export function migrationSql(i: number, dialect: Dialect): string {
  const m = MIGRATIONS[i];
  return typeof m === 'string' ? m : m[dialect];
}

/** The error for a catalog whose schema is newer than this controller knows. */
export function newerSchemaError(where: string, version: number): BoxbackError {
  return new BoxbackError(
    'BOXBACK_ERR_CATALOG',
    `catalog ${where} has schema version ${version}, newer than this controller knows (${MIGRATIONS.length}); run a newer boxback-controller`,
  );
}

/** Bring a SQLite schema up to date, one transaction per migration. Returns the new version. */
export function migrateSqlite(db: Database.Database, file: string): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) throw newerSchemaError(file, current);
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(migrationSql(v, 'sqlite'));
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return MIGRATIONS.length;
}
