/**
 * Turning what an agent reports (a JobResult with the manifest verbatim) or what the store
 * holds (a backup directory with manifest.json) into a catalog row. A row is Restorable
 * only when its status is Completed and its manifest was read (see catalog/sqlite.ts).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import {
  BACKUP_DIR_RE,
  backupId as makeBackupId,
  backupRelPath,
  consistencyOf,
  parseTimestamp,
  readManifest,
  type JobResult,
  type Manifest,
} from '@boxback/common';
import type { BackupStatus, NewBackup } from './catalog/types.js';

export type NewBackupRow = NewBackup;

function backupStatusOf(jobStatus: string): BackupStatus {
  if (jobStatus === 'Completed' || jobStatus === 'PartiallyFailed') return jobStatus;
  return 'Failed';
}

/** Parse `manifestJson`; undefined when it is empty or not a manifest. */
export function parseManifest(json: string): Manifest | undefined {
  if (!json) return undefined;
  try {
    const m = JSON.parse(json) as Manifest;
    return m && typeof m === 'object' && Array.isArray(m.files) && typeof m.id === 'string' ? m : undefined;
  } catch {
    return undefined;
  }
}

function createdAtOf(m: Manifest | undefined, ts: string | undefined): number {
  const fromManifest = m?.createdAt ? Date.parse(m.createdAt) : NaN;
  if (Number.isFinite(fromManifest)) return fromManifest;
  try {
    return ts ? parseTimestamp(ts).getTime() : Date.now();
  } catch {
    return Date.now();
  }
}

/** The row fields a manifest decides. */
export function fromManifest(m: Manifest, manifestJson: string): Partial<NewBackupRow> {
  return {
    id: m.id,
    host: m.host,
    createdAtMs: createdAtOf(m, m.timestamp),
    sizeBytes: m.totals?.bytes ?? 0,
    consistency: consistencyOf(m),
    productVersion: m.product?.version ?? '',
    origin: m.origin ?? 'boxback',
    manifestJson,
    quiesceWindowMs: m.quiesce?.windowMs ?? 0,
    fileCount: m.totals?.files ?? m.files.length,
    warningCount: m.warnings?.length ?? 0,
  };
}

/** The catalog row for a backup job's result; undefined when the agent named no backup. */
export function rowFromResult(host: string, jobId: string, r: JobResult): NewBackupRow | undefined {
  const m = parseManifest(r.manifestJson);
  const id = m?.id || r.backupId;
  if (!id) return undefined;
  const ts = id.split('@')[1];
  const status = backupStatusOf(r.status);
  return {
    id,
    host,
    createdAtMs: createdAtOf(m, ts),
    sizeBytes: r.sizeBytes,
    consistency: '',
    status,
    verifiedAtMs: 0,
    verifyFailed: false,
    path: r.backupPath || (ts ? backupRelPath(host, ts) : ''),
    productVersion: '',
    jobId,
    origin: 'boxback',
    manifestJson: '',
    quiesceWindowMs: 0,
    fileCount: 0,
    warningCount: r.warnings.length,
    errorCount: status === 'Failed' ? 1 : 0,
    errorMessage: r.errorMessage,
    ...(m ? fromManifest(m, r.manifestJson) : {}),
    // the agent's own count of warnings wins over the manifest's
    ...(r.warnings.length ? { warningCount: r.warnings.length } : {}),
  };
}

/**
 * The catalog row for a backup job's result, reading the manifest from the store when the
 * agent did not send it (a large manifest stays in `<store>/<backupPath>/manifest.json`).
 * A manifest that cannot be read there leaves the row as an agent that sent none would.
 */
export async function rowFromResultInStore(store: string, host: string, jobId: string, r: JobResult): Promise<NewBackupRow | undefined> {
  if (!r.manifestJson && r.backupPath && r.status !== 'Failed') {
    const json = await readStoreManifest(store, r.backupPath);
    if (json) return rowFromResult(host, jobId, { ...r, manifestJson: json });
  }
  return rowFromResult(host, jobId, r);
}

/** The text of `<store>/<relPath>/manifest.json` when it is a readable manifest inside the store. */
async function readStoreManifest(store: string, relPath: string): Promise<string | undefined> {
  const parts = relPath.split('/');
  if (parts.length !== 2 || !BACKUP_DIR_RE.test(parts[1]) || parts[0] === '' || parts[0] === '.' || parts[0] === '..') return undefined;
  try {
    return await fsp.readFile(path.join(store, ...parts, 'manifest.json'), 'utf8');
  } catch {
    return undefined;
  }
}

/** The row for a complete backup directory in the store (`<store>/<host>/backup_<ts>`). */
export async function rowFromStoreDir(store: string, relPath: string, jobId: string): Promise<NewBackupRow> {
  const dir = path.join(store, ...relPath.split('/'));
  const m = await readManifest(dir);
  const json = await fsp.readFile(path.join(dir, 'manifest.json'), 'utf8');
  const [host, base] = relPath.split('/');
  const ts = BACKUP_DIR_RE.exec(base)?.[1] ?? m.timestamp;
  return {
    createdAtMs: createdAtOf(m, ts),
    sizeBytes: 0,
    consistency: '',
    status: 'Completed', // a backup_* directory with a manifest is complete
    verifiedAtMs: 0,
    verifyFailed: false,
    path: relPath,
    productVersion: '',
    jobId,
    origin: 'boxback',
    manifestJson: json,
    quiesceWindowMs: 0,
    fileCount: 0,
    warningCount: 0,
    errorCount: 0,
    errorMessage: '',
    ...fromManifest(m, json),
    ...{ id: makeBackupId(host, ts), host },
  };
}

/** Complete backup directories of a host in the store (name backup_* and a manifest), oldest first. */
export async function listStoreBackups(store: string, host: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fsp.readdir(path.join(store, host));
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const n of names.filter((x) => BACKUP_DIR_RE.test(x)).sort()) {
    try {
      await fsp.access(path.join(store, host, n, 'manifest.json'));
      out.push(`${host}/${n}`);
    } catch {
      // unfinished: no manifest
    }
  }
  return out;
}

/** Whether `<store>/<relPath>/manifest.json` exists (a complete backup is there). */
export async function storeHas(store: string, relPath: string): Promise<boolean> {
  const parts = relPath.split('/');
  if (parts.length !== 2 || !BACKUP_DIR_RE.test(parts[1]) || parts[0] === '' || parts[0] === '.' || parts[0] === '..') return false;
  try {
    await fsp.access(path.join(store, ...parts, 'manifest.json'));
    return true;
  } catch {
    return false;
  }
}
