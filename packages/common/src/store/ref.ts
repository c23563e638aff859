/**
 * Naming stored backups: a `BackupRef` (host + timestamp) and its two spellings, the ID
 * `<host>@<YYYYMMdd-HHmmss>` people type and the store-relative path `<host>/backup_<ts>`
 * the catalog and the RPCs carry. Every path that comes from outside (an RPC, a catalog
 * row) is parsed here, once, and refused unless it names exactly one backup.
 */
import { BoxbackError } from '../errors.js';
import { BACKUP_DIR_RE, backupId, backupRelPath } from '../manifest.js';
import type { BackupRef } from './backup-store.js';

export const HOST_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
export const TIMESTAMP_RE = /^\d{8}-\d{6}$/;

/** `<host>/backup_<ts>` of a ref. */
export function refPath(ref: BackupRef): string {
  return backupRelPath(ref.host, ref.timestamp);
}

/** `<host>@<ts>` of a ref. */
export function refId(ref: BackupRef): string {
  return backupId(ref.host, ref.timestamp);
}

/** Parse `<host>/backup_<ts>`; INVALID_ARGUMENT for anything else (no `..`, no extra parts). */
export function refFromPath(rel: string): BackupRef {
  const parts = rel.split('/');
  const m = parts.length === 2 && HOST_RE.test(parts[0]) ? BACKUP_DIR_RE.exec(parts[1]) : null;
  if (!m) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad backup path "${rel}": want "<host>/backup_YYYYMMdd-HHmmss"`);
  return Object.freeze({ host: parts[0], timestamp: m[1] });
}

/** A ref from its parts, checked. */
export function makeRef(host: string, timestamp: string): BackupRef {
  if (!HOST_RE.test(host)) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad host name "${host}"`);
  if (!TIMESTAMP_RE.test(timestamp))
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad backup timestamp "${timestamp}" (want YYYYMMdd-HHmmss)`);
  return Object.freeze({ host, timestamp });
}

/** Stored file paths inside a backup: '/'-separated, relative, no `..`, no empty parts. */
export function checkStoredPath(rel: string): string {
  const parts = rel.split('/');
  if (!rel || rel.startsWith('/') || parts.some((p) => p === '' || p === '.' || p === '..'))
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad path "${rel}" inside a backup`);
  return rel;
}
