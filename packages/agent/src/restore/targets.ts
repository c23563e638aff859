/**
 * Where each part of a backup goes on THIS box. The target box's plan decides, never the
 * manifest: a dataset maps by archive name onto the plan's dataset with the same archive
 * (db.zip -> the plan's db.zip dataset), a tree by its directory name onto the plan's tree.
 * That is what makes a GoCD-imported backup (datasets without a target) and a restore onto
 * another box with other paths work. Parts the plan does not name are skipped with a
 * warning; targets nested in one another are refused (a swap would move both).
 *
 * The plan dataset's driver (datasets/) restores it: a zip kind extracts into staging; an
 * engine kind (a pg_dump of db.<database>, mapped by archive or by name) is loaded into THIS
 * plan's database after SWAP, so a restore onto another box or database works the same way.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, isInside, type Manifest, type ManifestDataset, type ZipSource } from '@boxback/common';
import type { Plan } from '../plan.js';
import type { RestorePart, StoredFiles } from '../datasets/driver.js';
import { accepts, driverOf } from '../datasets/registry.js';

export interface Owner {
  user: string;
  group: string;
}

export interface DirDatasetTarget {
  kind: 'dir';
  name: string;
  archive: string;
  /** The archive to read entries from (BackupFiles.openArchive: the stored file, or a reader of the remote store); close it after. */
  openArchive(): Promise<{ src: ZipSource; close(): Promise<void> }>;
  target: string;
  owner?: Owner;
  entries: number;
  bytes: number;
}

export interface FilesDatasetTarget {
  kind: 'files';
  name: string;
  archive: string;
  /** The archive to read entries from (BackupFiles.openArchive: the stored file, or a reader of the remote store); close it after. */
  openArchive(): Promise<{ src: ZipSource; close(): Promise<void> }>;
  /** Entry base name -> absolute path on this box. */
  files: Map<string, string>;
  owner?: Owner;
  entries: number;
  bytes: number;
}

export type DatasetTarget = DirDatasetTarget | FilesDatasetTarget;

export interface TreeTarget {
  name: string;
  dir: string;
  target: string;
  owner?: Owner;
  files: number;
  bytes: number;
}

export interface RestoreTargets {
  /** Every dataset of the backup this box restores, each with the driver of its plan dataset. */
  parts: RestorePart[];
  /** The parts that are zips of files: extracted into staging, swapped in. */
  datasets: DatasetTarget[];
  trees: TreeTarget[];
  warnings: string[];
}

const JOB_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export function checkJobId(jobId: string): void {
  if (!JOB_ID_RE.test(jobId)) {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad job id "${jobId}": letters, digits, '.', '_' or '-' (at most 100)`);
  }
}

/**
 * The plan dataset a manifest entry restores onto: the one with the same archive, else (for
 * drivers that match by name: a dump restored into another database) the one with the same
 * name whose driver accepts the entry's kind.
 */
function planDatasetFor(d: ManifestDataset, plan: Plan, taken: Set<number>): number {
  const byArchive = plan.datasets.findIndex((pd) => pd.archive === d.archive);
  if (byArchive >= 0 && (accepts(plan.datasets[byArchive], d) || !driverOf(plan.datasets[byArchive]).matchByName)) return byArchive;
  return plan.datasets.findIndex((pd, i) => !taken.has(i) && driverOf(pd).matchByName && pd.name === d.name && accepts(pd, d));
}

/** Parts copied live with nothing to prove they open: said before anything changes, and in the result. */
export function liveUnverified(parts: RestorePart[]): string[] {
  return parts
    .filter((p) => p.capture === 'live-unverified')
    .map(
      (p) =>
        `${p.archive} (${p.name}) was copied live, without its engine and without the quiesce window (live-unverified): it may not open`,
    );
}

/** `files`: the backup's stored files (BackupFiles: local files, or zips read from the store). */
export async function mapTargets(manifest: Manifest, plan: Plan, files: StoredFiles): Promise<RestoreTargets> {
  const warnings: string[] = [];
  const parts: RestorePart[] = [];
  const taken = new Set<number>();
  for (const d of manifest.datasets ?? []) {
    const i = planDatasetFor(d, plan, taken);
    if (i < 0) {
      const noun = d.kind === 'zip' ? 'archive' : `${d.kind} dataset`;
      warnings.push(`backup ${noun} ${d.archive} (${d.name}) has no dataset in plan ${plan.name} that restores it; not restored`);
      continue;
    }
    const pd = plan.datasets[i];
    if (!accepts(pd, d)) {
      throw new BoxbackError(
        'BOXBACK_ERR_INVALID_ARGUMENT',
        `dataset ${d.name} (${d.archive}) is a ${d.kind} archive but plan dataset ${pd.name} is ${pd.kind}; they cannot be restored onto each other`,
      );
    }
    if (taken.has(i))
      throw new BoxbackError('BOXBACK_ERR_PLAN_INVALID', `two datasets of the backup restore onto plan dataset ${pd.name} (${pd.archive})`);
    taken.add(i);
    parts.push(await driverOf(pd).target(d, pd, i, files));
  }
  plan.datasets.forEach((pd, i) => {
    if (!taken.has(i) && !(manifest.datasets ?? []).some((d) => d.archive === pd.archive))
      warnings.push(`plan dataset ${pd.name} (${pd.archive}) is not in the backup; left as it is`);
  });
  const datasets = parts.flatMap((p) => (p.zip ? [p.zip] : []));
  warnings.unshift(...liveUnverified(parts));
  const trees: TreeTarget[] = [];
  for (const t of manifest.trees ?? []) {
    const pt = plan.trees.find((x) => (x.dir ?? x.name) === t.dir) ?? plan.trees.find((x) => x.name === t.name);
    if (!pt) {
      warnings.push(`backup tree ${t.dir} (${t.name}) has no tree in plan ${plan.name}; not restored`);
      continue;
    }
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(t.dir))
      throw new BoxbackError('BOXBACK_ERR_MANIFEST_INVALID', `tree ${t.name} has a bad dir "${t.dir}"`);
    trees.push({
      name: pt.name,
      dir: t.dir,
      target: path.resolve(pt.source),
      owner: pt.owner ?? t.owner,
      files: t.files ?? 0,
      bytes: t.bytes ?? 0,
    });
  }
  checkNotNested([...datasets.flatMap((d) => (d.kind === 'dir' ? [d.target] : [...d.files.values()])), ...trees.map((t) => t.target)]);
  return { parts, datasets, trees, warnings };
}

function checkNotNested(targets: string[]): void {
  for (const a of targets) {
    if (a === path.parse(a).root) throw new BoxbackError('BOXBACK_ERR_PLAN_INVALID', `refusing to restore onto ${a}`);
    for (const b of targets) {
      if (a !== b && isInside(a, b)) {
        throw new BoxbackError(
          'BOXBACK_ERR_PLAN_INVALID',
          `restore targets overlap: ${b} lies inside ${a}; give them separate directories`,
        );
      }
      if (a === b && targets.indexOf(a) !== targets.lastIndexOf(b)) {
        throw new BoxbackError('BOXBACK_ERR_PLAN_INVALID', `two parts of the backup restore onto ${a}`);
      }
    }
  }
}

/** Owner and mode of what is at `p` now (undefined when nothing is there). */
export async function currentOwner(p: string): Promise<{ uid: number; gid: number; mode: number } | undefined> {
  try {
    const st = await fsp.lstat(p);
    return { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 };
  } catch {
    return undefined;
  }
}

/** Every absolute path the restore will replace, for messages and the dry-run report. */
export function allTargets(t: RestoreTargets): string[] {
  return [...t.datasets.flatMap((d) => (d.kind === 'dir' ? [d.target] : [...d.files.values()])), ...t.trees.map((x) => x.target)];
}
