/**
 * Where each part of a backup goes on THIS box. The target box's plan decides, never the
 * manifest: a dataset maps by archive name onto the plan's dataset with the same archive
 * (db.zip -> the plan's db.zip dataset), a tree by its directory name onto the plan's tree.
 * That is what makes a GoCD-imported backup (datasets without a target) and a restore onto
 * another box with other paths work. Parts the plan does not name are skipped with a
 * warning; targets nested in one another are refused (a swap would move both).
 *
 * A pg_dump dataset (db.<database>) maps onto the plan's postgres dataset with the same
 * archive or name: its dump is loaded into THIS plan's database (RESTORE_DATABASE, after
 * SWAP), so a restore onto another box or another database works the same way.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, isInside, type Manifest } from '@boxback/common';
import type { Plan } from '../plan.js';
import { parsePostgresDataset, type PostgresDataset } from '../postgres/plan.js';
import { inspectDump, metaFromManifest, type PgDumpMeta } from '../postgres/restore.js';

export interface Owner {
  user: string;
  group: string;
}

export interface DirDatasetTarget {
  kind: 'dir';
  name: string;
  archive: string;
  archivePath: string;
  target: string;
  owner?: Owner;
  entries: number;
  bytes: number;
}

export interface FilesDatasetTarget {
  kind: 'files';
  name: string;
  archive: string;
  archivePath: string;
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
  backupDir: string;
  target: string;
  owner?: Owner;
  files: number;
  bytes: number;
}

/** A pg_dump file loaded into the plan's database (postgres/restore.ts). */
export interface DatabaseTarget {
  name: string;
  archive: string;
  archivePath: string;
  ds: PostgresDataset;
  /** What the backup recorded about the dump (or read from the file when it recorded nothing). */
  meta: PgDumpMeta;
  bytes: number;
}

export interface RestoreTargets {
  /** Zip datasets: extracted into staging, swapped in. */
  datasets: DatasetTarget[];
  /** pg_dump datasets: loaded into the plan's database after SWAP. */
  databases: DatabaseTarget[];
  trees: TreeTarget[];
  warnings: string[];
}

const JOB_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export function checkJobId(jobId: string): void {
  if (!JOB_ID_RE.test(jobId)) {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad job id "${jobId}": letters, digits, '.', '_' or '-' (at most 100)`);
  }
}

export async function mapTargets(manifest: Manifest, plan: Plan, backupDir: string): Promise<RestoreTargets> {
  const warnings: string[] = [];
  const datasets: DatasetTarget[] = [];
  const databases: DatabaseTarget[] = [];
  const used = new Set<string>();
  for (const d of manifest.datasets ?? []) {
    if (d.kind === 'pg_dump') {
      // The plan's postgres dataset of the same archive (db.<database>) or, restoring onto
      // another database, of the same name.
      const i = plan.datasets.findIndex((pd) => pd.kind === 'postgres' && (pd.archive === d.archive || pd.name === d.name));
      if (i < 0) {
        warnings.push(`backup dump ${d.archive} (${d.name}) has no postgres dataset in plan ${plan.name}; not restored`);
        continue;
      }
      // The plan's connection settings, the backup's file name (the messages name the file restored).
      const ds: PostgresDataset = { ...parsePostgresDataset(plan.datasets[i], i), archive: d.archive };
      if (databases.some((x) => x.ds.index === i))
        throw new BoxbackError(
          'BOXBACK_ERR_PLAN_INVALID',
          `two dumps of the backup restore into database ${ds.pg.database} (plan dataset ${ds.name})`,
        );
      const archivePath = path.join(backupDir, d.archive);
      const meta = d.extra ? metaFromManifest(d.extra, d.archive) : await inspectDump(ds, archivePath);
      used.add(plan.datasets[i].archive);
      databases.push({ name: ds.name, archive: d.archive, archivePath, ds, meta, bytes: d.bytes ?? meta.sizeBytes ?? 0 });
      continue;
    }
    const pd = plan.datasets.find((x) => x.archive === d.archive);
    if (!pd) {
      warnings.push(`backup archive ${d.archive} (${d.name}) has no dataset in plan ${plan.name}; not restored`);
      continue;
    }
    if (d.kind !== 'zip' || pd.kind !== 'zip') {
      throw new BoxbackError(
        'BOXBACK_ERR_INVALID_ARGUMENT',
        `dataset ${d.name} (${d.archive}) is a ${d.kind} archive but plan dataset ${pd.name} is ${pd.kind}; they cannot be restored onto each other`,
      );
    }
    used.add(pd.archive);
    const owner = pd.owner ?? d.owner;
    const archivePath = path.join(backupDir, d.archive);
    const base = { name: pd.name, archive: d.archive, archivePath, owner, entries: d.entries ?? 0, bytes: d.bytes ?? 0 };
    if (pd.path) {
      datasets.push({ kind: 'dir', ...base, target: path.resolve(pd.path) });
    } else {
      const files = new Map<string, string>();
      for (const f of pd.files ?? []) {
        const b = path.basename(f);
        if (files.has(b)) throw new BoxbackError('BOXBACK_ERR_PLAN_INVALID', `dataset ${pd.name}: two files share the base name ${b}`);
        files.set(b, path.resolve(f));
      }
      datasets.push({ kind: 'files', ...base, files });
    }
  }
  for (const pd of plan.datasets) {
    if (!used.has(pd.archive) && !(manifest.datasets ?? []).some((d) => d.archive === pd.archive)) {
      warnings.push(`plan dataset ${pd.name} (${pd.archive}) is not in the backup; left as it is`);
    }
  }
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
      backupDir: path.join(backupDir, t.dir),
      target: path.resolve(pt.source),
      owner: pt.owner ?? t.owner,
      files: t.files ?? 0,
      bytes: t.bytes ?? 0,
    });
  }
  checkNotNested([...datasets.flatMap((d) => (d.kind === 'dir' ? [d.target] : [...d.files.values()])), ...trees.map((t) => t.target)]);
  return { datasets, databases, trees, warnings };
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
