/**
 * kind: zip (the default): a directory or some files, zipped as GoCD does (db.zip,
 * config-dir.zip...). Backup: inside the window (quiesce: true) a reflink/copy into the stage,
 * zipped after RESUME; otherwise zipped from the source. Restore: extracted into staging
 * siblings before STOP, swapped in by SWAP. A plain zip of a database file taken with no
 * window is recorded `live-unverified`: nothing proves it opens. The zip helpers here are
 * shared by the engine kinds whose archive is a zip of files (h2, sqlite).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { BoxbackError, type ManifestDataset } from '@boxback/common';
import type { PlanDataset } from '../plan.js';
import { stageDataset, type StagedDataset } from '../backup/stage.js';
import { DEFAULT_LEVEL, writeZip } from '../backup/zip-writer.js';
import { extractDirDataset, extractFilesDataset, type StagedFile } from '../restore/extract.js';
import { idMaps, resolveOwner } from '../restore/ownership.js';
import { saveRecord, sibling } from '../restore/record.js';
import { currentOwner, type DatasetTarget } from '../restore/targets.js';
import { datasetBase, foreignBlocks, pathOrFiles } from './base.js';
import type { BackupEnv, Captured, DatasetDriver, RestorePart, StageEnv, StoredFiles, StageOut, WindowEnv } from './driver.js';

export const zipSchema = datasetBase
  .extend({ kind: z.literal('zip') })
  .strict()
  .superRefine((d, ctx) => {
    pathOrFiles(d, ctx);
    foreignBlocks(d, 'zip', ctx);
  });

type ZipDataset = Extract<PlanDataset, { kind: 'zip' }>;
type Files = Pick<PlanDataset, 'name' | 'archive' | 'path' | 'files' | 'excludes' | 'compressionLevel'>;

/** Write the dataset's zip from `src` (the stage, or the source); returns its manifest entry. */
export async function zipInto(
  d: Files,
  src: StagedDataset,
  env: BackupEnv,
  kind: ManifestDataset['kind'],
  capture: ManifestDataset['capture'],
): Promise<Captured> {
  const fromStage = src.dir !== d.path || src.files !== d.files;
  const res = await env.phase((h) =>
    writeZip(src, path.join(env.tempDir, d.archive), {
      excludes: d.excludes,
      level: d.compressionLevel,
      stable: fromStage,
      signal: env.signal,
      reuse: env.reuse.get(d.archive),
      onProgress: (p) => h.update({ ...p, message: d.archive }),
    }),
  );
  if (fromStage && src.dir) await fsp.rm(src.dir, { recursive: true, force: true });
  return {
    sha256: res.sha256,
    readBack: true,
    blocks: Object.keys(res.blocks).length ? res.blocks : undefined,
    entry: {
      name: d.name,
      archive: d.archive,
      kind,
      capture,
      sources: d.path ? [d.path] : [...(d.files ?? [])],
      target: d.path ?? path.dirname(d.files![0]),
      entries: res.entries,
      bytes: res.bytes,
      extra: {
        archiveBytes: res.size,
        staged: fromStage,
        excludes: d.excludes,
        compressionLevel: d.compressionLevel ?? DEFAULT_LEVEL,
        reusedBytes: res.reusedBytes,
      },
    },
  };
}

/** Where a zip of `d`'s directory or files lands on this box. */
export async function zipTarget(entry: ManifestDataset, d: PlanDataset, index: number, files: StoredFiles): Promise<RestorePart> {
  const owner = d.owner ?? entry.owner;
  // Nothing read here: EXTRACT reads the archive straight from the store (no download first),
  // beside SYNC_TREES.
  const openArchive = () => files.openArchive(entry.archive);
  const base = { name: d.name, archive: entry.archive, openArchive, owner, entries: entry.entries ?? 0, bytes: entry.bytes ?? 0 };
  let zip: DatasetTarget;
  if (d.path) {
    zip = { kind: 'dir', ...base, target: path.resolve(d.path) };
  } else {
    const files = new Map<string, string>();
    for (const f of d.files ?? []) {
      const b = path.basename(f);
      if (files.has(b)) throw new BoxbackError('BOXBACK_ERR_PLAN_INVALID', `dataset ${d.name}: two files share the base name ${b}`);
      files.set(b, path.resolve(f));
    }
    zip = { kind: 'files', ...base, files };
  }
  return {
    kind: d.kind,
    name: d.name,
    archive: entry.archive,
    entries: base.entries,
    bytes: base.bytes,
    index,
    zip,
    capture: entry.capture,
  };
}

/** The staging siblings stageZip makes: the directory's, or each of the plan's files'. */
export function zipStagingPaths(part: RestorePart, jobId: string): string[] {
  const d = part.zip!;
  return d.kind === 'dir' ? [sibling.staging(d.target, jobId)] : [...d.files.values()].map((f) => sibling.staging(f, jobId));
}

/**
 * EXTRACT: the zip into staging siblings of its targets (swapped in by SWAP). The restore
 * records them all before EXTRACT (zipStagingPaths); one not recorded yet is recorded here,
 * a directory's before it is made.
 */
export async function stageZip(part: RestorePart, env: StageEnv): Promise<StageOut> {
  const d = part.zip!;
  const maps = idMaps(env.config.plan);
  const out: StageOut = { staged: [], chown: [], warnings: [] };
  // The dataset's owner is set on each entry as it is extracted (no chown -R of the staged copy after).
  const ids = d.owner ? await resolveOwner(d.owner) : undefined;
  if (d.kind === 'dir') {
    const staging = sibling.staging(d.target, env.jobId);
    if (!env.rec.staging.includes(staging)) {
      env.rec.staging.push(staging);
      await saveRecord(env.config.stateDir, env.rec);
    }
    const cur = await currentOwner(d.target);
    const r = await extractDirDataset(d, staging, {
      jobId: env.jobId,
      maps,
      defaultIds: cur ? { uid: cur.uid, gid: cur.gid } : undefined,
      chownEntries: true,
      ids,
      rootMode: cur?.mode,
      signal: env.signal,
      onProgress: env.onProgress,
    });
    out.staged.push({ kind: 'dir', target: d.target, staging });
    out.warnings.push(...r.warnings);
    return out;
  }
  const files: StagedFile[] = [];
  try {
    const r = await extractFilesDataset(
      d,
      { jobId: env.jobId, maps, chownEntries: true, ids, signal: env.signal, onProgress: env.onProgress },
      files,
    );
    out.warnings.push(...r.warnings);
  } finally {
    const unrecorded = files.map((f) => f.staging).filter((p) => !env.rec.staging.includes(p));
    if (unrecorded.length) {
      env.rec.staging.push(...unrecorded);
      await saveRecord(env.config.stateDir, env.rec);
    }
  }
  for (const f of files) out.staged.push({ kind: 'file', target: f.target, staging: f.staging });
  return out;
}

export const zipDriver: DatasetDriver<ZipDataset> = {
  kind: 'zip',
  schema: zipSchema,
  accepts: ['zip', 'h2'],
  noun: 'archive',
  needsWindow: (d) => d.quiesce,
  captureInWindow: (d, _i, env: WindowEnv) => stageDataset(d, env),
  backup(d, _i, env, staged) {
    const src = (staged as StagedDataset | undefined) ?? { dir: d.path, files: d.files };
    // A database file copied while its service runs: nothing proves it opens.
    const capture = staged ? 'quiesced' : d.quiesce ? 'live-unverified' : 'live';
    return zipInto(d, src, env, 'zip', capture);
  },
  target: (entry, d, i, files) => zipTarget(entry, d, i, files),
  stage: stageZip,
  stagingPaths: zipStagingPaths,
};
