/**
 * Row mapping shared by the SQLite and PostgreSQL catalogs: snake_case columns to the
 * camelCase rows of types.ts, and the derived fields (Restorable, a host's group).
 */
import { BoxbackError } from '@boxback/common';
import type { AuditEntry, BackupRow, EvidenceRow, HostRow, JobRow, TokenRow } from './types.js';

export type Row = Record<string, unknown>;

const snakeNames = new Map<string, string>();
/** A camelCase key's snake_case column, made once per key (a fleet backup inserts 1000 job rows of 21 columns). */
export const camelToSnake = (k: string): string => {
  let s = snakeNames.get(k);
  if (s === undefined) snakeNames.set(k, (s = k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)));
  return s;
};
const camelNames = new Map<string, string>();
export const snakeToCamel = (k: string): string => {
  let c = camelNames.get(k);
  if (c === undefined) camelNames.set(k, (c = k.replace(/_([a-z])/g, (_m, ch: string) => ch.toUpperCase())));
  return c;
};

export function fromDb(row: Row): Row {
  // for-in, not Object.entries: no [key, value] array per column (status reads 2000 rows a second during a fleet backup)
  const out: Row = {};
  for (const k in row) out[snakeToCamel(k)] = row[k];
  return out;
}

export function toHost(row: Row): HostRow {
  const r = fromDb(row);
  r.group = r.grp;
  delete r.grp;
  return r as unknown as HostRow;
}

/** Listing columns: everything but the (large) manifest, and whether there is one. */
export const BACKUP_LIST_COLUMNS = `id, host, created_at_ms, size_bytes, consistency, status, verified_at_ms, verify_failed, path, product_version,
  job_id, origin, quiesce_window_ms, file_count, warning_count, error_count, error_message, initiated_via, drill_passed_at_ms,
  drill_at_ms, drill_duration_ms, drill_result, label, pinned, (manifest_json != '') AS has_manifest`;

export function toBackup(row: Row): BackupRow {
  const r = fromDb(row) as unknown as BackupRow & { verifyFailed: number | boolean; hasManifest?: number | boolean };
  const hasManifest = r.hasManifest === undefined ? r.manifestJson !== '' : Boolean(r.hasManifest);
  delete r.hasManifest;
  r.manifestJson ??= '';
  r.verifyFailed = Boolean(r.verifyFailed);
  r.pinned = Boolean(r.pinned);
  r.label ??= '';
  r.restorable = r.status === 'Completed' && hasManifest && !r.verifyFailed;
  return r;
}

export const toJob = (row: Row) => fromDb(row) as unknown as JobRow;
export const toToken = (row: Row) => fromDb(row) as unknown as TokenRow;
export const toAudit = (row: Row) => fromDb(row) as unknown as AuditEntry;

/** A second job for the same schedule slot and host: refused by the jobs_one_per_slot index. */
export function jobExists(j: JobRow): BoxbackError {
  return j.schedule
    ? new BoxbackError(
        'BOXBACK_ERR_ALREADY_EXISTS',
        `schedule ${j.schedule} already fired slot ${new Date(j.slotMs ?? 0).toISOString()} (attempt ${j.attempt ?? 1}) for ${j.host}`,
      )
    : new BoxbackError('BOXBACK_ERR_ALREADY_EXISTS', `job ${j.id} already exists`);
}

export const EVIDENCE_COLUMNS = 'id, host, kind, backup_id, at_ms, passed, duration_ms, target, job_id, detail';

export function toEvidence(row: Row): EvidenceRow {
  const r = fromDb(row) as unknown as EvidenceRow & { passed: number | boolean };
  r.passed = Boolean(Number(r.passed));
  return r;
}
