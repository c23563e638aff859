/**
 * The catalog and the store agree: what the catalog calls Restorable is in the store, and
 * what is complete in the store is in the catalog.
 *
 * Presence (`checkPresence`, cheap: one stat per backup): before status and metrics are
 * computed (at most every PRESENCE_EVERY_MS, and on every `status --refresh`) and before
 * retention counts a host's backups, each Restorable backup's manifest must be in the store.
 * A missing one is marked (verify failed, "missing from the store: ..."): it stops counting as
 * Restorable, so its host can turn AT RISK, and a "damaged" webhook fires. One that comes back
 * (a store remounted) is unmarked at the next reconcile.
 *
 * Reconcile (`reconcileStore`), at start-up, after a backup job whose agent dropped, and every
 * STORE_SWEEP_MS, per host with no job Queued or Running (a running job records its own backup):
 *   1. list the complete backups (backup_* with a manifest) of the host in the store;
 *   2. one not in the catalog (an agent killed just after PUBLISH): adopt it, and correct the
 *      Failed backup job of that host that ran when it was made: Completed, with a note in the
 *      job's log;
 *   3. a catalogued Restorable one not in the store: mark it (as above); a marked one that is
 *      back: unmark it.
 * Safety: when the store lists no host here (a local store directory absent or empty: not
 * mounted on the controller's box) nothing is marked: agents answer for the store then.
 * The store is reached only through BackupStore (`storeHas`/`listStoreBackups`/`rowFromStore`
 * in backup-record.ts).
 */
import { refFromPath, type BackupStore, type Logger } from '@boxback/common';
import { listStoreBackups, rowFromStore, storeHas } from './backup-record.js';
import type { BackupRow, Catalog, JobRow } from './catalog/types.js';
import type { Notifications } from './notifications.js';

export const PRESENCE_EVERY_MS = 10_000;
export const STORE_SWEEP_MS = 5 * 60_000;
export const MISSING_PREFIX = 'missing from the store';

export interface AgreementDeps {
  catalog: Catalog;
  store: BackupStore;
  log: Logger;
  notifications?: Pick<Notifications, 'damaged'>;
}

/** False when the store is not (or not yet) mounted here: then the controller judges nothing. */
async function storeMountedHere(store: BackupStore): Promise<boolean> {
  try {
    return (await store.listHosts()).length > 0;
  } catch {
    return false;
  }
}

async function markMissing(d: AgreementDeps, b: Pick<BackupRow, 'id' | 'host' | 'path'>): Promise<void> {
  const errorMessage = `${MISSING_PREFIX}: ${b.path} is gone (noticed ${new Date().toISOString()}); it is no longer Restorable`;
  await d.catalog.updateBackup(b.id, { verifyFailed: true, errorMessage });
  d.log.warn({ backupId: b.id, path: b.path }, 'a Restorable backup is missing from the store');
  d.notifications?.damaged({ ...b, errorMessage }, `backup ${b.id} of ${b.host} is missing from the store`);
}

/** Mark every given Restorable backup that is not in the store; returns how many were marked. */
export async function checkPresence(d: AgreementDeps, backups: Iterable<BackupRow>): Promise<number> {
  const restorable = [...backups].filter((b) => b.restorable);
  if (!restorable.length || !(await storeMountedHere(d.store))) return 0;
  let marked = 0;
  for (const b of restorable) {
    if (await storeHas(d.store, b.path)) continue;
    await markMissing(d, b);
    marked++;
  }
  return marked;
}

/** The Failed backup job of `host` that ran when `createdAtMs` was taken (and named no backup). */
function jobThatMadeIt(jobs: JobRow[], createdAtMs: number): JobRow | undefined {
  return jobs.find(
    (j) =>
      j.kind === 'backup' &&
      j.state === 'Failed' &&
      !j.backupId &&
      j.startedAtMs - 2_000 <= createdAtMs &&
      createdAtMs <= (j.endedAtMs || Date.now()) + 2_000,
  );
}

async function adopt(d: AgreementDeps, rel: string, jobs: JobRow[]): Promise<void> {
  const row = await rowFromStore(d.store, refFromPath(rel), '');
  const job = jobThatMadeIt(jobs, row.createdAtMs);
  await d.catalog.putBackup({ ...row, jobId: job?.id ?? '', initiatedVia: 'reconcile' });
  d.log.warn({ backupId: row.id, jobId: job?.id }, 'a complete backup in the store was not in the catalog: adopted');
  if (!job) return;
  const was = job.errorCode ? `${job.errorCode}: ${job.errorMessage}` : job.errorMessage;
  await d.catalog.updateJob(job.id, { state: 'Completed', errorCode: '', errorMessage: '', backupId: row.id });
  await d.catalog.appendJobEvent({
    jobId: job.id,
    atMs: Date.now(),
    phase: '',
    state: 'Completed',
    message: `corrected by the store reconcile: backup ${row.id} was found complete in the store after this job was recorded Failed (${was})`,
  });
}

/** Make the catalog agree with the store for one host, or every registered host. Returns what changed. */
export async function reconcileStore(d: AgreementDeps, host?: string): Promise<{ adopted: number; marked: number; back: number }> {
  const out = { adopted: 0, marked: 0, back: 0 };
  if (!(await storeMountedHere(d.store))) return out;
  const hosts = host ? [host] : (await d.catalog.listHosts()).map((h) => h.name);
  for (const name of hosts) {
    const inStore = new Set(await listStoreBackups(d.store, name));
    const catalogued = await d.catalog.listBackups(name);
    const known = new Set(catalogued.map((b) => b.path));
    const jobs = await d.catalog.listJobs({ host: name, limit: 200 });
    // a job still running (or being followed after a restart) records its own backup
    if (jobs.some((j) => j.state === 'Running' || j.state === 'Queued')) continue;
    for (const rel of inStore) {
      if (known.has(rel)) continue;
      try {
        await adopt(d, rel, jobs);
        out.adopted++;
      } catch (err) {
        d.log.warn({ err, path: rel }, 'a backup in the store could not be adopted');
      }
    }
    for (const b of catalogued) {
      if (b.restorable && !inStore.has(b.path)) {
        await markMissing(d, b);
        out.marked++;
      } else if (b.verifyFailed && b.errorMessage.startsWith(MISSING_PREFIX) && inStore.has(b.path)) {
        await d.catalog.updateBackup(b.id, { verifyFailed: false, errorMessage: '' });
        out.back++;
      }
    }
  }
  if (out.adopted || out.marked || out.back) d.log.info(out, 'store and catalog reconciled');
  return out;
}
