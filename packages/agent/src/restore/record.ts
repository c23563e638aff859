/**
 * The restore record `<stateDir>/restores/<jobId>.json`: every move a restore makes on the
 * box, written (fsynced) BEFORE the move is made, so that rollback, confirm, prune and an
 * agent restarted after a crash know exactly what to put back or delete.
 *
 * Move kinds:
 *   dir       target renamed aside to `safety`, `staging` renamed into place
 *   file      target hard-linked to `safety`, `staging` renamed over it (atomic)
 *   remove    target renamed aside to `safety` (a clean-up step's removal)
 *   hostfile  target hard-linked to `safety`, the rewritten file renamed over it
 *   database  target = the plan dataset's database (name), renamed aside to the database
 *             `safety` and a new one loaded from the dump (postgres/restore.ts); `dataset`
 *             names the plan dataset, `emptyWith` how it was emptied (clean keeps no copy)
 * `safety: null` means there was nothing at the target before.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '@boxback/common';

export type MoveKind = 'dir' | 'file' | 'remove' | 'hostfile' | 'database';

export interface Move {
  kind: MoveKind;
  target: string;
  safety: string | null;
  staging?: string;
  state: 'planned' | 'done';
  /** database moves: the plan dataset's name, and how the database was emptied. */
  dataset?: string;
  emptyWith?: 'recreate' | 'clean';
}

/** failed: stopped before anything was moved. */
export type RecordStatus = 'in-progress' | 'completed' | 'failed' | 'rolled-back' | 'rollback-failed' | 'confirmed';

export interface RestoreRecord {
  version: 1;
  jobId: string;
  backupId: string;
  backupPath: string;
  createdAtMs: number;
  updatedAtMs: number;
  status: RecordStatus;
  failedStep?: string;
  error?: string;
  moves: Move[];
  /** Staging paths the job created (removed on rollback or recovery if still there). */
  staging: string[];
  /** Size of the safety copies, computed once when first listed. */
  sizeBytes?: number;
}

export function recordsDir(stateDir: string): string {
  return path.join(stateDir, 'restores');
}

export function recordFile(stateDir: string, jobId: string): string {
  return path.join(recordsDir(stateDir), `${jobId}.json`);
}

export async function saveRecord(stateDir: string, rec: RestoreRecord): Promise<void> {
  await fsp.mkdir(recordsDir(stateDir), { recursive: true, mode: 0o700 });
  rec.updatedAtMs = Date.now();
  await writeFileAtomic(recordFile(stateDir, rec.jobId), `${JSON.stringify(rec, null, 2)}\n`, 0o600);
}

export async function readRecords(stateDir: string): Promise<RestoreRecord[]> {
  let names: string[];
  try {
    names = await fsp.readdir(recordsDir(stateDir));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: RestoreRecord[] = [];
  for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
    try {
      const rec = JSON.parse(await fsp.readFile(path.join(recordsDir(stateDir), n), 'utf8')) as RestoreRecord;
      if (rec && rec.version === 1 && Array.isArray(rec.moves)) out.push({ ...rec, staging: rec.staging ?? [] });
    } catch {
      /* a torn write cannot happen (atomic rename); anything else unreadable is skipped */
    }
  }
  return out;
}

export function newRecord(jobId: string, backupId: string, backupPath: string): RestoreRecord {
  const now = Date.now();
  return { version: 1, jobId, backupId, backupPath, createdAtMs: now, updatedAtMs: now, status: 'in-progress', moves: [], staging: [] };
}

/** Paths a job may create next to a target: staging, safety, rejected and download siblings. */
export const sibling = {
  staging: (target: string, jobId: string) => `${target}.boxback-staging-${jobId}`,
  safety: (target: string, jobId: string) => `${target}.boxback-safety-${jobId}`,
  hostSafety: (target: string, jobId: string) => `${target}.boxback-safety-${jobId}.prehost`,
  rejected: (target: string, jobId: string) => `${target}.boxback-rejected-${jobId}`,
  /** Archives and dumps downloaded from a remote store (backup-files.ts). */
  download: (target: string, jobId: string) => `${target}.boxback-download-${jobId}`,
};

export async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
