/**
 * Prune: remove the objects no complete backup references, safe against backups running at
 * the same time (docs/design/store-s3-format.md, "Prune"). Mark-and-sweep in two stages with a
 * grace period, and locks that expire with their holder (a lock not refreshed within its lease
 * is stale and dropped: a dead backup never blocks a prune, unlike restic's stale locks):
 *
 *   1. locks: live (refreshed within the lease) and stale ones; stale ones are deleted
 *   2. mark: every snapshot's manifest, content map and file blobs -> the packs that hold them
 *   3. forget: indexed packs no backup needs are written to a `forgotten/<sha256>` record,
 *      then dropped from the index (index objects rewritten without them): no backup that
 *      starts from now on can reuse them
 *   4. sweep: a forgotten record older than the grace period AND older than the start of every
 *      live backup (so no backup that could still reuse its packs is running) has its packs
 *      deleted, unless a backup committed meanwhile names them (then they are indexed again)
 *   5. orphans: packs no index ever named (an interrupted backup's) are deleted once older than
 *      the grace period and older than every live backup's start; open multipart uploads
 *      older than the grace period are aborted
 *   6. many index objects (one per backup) are merged into one
 * A backup's commit confirms every pack it reuses and indexes again any that step 3 dropped
 * meanwhile (staging.ts), so a prune never costs a committed backup an object.
 */
import { createHash } from 'node:crypto';
import type { Logger } from '../../logger.js';
import type { PackEntry } from './pack.js';
import { packIdOfKey, packKey, type Repo, type SnapshotHeader } from './repo.js';
import { seal } from './sealed.js';

const CLOCK_GRAIN_MS = 2000;

export interface PruneOptions {
  /** Objects younger than this are never deleted (default 1 h). */
  graceMs?: number;
  /** A lock not refreshed for this long is stale (the store's lease). */
  lockLeaseMs: number;
  log?: Logger;
  /** The clock (tests). */
  now?: () => number;
  /** More index objects than this are merged into one (every open reads them all; default 32). */
  consolidateAbove?: number;
}

export interface PruneResult {
  snapshots: number;
  liveLocks: number;
  staleLocks: number;
  forgottenPacks: number;
  /** Forgotten packs a backup committed meanwhile names: indexed again. */
  resurrectedPacks: number;
  deletedPacks: number;
  deletedBytes: number;
  abortedUploads: number;
  keptPacks: number;
  /** Index objects left after merging them (absent: not merged). */
  indexObjects?: number;
}

/** Blob ids every complete backup needs. */
export async function referencedBlobs(
  repo: Repo,
  skip?: string,
  listed?: Array<{ name: string; h: SnapshotHeader }>,
): Promise<{ blobs: Set<string>; snapshots: number }> {
  const blobs = new Set<string>();
  const snaps = (listed ?? (await repo.listSnapshots())).filter((s) => s.name !== skip);
  for (const s of snaps) {
    for (const b of [...s.h.manifest.blobs, ...s.h.contents.blobs]) blobs.add(b);
    for (const list of Object.values(await repo.readContents(s.h))) for (const b of list) blobs.add(b);
  }
  return { blobs, snapshots: snaps.length };
}

async function forget(repo: Repo, unneeded: Map<string, PackEntry[]>): Promise<void> {
  // the record first (with the packs' entries: still readable, and indexed again if needed)
  const raw = seal(repo.keys.enc, 'forgotten', Buffer.from(JSON.stringify([...unneeded])));
  await repo.client.put(`forgotten/${createHash('sha256').update(raw).digest('hex')}`, raw);
  // then each index object that names a forgotten pack is rewritten without it
  const packs = repo.indexedPacks();
  const touched = new Set<string>();
  for (const p of unneeded.keys()) for (const o of packs.get(p)?.indexObjects ?? []) touched.add(o);
  const keep: Array<[string, PackEntry[]]> = [];
  for (const [pack, p] of packs) if (!unneeded.has(pack) && p.indexObjects.some((o) => touched.has(o))) keep.push([pack, p.entries]);
  await repo.writeIndex(keep);
  await repo.client.delete([...touched]);
  await repo.refreshIndex();
}

export async function prune(repo: Repo, o: PruneOptions): Promise<PruneResult> {
  const now = (o.now ?? Date.now)();
  const grace = o.graceMs ?? 60 * 60 * 1000;
  const res: PruneResult = {
    snapshots: 0,
    liveLocks: 0,
    staleLocks: 0,
    forgottenPacks: 0,
    resurrectedPacks: 0,
    deletedPacks: 0,
    deletedBytes: 0,
    abortedUploads: 0,
    keptPacks: 0,
  };
  // 1. locks
  const locks = await repo.listLocks();
  const stale = locks.filter((l) => now - l.lastModified.getTime() > o.lockLeaseMs);
  const live = locks.filter((l) => !stale.includes(l));
  res.staleLocks = stale.length;
  res.liveLocks = live.length;
  await repo.client.delete(stale.map((l) => l.name));
  // a live backup's start: its own word, and never later than its lock's last refresh
  const oldestLive = Math.min(now, ...live.map((l) => Math.min(l.lastModified.getTime(), Date.parse(l.body?.startedAt ?? '') || 0)));
  // LastModified has a one-second grain on some servers: never trust the last two seconds
  const cutoff = Math.min(now - grace, oldestLive - grace) - CLOCK_GRAIN_MS;
  // 2. mark. Snapshots are listed BEFORE the index is read: a snapshot is written after its
  // index object, so every blob of a listed snapshot is in the index or a forgotten record
  const snaps = await repo.listSnapshots();
  await repo.refreshIndex();
  const { blobs, snapshots } = await referencedBlobs(repo, undefined, snaps);
  res.snapshots = snapshots;
  const indexed = repo.indexedPacks();
  const needed = new Set<string>();
  for (const [pack, p] of indexed) if (p.entries.some(([id]) => blobs.has(id))) needed.add(pack);
  // a forgotten pack a backup committed meanwhile names: indexed again
  const resurrect: Array<[string, PackEntry[]]> = [];
  for (const [pack, entries] of repo.forgotten)
    if (!indexed.has(pack) && entries.some(([id]) => blobs.has(id))) {
      needed.add(pack);
      resurrect.push([pack, entries]);
    }
  await repo.writeIndex(resurrect);
  res.resurrectedPacks = resurrect.length;
  // 3. forget
  const unneeded = new Map([...indexed].filter(([p]) => !needed.has(p)).map(([p, x]) => [p, x.entries] as [string, PackEntry[]]));
  if (unneeded.size) {
    await forget(repo, unneeded);
    res.forgottenPacks = unneeded.size;
  }
  // 4. sweep forgotten records old enough (their packs unneeded and not indexed again)
  const listedPacks = new Map((await repo.client.list('data/')).map((x) => [packIdOfKey(x.key), x]));
  const indexedNow = repo.indexedPacks();
  const inRecords = new Set<string>();
  const toDelete = new Set<string>();
  const doneRecords: string[] = [];
  for (const rec of await repo.client.list('forgotten/')) {
    const packs = repo.forgottenRecords.get(rec.key) ?? [];
    for (const [id] of packs) inRecords.add(id);
    if (rec.lastModified.getTime() > cutoff) continue;
    for (const [id] of packs) if (!needed.has(id) && !indexedNow.has(id)) toDelete.add(id);
    doneRecords.push(rec.key);
  }
  // 5. orphans never indexed
  for (const [id, x] of listedPacks)
    if (!needed.has(id) && !indexed.has(id) && !inRecords.has(id) && x.lastModified.getTime() < cutoff) toDelete.add(id);
  for (const id of toDelete) res.deletedBytes += listedPacks.get(id)?.size ?? 0;
  await repo.client.delete([...toDelete].map(packKey));
  await repo.client.delete(doneRecords);
  res.deletedPacks = toDelete.size;
  res.keptPacks = listedPacks.size - toDelete.size;
  // 6. one index object instead of many (one per backup): only those read here are replaced
  const names = repo.indexObjectNames;
  if (names.length > (o.consolidateAbove ?? 32)) {
    await repo.writeIndex([...repo.indexedPacks()].map(([p, x]) => [p, x.entries] as [string, PackEntry[]]));
    await repo.client.delete(names);
    await repo.refreshIndex();
    res.indexObjects = repo.indexObjectNames.length;
  }
  await repo.client.settleAborts();
  for (const u of await repo.client.openUploads())
    if (u.initiated.getTime() < now - grace) {
      await repo.client.abortOpenUpload(u.key, u.uploadId);
      res.abortedUploads++;
    }
  o.log?.info({ ...res }, 's3 prune done');
  return res;
}
