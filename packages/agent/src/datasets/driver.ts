/**
 * What a dataset is, as one interface (docs/design/dataset-drivers.md). A driver is one
 * kind of dataset (a zip of files, a PostgreSQL dump, an H2 database...), in one file of
 * this directory, listed once in registry.ts; Velero's restore actions are the model. It
 * gives, in the order a backup and a restore call them:
 *
 *   schema          its member of the plan's dataset union (plan.ts compiles it once)
 *   needsWindow     whether its copy is taken inside the quiesce window
 *   captureInWindow inside the window: the consistent copy (a staged copy, a dump)
 *   backup          the archive in the backup directory -> its manifest entry
 *   probe           proof that the copy opens in its real engine (a failure fails the backup)
 *   target          restore: a manifest entry mapped onto this box's plan dataset
 *   preflight       before STOP: reach the engine, check versions, read the archive back
 *   stage           before STOP: extract into staging siblings (swapped in by SWAP)
 *   apply           after SWAP, services stopped: load into the engine (RESTORE_DATABASE)
 *   undo            ROLLBACK of what apply did
 *   dryRun          the --dry-run report's lines
 *
 * backup.ts and restore.ts only loop over drivers: adding a kind touches one new file here
 * and one line in registry.ts.
 */
import type { Logger, ManifestDataset, ManifestProbe, ZipSource } from '@boxback/common';
import type { z } from 'zod';
import type { AgentConfig } from '../config.js';
import type { PlanDataset } from '../plan.js';
import type { ReuseSource } from '../backup/zip-blocks.js';
import type { ProgressUpdate } from '../job.js';
import type { ChownWork } from '../restore/ownership.js';
import type { Move, RestoreRecord } from '../restore/record.js';
import type { Staged } from '../restore/swap.js';
import type { DatasetTarget } from '../restore/targets.js';

export type DatasetKind = PlanDataset['kind'];

/** Handle a phase body uses to report progress. */
export interface PhaseHandle {
  update(u: Omit<ProgressUpdate, 'phase' | 'state'>): void;
}

/** Inside the quiesce window. */
export interface WindowEnv {
  /** The stage: a directory inside the backup's temporary directory (same filesystem). */
  stageRoot: string;
  tempDir: string;
  signal: AbortSignal;
  /** What is left of the lease. */
  timeoutMs: number;
  log: Logger;
  progress(message: string): void;
}

export interface BackupEnv {
  /** The backup's temporary directory: archives are written at its top level. */
  tempDir: string;
  stageRoot: string;
  jobId: string;
  signal: AbortSignal;
  log: Logger;
  /** No quiesce window was taken (--live, mode none, or quiesce.onError: continue). */
  live: boolean;
  /** The previous backup's archives with their compressed blocks (zip-blocks.ts). */
  reuse: Map<string, ReuseSource>;
  /** Run `fn` as this dataset's phase (BACKUP_DATABASE...): progress, timings, failed step. */
  phase<T>(fn: (h: PhaseHandle) => Promise<T>): Promise<T>;
}

/** What backup() wrote: the manifest entry and the archive's SHA-256 (hashed while writing). */
export interface Captured {
  entry: ManifestDataset;
  sha256: string;
  /**
   * True when `sha256` was taken from the archive's bytes as they read back, each write compared
   * with what was written (zip-writer.ts): VERIFY does not read it again.
   */
  readBack?: boolean;
  /** zip archives: their 1 MiB block index, for the next backup's reuse. */
  blocks?: Record<string, unknown>;
}

export interface ProbeEnv {
  tempDir: string;
  /** Where backup() staged its copy (still there while the probes run). */
  stageRoot: string;
  signal: AbortSignal;
  log: Logger;
}

/** What a probe found; a failed one throws BOXBACK_ERR_PROBE_FAILED with the engine's own words. */
export type ProbeOutcome = Omit<ManifestProbe, 'durationMs'>;

/** One part of a backup mapped onto this box (targets.ts). */
export interface RestorePart {
  /** The driver restoring it: the kind of THIS box's plan dataset. */
  kind: DatasetKind;
  name: string;
  archive: string;
  /**
   * The archive as a local file, for the drivers that read it before the staging (dumps:
   * VERSION_CHECK reads them back). Zip parts have none: their `zip.archiveFile()` is fetched
   * on first use, so a remote store's download runs beside SYNC_TREES, not before it.
   */
  archivePath?: string;
  entries: number;
  bytes: number;
  /** Index of the plan dataset. */
  index: number;
  /** File-based kinds: the zip to extract into staging and swap in. */
  zip?: DatasetTarget;
  /** How the backup captured it (live-unverified: a live file copy nothing proved). */
  capture?: ManifestDataset['capture'];
}

export interface RestoreEnv {
  config: AgentConfig;
  jobId: string;
  signal: AbortSignal;
  log: Logger;
  force: boolean;
  emit(u: Omit<ProgressUpdate, 'phase'> & { phase?: string }): void;
}

export interface StageEnv extends RestoreEnv {
  rec: RestoreRecord;
  onProgress: (bytes: number, files: number) => void;
}

export interface StageOut {
  staged: Staged[];
  chown: ChownWork[];
  warnings: string[];
}

export interface ApplyEnv extends RestoreEnv {
  rec: RestoreRecord;
  /** Record a move before it is made (restores/<job>.json), and again once done. */
  save(): Promise<void>;
  progress(message: string): void;
}

/** A backup's stored files as a restore reads them (restore/backup-files.ts, BackupFiles). */
export interface StoredFiles {
  /** A local path holding stored file `rel` (the stored file, or a download checked against the manifest). */
  get(rel: string): Promise<string>;
  /** Stored zip `rel` to read entries from, without a download (see BackupFiles.openArchive); close it after. */
  openArchive(rel: string): Promise<{ src: ZipSource; close(): Promise<void> }>;
}

/** A part whose archive is a local file from the mapping on (dumps). */
export interface DumpPart extends RestorePart {
  archivePath: string;
}

export interface DatasetDriver<D extends PlanDataset = PlanDataset, P extends RestorePart = RestorePart> {
  readonly kind: D['kind'];
  /** Its member of the plan's dataset union (kind: <this kind>). */
  readonly schema: z.ZodType;
  /** Manifest kinds it restores: its own, older names of it (pg_dump), compatible ones (zip for h2). */
  readonly accepts: readonly string[];
  /** A restore also finds its plan dataset by name (a dump restored into another database). */
  readonly matchByName?: boolean;
  /** The word for it in messages ("dump", "archive"). */
  readonly noun: string;

  /** Paths on the box it reads or writes beyond path/files (checked against allowedRoots): key -> path. */
  paths?(d: D): Array<{ key: string; path: string }>;
  needsWindow(d: D): boolean;
  captureInWindow?(d: D, index: number, env: WindowEnv): Promise<unknown>;
  backup(d: D, index: number, env: BackupEnv, captured: unknown): Promise<Captured>;
  probe?(d: D, index: number, entry: ManifestDataset, env: ProbeEnv): Promise<ProbeOutcome | undefined>;

  /** `files`: the backup's stored files, as local files or zip sources (restore/backup-files.ts). */
  target(entry: ManifestDataset, d: D, index: number, files: StoredFiles): Promise<P>;
  preflight?(part: P, d: D, env: RestoreEnv): Promise<string[]>;
  stage?(part: P, env: StageEnv): Promise<StageOut>;
  /** The staging siblings `stage` may make (restore/record.ts), recorded with all others in one save before EXTRACT starts. */
  stagingPaths?(part: P, jobId: string): string[];
  apply?(part: P, d: D, env: ApplyEnv): Promise<string[]>;
  undo?(move: Move, d: D, index: number, log: Logger): Promise<void>;
  /** `restore confirm` or the age limit: drop what apply kept aside. */
  dropSafety?(move: Move, d: D, index: number, log: Logger): Promise<void>;
  /** How `boxback status` names a safety copy apply kept outside the filesystem (a database). */
  safetyLabel?(move: Move, d: D, index: number): string;
  dryRun?(part: P, d: D, env: RestoreEnv): Promise<{ steps: string[]; warnings: string[] }>;
}
