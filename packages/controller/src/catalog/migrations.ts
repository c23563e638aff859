/**
 * Schema migrations of the SQLite catalog. Migration i (0-based) takes the schema from
 * `PRAGMA user_version` i to i+1. Append only: never edit or reorder a shipped migration.
 */
import type Database from 'better-sqlite3';
import { BoxbackError } from '@boxback/common';

export const MIGRATIONS: readonly string[] = [
  // 1: hosts, backups, jobs, tokens and the append-only audit log.
  `
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
  // 2: manual vs scheduled backups (retention), restore drill results, the scheduler's last fired slots.
  `
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
];

/** Bring the schema up to date, one transaction per migration. Returns the new version. */
export function migrate(db: Database.Database, file: string): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new BoxbackError(
      'BOXBACK_ERR_CATALOG',
      `catalog ${file} has schema version ${current}, newer than this controller knows (${MIGRATIONS.length}); run a newer boxback-controller`,
    );
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return MIGRATIONS.length;
}
