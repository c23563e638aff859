/**
 * Turning what an agent reports (a JobResult with the manifest verbatim) or what the store
 * holds (a backup directory with manifest.json) into a catalog row. A row is Restorable
 * only when its status is Completed and its manifest was read (see catalog/sqlite.ts).
 */
import {
  backupRelPath,
  consistencyOf,
  parseManifestText,
  parseTimestamp,
  refFromPath,
  refId,
  refPath,
  type BackupRef,
  type BackupStore,
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
 * agent did not send it (a large manifest stays in the store). A manifest that cannot be
 * read there leaves the row as an agent that sent none would.
 */
export async function rowFromResultInStore(
  store: BackupStore,
  host: string,
  jobId: string,
  r: JobResult,
): Promise<NewBackupRow | undefined> {
  if (!r.manifestJson && r.backupPath && r.status !== 'Failed') {
    const json = await readStoreManifest(store, r.backupPath);
    if (json) return rowFromResult(host, jobId, { ...r, manifestJson: json });
  }
  return rowFromResult(host, jobId, r);
}

/** The manifest's text of the backup at `relPath` (`<host>/backup_<ts>`), when it is one the store holds. */
async function readStoreManifest(store: BackupStore, relPath: string): Promise<string | undefined> {
  try {
    return await store.readManifestText(refFromPath(relPath));
  } catch {
    return undefined;
  }
}

/** The row for a complete backup in the store. */
export async function rowFromStore(store: BackupStore, ref: BackupRef, jobId: string): Promise<NewBackupRow> {
  const json = await store.readManifestText(ref);
  const m = parseManifestText(json, `the manifest of ${refId(ref)}`);
  return {
    createdAtMs: createdAtOf(m, ref.timestamp),
    sizeBytes: 0,
    consistency: '',
    status: 'Completed', // a committed backup (its manifest is there) is complete
    verifiedAtMs: 0,
    verifyFailed: false,
    path: refPath(ref),
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
    ...{ id: refId(ref), host: ref.host },
  };
}

/** Complete backups of a host in the store, as `<host>/backup_<ts>`, oldest first. */
export async function listStoreBackups(store: BackupStore, host: string): Promise<string[]> {
  return (await store.listBackups(host)).map(refPath);
}

/** Whether the store holds `relPath` complete (false for a path that names no backup). */
export async function storeHas(store: BackupStore, relPath: string): Promise<boolean> {
  let ref: BackupRef;
  try {
    ref = refFromPath(relPath);
  } catch {
    return false;
  }
  return store.has(ref);
}
