/**
 * A backup of this host, as a list of phases (each emits started / running / done with bytes
 * and files done and total; each one's start, end and bytes go into the manifest):
 *
 *   PRE_BACKUP_SCRIPT      the plan's pre-backup hooks (onError fail stops here)
 *   CREATING_DIR           the host's newest backup (previous), its block index (read beside store.begin); store.begin: the
 *                          staging (local: `<store>/<host>/.tmp-backup_<ts>-<job>/`, stale ones removed)
 *   QUIESCE                read the window's datasets into the page cache (prefetch.ts), take
 *                          the lease (recorded on disk first), stop the services or enter
 *                          maintenance mode, run the in-window commands, then each driver
 *                          whose dataset needs the window takes its copy (a reflink or copy
 *                          into the stage, a dump)
 *   RESUME                 at once, on every path (try/finally + the lease's deadline timer)
 *   BACKUP_DATABASE ...    each dataset by its driver (datasets/: a zip from the stage or the
 *                          source, a pg_dump, an engine's online copy...), 2 at a time (those the
 *                          window copied start beside RESUME, from the stage; the rest once the
 *                          services run again), hashed
 *                          on the way to disk. Unchanged 1 MiB blocks of large files are copied
 *                          from the previous backup's archive (zip-blocks.ts)
 *   PROBE_DATABASE ...     the driver's consistency probe: the copy opens in its real engine;
 *                          a failure fails the backup with the engine's own message
 *   VERIFY                 then, still beside the trees: re-read and re-hash every archive written
 *                          that was not already read back as it was written (a zip: each write is
 *                          read back and compared before it is hashed, zip-writer.ts)
 *   SYNC_ARTIFACTS ...     at the same time (started as soon as the window's copy is done, beside
 *                          RESUME), 2 at a time: each tree stored by staging.syncTree, given the
 *                          journal's changed paths when it is trusted (journal/), else a full pass;
 *                          the store says how it synced (local: rsync --link-dest to the previous
 *                          backup, or only the changed paths over the prepared hard-link farm) and
 *                          writes the tree's manifest lines into its part file
 *   (block index)          boxback-blocks.json, for the next backup's reuse; read back and checked
 *   BACKUP_VERSION_FILE    version.txt, GoCD style
 *   MANIFEST               the archives' entries, merged with the trees'
 *   PUBLISH                staging.commit: everything durable, manifest.json last, the backup
 *                          appears (local: rename to `backup_<ts>`); then each tree's journal is
 *                          sealed (it now follows this backup) and the store prepares the next
 *                          journaled sync (prepareNext); a failed backup abandons its snapshots
 *   POST_BACKUP_SCRIPT     the post-backup hooks, on success and on failure, with GoCD's variables
 *
 * Any failure or abort (cancelled RPC, SIGTERM) aborts the staging: only a complete backup
 * ever appears. Stored bytes are reached only through the agent's BackupStore (store.ts). The result is Completed, PartiallyFailed (warnings) or
 * Failed with a stable error code and a message a person can act on.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import {
  MANIFEST_FILE,
  BoxbackError,
  asBoxbackError,
  backupId as makeBackupId,
  emptyResult,
  hashFile,
  limiter,
  mapLimit,
  refPath,
  storeLocation,
  PARTS_DIR,
  PartWriter,
  STAGE_DIR,
  buildManifest,
  collectFiles,
  manifestPieces,
  type BackupRef,
  type BackupRequest,
  type BackupStaging,
  type BackupStore,
  type Consistency,
  type JobResult,
  type Manifest,
  type ManifestDataset,
  type ManifestFile,
  type ManifestPhase,
  type ManifestSink,
  type ManifestTree,
  type QuiesceMode,
  type TreeSyncResult,
} from '@boxback/common';
import type { JobContext, ProgressUpdate } from '../job.js';
import { agentStore, localBackupDir, localHostDir } from '../store.js';
import type { PlanDataset, PlanTree } from '../plan.js';
import { readInstalledVersion } from '../product-version.js';
import { besideStopMs, prefetchWindow, recordStopTime } from './prefetch.js';
import type { BackupEnv, PhaseHandle } from '../datasets/driver.js';
import { driverOf } from '../datasets/registry.js';
import { diskFullMessage } from './disk-full.js';
import { gocdEnv, runHooks } from './hooks.js';
import { enterQuiesce, runInWindow, runningServices } from './quiesce.js';
import { QuiesceLease } from './quiesce-record.js';
import type { TreeSnapshot } from '../journal/index.js';
import { BLOCKS_FILE, readBlockIndex, writeBlockIndex, type BlockIndex, type ReuseSource } from './zip-blocks.js';
import { readArchiveCache, stageArchiveCache, type StagedCache } from './archive-cache.js';

const DATASET_PHASES: Record<string, string> = {
  database: 'BACKUP_DATABASE',
  config: 'BACKUP_CONFIG',
  'wrapper-config': 'BACKUP_WRAPPER_CONFIG',
  'config-repo': 'BACKUP_CONFIG_REPO',
};
/**
 * The largest manifest sent back in JobResult.manifestJson. A larger one (a 100k-file tree
 * makes tens of MB) is left empty: the controller reads <store>/<backupPath>/manifest.json.
 */
export const MANIFEST_SEND_LIMIT = 1 << 20;
const upper = (name: string) => name.toUpperCase().replace(/[^A-Z0-9]+/g, '_');
export const datasetPhase = (name: string): string => DATASET_PHASES[name] ?? `BACKUP_${upper(name)}`;
export const probePhase = (name: string): string => `PROBE_${upper(name)}`;
export const treePhase = (t: PlanTree): string => t.phase ?? `SYNC_${upper(t.name)}`;

/** Runs phases: progress events, timings for the manifest, the step that failed. */
class Phases {
  readonly done: ManifestPhase[] = [];
  /** The first phase that failed on its own (the one the result, the job and the progress name). */
  failedStep = '';
  private failures = 0;
  constructor(private readonly ctx: JobContext) {}

  async run<T>(name: string, fn: (h: PhaseHandle) => Promise<T>, message?: string): Promise<T> {
    const startedAt = new Date();
    const failuresAtStart = this.failures;
    let last: Omit<ProgressUpdate, 'phase' | 'state'> = {};
    this.ctx.emit({ phase: name, state: 'started', message });
    const h: PhaseHandle = {
      update: (u) => {
        last = { ...last, ...u };
        this.ctx.emit({ phase: name, state: 'running', ...last });
      },
    };
    const record = (state: ManifestPhase['state']) => {
      const endedAt = new Date();
      this.done.push({
        name,
        state,
        startedAt: startedAt.toISOString(),
        endedAt: endedAt.toISOString(),
        durationMs: endedAt.getTime() - startedAt.getTime(),
        bytes: last.bytesDone ?? 0,
        files: last.filesDone ?? 0,
      });
    };
    try {
      const out = await fn(h);
      record('done');
      this.ctx.emit({
        phase: name,
        state: 'done',
        ...last,
        bytesDone: last.bytesTotal || last.bytesDone,
        filesDone: last.filesTotal || last.filesDone,
      });
      return out;
    } catch (err) {
      record('failed');
      // Another phase failed while this one ran (the other lane): this one was stopped, it did not fail.
      const stopped = this.failures > failuresAtStart;
      const own = asBoxbackError(err).message;
      if (!stopped) {
        this.failures++;
        this.failedStep ||= name;
      }
      const message = stopped ? `stopped: ${this.failedStep} failed${own ? ` (${own})` : ''}` : own;
      this.ctx.emit({ phase: name, state: stopped ? 'stopped' : 'failed', ...last, message });
      throw err;
    }
  }

  skip(name: string, message: string): void {
    this.ctx.emit({ phase: name, state: 'skipped', message });
  }
}

/** Everything one backup run knows. */
interface Run {
  ctx: JobContext;
  req: BackupRequest;
  phases: Phases;
  startedAt: Date;
  ts: string;
  tempDir: string;
  mode: QuiesceMode;
  consistency: Consistency;
  windowMs: number;
  /** The consistent copy's share of the window. */
  copyMs: number;
  /** The service's own share of it: its stop (or entering maintenance) and its start (or leaving it). */
  stopMs: number;
  startMs: number;
  version: string | null;
  warnings: string[];
  /** rel path -> SHA-256 of files hashed as they were written. */
  known: Map<string, string>;
  /** Those of them whose bytes were already read back and compared as they were written (zip archives). */
  readBack: Set<string>;
  datasets: ManifestDataset[];
  trees: ManifestTree[];
  /** Dataset name -> what its driver copied inside the window. */
  captured: Map<string, unknown>;
  /** Removals of window copies already archived (backupDataset), awaited before the stage's own removal. */
  unstaged: Promise<void>[];
  /** Absolute paths of the files this backup wrote (the rest are hard links to the previous one); undefined: too many to list. */
  written: string[] | undefined;
  /** Its directories, likewise. */
  dirs: string[] | undefined;
  /** Tree dir -> what storing it found (its manifest lines are in its part file), and the part file. */
  treeFiles: Map<string, { res: TreeSyncResult; part: string }>;
  /** The manifest's file list, in order: part files of manifest lines (top level first, then each tree). */
  parts: string[];
  /** The host's newest complete backup: trees link to it, archives reuse its blocks. */
  previous?: BackupRef;
  /** This backup, being written (store.begin). */
  staging?: BackupStaging;
  /** The previous backup's archives, by name, with their compressed blocks (zip-blocks.ts). */
  reuse: Map<string, ReuseSource>;
  /** This backup's block index, written next to its archives. */
  blocks: BlockIndex;
  /** Trees whose change journal was cut for this backup (sealed after PUBLISH, else abandoned). */
  snapshotted: string[];
}

export async function runBackup(ctx: JobContext, req: BackupRequest): Promise<JobResult> {
  const { config } = ctx;
  const plan = config.plan;
  const live = req.live || plan.quiesce.mode === 'none';
  const r: Run = {
    ctx,
    req,
    phases: new Phases(ctx),
    startedAt: new Date(),
    ts: '',
    tempDir: '',
    mode: live ? 'none' : plan.quiesce.mode,
    consistency: live ? 'live' : 'quiesced',
    windowMs: 0,
    copyMs: 0,
    stopMs: 0,
    startMs: 0,
    version: null,
    warnings: [],
    known: new Map(),
    readBack: new Set(),
    datasets: [],
    trees: [],
    treeFiles: new Map(),
    written: [],
    dirs: [],
    parts: [],
    captured: new Map(),
    unstaged: [],
    snapshotted: [],
    reuse: new Map(),
    blocks: {},
  };
  let error: BoxbackError | undefined;
  let finalRef: BackupRef | undefined;
  let manifestJson = '';
  let manifest: Manifest | undefined;
  let publishAt = 0;
  let cache: StagedCache | undefined;
  const lanes = new Lanes(r);
  try {
    ctx.signal.throwIfAborted();
    await preBackupHooks(r);
    await creatingDir(r);
    await quiesceAndCapture(r, () => lanes.copied());
    await archivesAndTrees(r, lanes);
    await versionFile(r);
    manifest = await describe(r);
    manifest.completedAt = new Date().toISOString();
    manifest.phases = [...r.phases.done];
    const m = manifest;
    const published = await r.phases.run('PUBLISH', async (h) => {
      h.update({ message: 'flushing to disk' });
      const wrote = r.written && r.dirs ? { files: r.written, dirs: r.dirs } : undefined;
      publishAt = Date.now();
      // Not a local store: the block-indexed archives are kept on this box for the next backup's reuse.
      if (agentStore(config).describe().kind !== 'local')
        cache = await stageArchiveCache(config.stateDir, ctx.jobId, r.tempDir, r.blocks, r.known, ctx.log);
      return r.staging!.commit(manifestPieces(m, r.parts), wrote);
    });
    finalRef = published.ref;
    await cache?.keep(finalRef);
    ctx.log.debug({ ms: Date.now() - publishAt, manifestBytes: published.manifestBytes }, 'backup committed to the store');
    // A large manifest stays in the store: the controller reads it from there.
    if (published.manifestBytes <= MANIFEST_SEND_LIMIT) manifestJson = await agentStore(config).readManifestText(finalRef);
  } catch (err) {
    await lanes.cancel(err);
    error = explain(r, err);
    ctx.log.error({ code: error.code, err: error.message, step: r.phases.failedStep }, 'backup failed');
  } finally {
    if (!finalRef) await Promise.all([r.staging?.abort(), cache?.drop()]);
  }
  const sealAt = Date.now();
  await settleJournals(r, finalRef);
  const finalDir = finalRef && localBackupDir(config, finalRef);
  if (r.snapshotted.length) ctx.log.debug({ ms: Date.now() - sealAt, trees: r.snapshotted }, 'change journals settled');
  const hookError = await postBackupHooks(r, Boolean(finalRef), finalDir, error);
  const id = r.ts ? makeBackupId(config.name, r.ts) : '';
  const result: JobResult = {
    ...emptyResult(ctx.jobId),
    durationMs: Date.now() - r.startedAt.getTime(),
    warnings: r.warnings,
    failedStep: r.phases.failedStep,
  };
  if (error || !finalRef || !manifest) {
    const e = error ?? new BoxbackError('BOXBACK_ERR_INTERNAL', 'backup ended without a result');
    return { ...result, status: 'Failed', errorCode: e.code, errorMessage: e.message };
  }
  ctx.log.info({ backupId: id, dir: finalDir, bytes: manifest.totals.bytes, windowMs: r.windowMs }, 'backup published');
  return {
    ...result,
    status: r.warnings.length || hookError ? 'PartiallyFailed' : 'Completed',
    backupId: id,
    backupPath: refPath(finalRef),
    sizeBytes: manifest.totals.bytes,
    manifestJson,
    errorCode: hookError?.code ?? '',
    errorMessage: hookError?.message ?? '',
  };
}

/** Turn whatever stopped the backup into the error a person can act on. */
function explain(r: Run, err: unknown): BoxbackError {
  const { ctx } = r;
  const resumed = r.consistency === 'quiesced' ? '; services were resumed' : '';
  if (ctx.signal.aborted) {
    const why = asBoxbackError(ctx.signal.reason);
    return new BoxbackError('BOXBACK_ERR_CANCELLED', `backup cancelled (${why.message})${resumed}; the partial backup was removed`);
  }
  const be = asBoxbackError(err);
  if (be.code === 'BOXBACK_ERR_DISK_FULL') {
    const message = diskFullMessage({
      store: storeLocation(ctx.config.store),
      host: ctx.config.name,
      step: r.phases.failedStep,
      raw: be.message,
      resumed,
    });
    return new BoxbackError('BOXBACK_ERR_DISK_FULL', message, be.details, { cause: err });
  }
  const step = r.phases.failedStep ? `${r.phases.failedStep}: ` : '';
  return new BoxbackError(be.code, `${step}${be.message}${r.tempDir ? '; the partial backup was removed' : ''}`, be.details, {
    cause: err,
  });
}

async function preBackupHooks(r: Run): Promise<void> {
  const steps = r.ctx.config.plan.hooks.preBackup;
  if (steps.length === 0) return;
  await r.phases.run('PRE_BACKUP_SCRIPT', async (h) => {
    const out = await runHooks('pre-backup', steps, {
      log: r.ctx.log,
      signal: r.ctx.signal,
      env: { BOXBACK_HOST: r.ctx.config.name, BOXBACK_JOB_ID: r.ctx.jobId },
      onStep: (i, argv) => h.update({ filesDone: i, filesTotal: steps.length, message: argv.join(' ') }),
    });
    r.warnings.push(...out.warnings);
    if (out.failure) throw out.failure;
  });
}

async function creatingDir(r: Run): Promise<void> {
  const { config, log, jobId } = r.ctx;
  await r.phases.run('CREATING_DIR', async () => {
    const t0 = Date.now();
    const store = agentStore(config, log);
    const [version, backups] = await Promise.all([readInstalledVersion(config.plan), store.listBackups(config.name)]);
    r.version = version;
    r.previous = backups.at(-1);
    const t1 = Date.now();
    // The previous backup's block index (never throws: nothing to reuse) is read while the
    // staging is made. A local store's from the store; another store's from this box's archive
    // cache (archive-cache.ts): reading the previous archive's blocks back from a bucket
    // measured slower than deflating them (store-s3-performance.md, session 19: 2.69 vs 1.99 s
    // for 64 MiB), and on a remote store it would download most of the archive at every backup.
    const prev = r.previous;
    const local = store.describe().kind === 'local';
    let previousIndexMs = 0;
    const reuse = prev
      ? (local
          ? storedSha(store, prev, BLOCKS_FILE).then((sha) => readBlockIndex(store, prev, sha))
          : readArchiveCache(config.stateDir, prev)
        ).finally(() => (previousIndexMs = Date.now() - t1))
      : undefined;
    r.staging = await store.begin({ host: config.name, startedAt: r.startedAt, jobId, log, signal: r.ctx.signal });
    const createMs = Date.now() - t1;
    r.ts = r.staging.ref.timestamp;
    r.tempDir = r.staging.dir;
    if (reuse) r.reuse = await reuse;
    log.debug({ lookupMs: t1 - t0, previousIndexMs, createMs }, 'backup directory created');
  });
}

/**
 * The SHA-256 the manifest of `ref` lists for top-level file `rel`, read from the manifest's
 * first lines (top-level files come first: a 100k-file manifest is not read whole).
 */
async function storedSha(store: BackupStore, ref: BackupRef, rel: string): Promise<string | undefined> {
  const needle = `"path":${JSON.stringify(rel)}`;
  try {
    const input = await store.openFile(ref, MANIFEST_FILE);
    const rl = createInterface({ input, crlfDelay: Infinity });
    try {
      for await (const line of rl) {
        if (line.includes(needle)) return (JSON.parse(line.trim().replace(/,$/, '')) as ManifestFile).sha256;
        if (/"path":"[^"]*\//.test(line)) break; // the trees' entries: the top level is over
      }
    } finally {
      rl.close();
      input.destroy();
    }
  } catch {
    /* no readable manifest: nothing to reuse */
  }
  return undefined;
}

/**
 * QUIESCE and RESUME: the window covers only the consistent copies (r.captured). `copied` is
 * called once they are taken, before the services are started again.
 */
async function quiesceAndCapture(r: Run, copied: () => void): Promise<void> {
  const { ctx } = r;
  const plan = ctx.config.plan;
  if (r.consistency === 'live') {
    r.phases.skip('QUIESCE', 'live backup: services are not quiesced');
    return;
  }
  const windowSets = plan.datasets.filter((d) => driverOf(d).needsWindow(d));
  // The window is what the service's users see: from its stop to its start being done (the
  // lease record written before and removed after are not part of it).
  let stopAt = 0;
  let lease: QuiesceLease | undefined;
  let primary: unknown;
  try {
    await r.phases.run('QUIESCE', async (h) => {
      // The window's datasets into the page cache: before the stop, its rest beside it (prefetch.ts).
      const readAt = Date.now();
      let readyAt = 0;
      let canStop!: () => void;
      const stoppable = new Promise<void>((resolve) => (canStop = resolve));
      h.update({ message: "reading the window's datasets into the page cache" });
      const ms = besideStopMs();
      const reading = prefetchWindow(windowSets, ctx.signal, undefined, {
        ms,
        onReady: () => {
          readyAt = Date.now();
          canStop();
        },
      }).then((read) => {
        const besideMs = Date.now() - readyAt;
        ctx.log.debug({ ...read, ms: Date.now() - readAt, besideStopMs: besideMs }, "window's datasets read before the window's copy");
      });
      reading.catch(() => undefined); // awaited below, unless the stop fails first
      // onReady comes at the latest when the read ends, also when it was cancelled: nothing is
      // stopped for a cancelled job.
      await stoppable;
      ctx.signal.throwIfAborted();
      const services = r.mode === 'stop' ? await runningServices(plan) : [];
      lease = await QuiesceLease.acquire({ config: ctx.config, jobId: ctx.jobId, mode: r.mode, services, log: ctx.log });
      const signal = AbortSignal.any([ctx.signal, lease.expired]);
      h.update({
        message: r.mode === 'stop' ? `stopping ${services.join(', ') || 'nothing (no service is running)'}` : 'entering maintenance mode',
      });
      stopAt = Date.now();
      try {
        await enterQuiesce(plan, r.mode, ctx.log, signal, services);
        r.stopMs = Date.now() - stopAt;
      } catch (err) {
        if (plan.quiesce.onError !== 'continue' || signal.aborted) throw err;
        const msg = `could not quiesce (${asBoxbackError(err).message}); took a live backup instead (quiesce.onError: continue)`;
        ctx.log.warn(msg);
        r.warnings.push(msg);
        r.consistency = 'live';
        return;
      }
      await runInWindow(plan, ctx.log, signal, r.warnings);
      await reading;
      recordStopTime(r.stopMs);
      const c0 = Date.now();
      const deadlineMs = lease.record.deadlineMs;
      let done = 0;
      await mapLimit(windowSets, 4, async (d) => {
        signal.throwIfAborted();
        const started = Date.now();
        const env = {
          stageRoot: path.join(r.tempDir, STAGE_DIR),
          tempDir: r.tempDir,
          signal,
          timeoutMs: Math.max(1000, deadlineMs - Date.now()),
          log: ctx.log,
          progress: (message: string) => h.update({ message }),
        };
        r.captured.set(d.name, await driverOf(d).captureInWindow?.(d, plan.datasets.indexOf(d), env));
        ctx.log.debug({ dataset: d.name, ms: Date.now() - started }, 'dataset copied in the window');
        h.update({ filesDone: ++done, filesTotal: windowSets.length, message: `copied ${d.name}` });
      });
      r.copyMs = Date.now() - c0;
    });
    if (r.consistency === 'quiesced') copied();
  } catch (err) {
    primary = lease?.expired.aborted && !ctx.signal.aborted ? lease.expired.reason : err;
  } finally {
    if (lease) {
      const l = lease;
      const startAt = Date.now();
      await r.phases
        .run('RESUME', () => l.release(), r.mode === 'stop' ? 'starting services' : 'leaving maintenance mode')
        .catch((err: unknown) => {
          const be = asBoxbackError(err, 'BOXBACK_ERR_RESUME_FAILED');
          const resumeErr = new BoxbackError('BOXBACK_ERR_RESUME_FAILED', `services could not be resumed: ${be.message}; check them now`);
          if (primary) ctx.log.error({ err: resumeErr.message }, 'resume failed after another failure');
          primary ??= resumeErr;
        });
      if (l.resumedAtMs >= startAt) r.startMs = l.resumedAtMs - startAt;
      if (stopAt) r.windowMs = (l.resumedAtMs || Date.now()) - stopAt;
    }
  }
  if (primary) throw primary;
  ctx.log.info(
    { windowMs: r.windowMs, copyMs: r.copyMs, stopMs: r.stopMs, startMs: r.startMs, datasets: windowSets.map((d) => d.name) },
    'quiesce window closed',
  );
}

/**
 * The two lanes of a backup: archives (2 at a time, then VERIFY) and trees (2 at a time). As
 * soon as the window's copy is done, beside the services' start: the trees lane (the trees are
 * not part of the window) and the archives of what the window copied (they are zipped from the
 * stage, not from the service's files); the other archives (a pg_dump needs its server, a live
 * zip reads the running service's files) once the services run again. The first failure stops
 * both lanes.
 */
class Lanes {
  private readonly stop = new AbortController();
  readonly signal: AbortSignal;
  private trees?: Promise<void>;
  /** Archives started from the stage beside RESUME, and their datasets' names. */
  private early?: Promise<void>;
  readonly earlyNames = new Set<string>();
  private readonly archiveSlots = limiter(2);

  constructor(private readonly r: Run) {
    this.signal = AbortSignal.any([r.ctx.signal, this.stop.signal]);
  }

  /** The first failure of either lane. */
  get failure(): unknown {
    return this.stop.signal.reason;
  }

  async guard(fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.stop.abort(err);
      throw err;
    }
  }

  /** The window's copy is done: the trees, and the archives of what was copied. */
  copied(): void {
    void this.startTrees();
    if (this.early) return;
    const staged = this.r.ctx.config.plan.datasets.filter((d) => this.r.captured.has(d.name));
    for (const d of staged) this.earlyNames.add(d.name);
    this.early = this.guard(() => this.archives(staged));
    this.early.catch(() => undefined); // awaited by archivesAndTrees, or by cancel
  }

  /** Back up `datasets`, at most 2 archives at a time across both calls. */
  archives(datasets: PlanDataset[]): Promise<unknown> {
    // A failed archive stops the lanes before its slot goes to the next one (which then starts nothing).
    return Promise.all(datasets.map((d) => this.archiveSlots(() => this.guard(() => backupDataset(this.r, d, this.signal)))));
  }

  /** The archives started beside RESUME (none when nothing was copied in a window). */
  earlyArchives(): Promise<void> {
    return this.early ?? Promise.resolve();
  }

  /** Start the trees lane (once). */
  startTrees(): Promise<void> {
    if (!this.trees) {
      // Two trees at a time: a small tree's sync is mostly rsync start-ups and fsyncs, not CPU.
      this.trees = this.guard(() => mapLimit(this.r.ctx.config.plan.trees, 2, (t, i) => syncOneTree(this.r, t, i, this.signal)));
      this.trees.catch(() => undefined); // awaited by archivesAndTrees, or by cancel
    }
    return this.trees;
  }

  /** After a failure elsewhere: stop the trees lane and wait for it (the temporary directory goes next). */
  async cancel(err: unknown): Promise<void> {
    this.stop.abort(err);
    await Promise.all([this.trees?.catch(() => undefined), this.early?.catch(() => undefined)]);
  }
}

async function archivesAndTrees(r: Run, lanes: Lanes): Promise<void> {
  const { signal } = lanes;
  const results = await Promise.allSettled([
    // Each archive is read back and re-hashed (VERIFY) as soon as the archives are written, while the trees may still sync.
    lanes.guard(async () => {
      signal.throwIfAborted(); // the trees lane may have failed already (a full store): start nothing
      const started = lanes.earlyArchives();
      await Promise.all([started, lanes.archives(r.ctx.config.plan.datasets.filter((d) => !lanes.earlyNames.has(d.name)))]);
      await verify(r, signal);
    }),
    lanes.startTrees(),
  ]);
  const failed = results.find((x): x is PromiseRejectedResult => x.status === 'rejected');
  if (failed) throw lanes.failure ?? failed.reason;
  r.reuse.clear();
  const index = await writeBlockIndex(r.tempDir, r.blocks);
  if (index) {
    if ((await hashFile(path.join(r.tempDir, BLOCKS_FILE))) !== index.sha256)
      throw new BoxbackError(
        'BOXBACK_ERR_VERIFY_FAILED',
        `${BLOCKS_FILE} reads back with a different SHA-256 than was written: the store's disk may be failing`,
      );
    r.known.set(BLOCKS_FILE, index.sha256);
  }
  await Promise.all(r.unstaged);
  await fsp.rm(path.join(r.tempDir, STAGE_DIR), { recursive: true, force: true });
}

/** One dataset by its driver: the archive, its manifest entry, then its consistency probe. */
async function backupDataset(r: Run, d: PlanDataset, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  const driver = driverOf(d);
  const index = r.ctx.config.plan.datasets.indexOf(d);
  const env: BackupEnv = {
    tempDir: r.tempDir,
    stageRoot: path.join(r.tempDir, STAGE_DIR),
    jobId: r.ctx.jobId,
    signal,
    log: r.ctx.log,
    live: r.consistency === 'live',
    reuse: r.reuse,
    phase: (fn) => r.phases.run(datasetPhase(d.name), fn),
  };
  const wasStaged = r.captured.has(d.name);
  const out = await driver.backup(d, index, env, r.captured.get(d.name));
  r.captured.delete(d.name);
  r.known.set(out.entry.archive, out.sha256);
  if (out.readBack) r.readBack.add(out.entry.archive);
  if (out.blocks) r.blocks[out.entry.archive] = out.blocks as BlockIndex[string];
  const entry = { ...out.entry, owner: out.entry.owner ?? d.owner };
  if (driver.probe) {
    const probe = driver.probe;
    const started = Date.now();
    await r.phases.run(probePhase(d.name), async (h) => {
      h.update({ message: `opening ${entry.archive} in its engine` });
      try {
        const res = await probe(d, index, entry, { tempDir: r.tempDir, stageRoot: env.stageRoot, signal, log: r.ctx.log });
        if (res) entry.probe = { ...res, durationMs: Date.now() - started };
      } catch (err) {
        const be = asBoxbackError(err, 'BOXBACK_ERR_PROBE_FAILED');
        r.ctx.log.error({ dataset: d.name, err: be.message, durationMs: Date.now() - started }, 'consistency probe failed');
        throw be;
      }
    });
  }
  // Its window copy is archived (and probed): removed now, beside the other archives and the
  // trees, rather than all copies after the lanes, on the way to PUBLISH. A failure here is
  // the stage's own removal's to report (archivesAndTrees).
  if (wasStaged) r.unstaged.push(fsp.rm(path.join(env.stageRoot, d.name), { recursive: true, force: true }).catch(() => undefined));
  if (entry.capture === 'live-unverified')
    r.ctx.log.warn(
      { dataset: d.name },
      `dataset ${d.name} was copied while its service ran and nothing proves the copy opens (live-unverified); give it an engine driver or back it up quiesced`,
    );
  r.datasets.push(entry);
}

/** Store-relative path of the previous backup ("host/backup_ts"), as the journal names it. */
function previousRel(r: Run): string | undefined {
  return r.previous ? refPath(r.previous) : undefined;
}

/** Cut the tree's change journal: trusted (sync only what changed) or why a full pass. */
async function journalSnapshot(r: Run, t: PlanTree): Promise<TreeSnapshot> {
  const journals = r.ctx.journals;
  if (!journals) return { trusted: false, reason: 'this agent process runs without change journals', changed: [], since: '' };
  try {
    const snap = await journals.snapshot(t.name, previousRel(r));
    r.snapshotted.push(t.name);
    return snap;
  } catch (err) {
    return { trusted: false, reason: `the change journal could not be read: ${(err as Error).message}`, changed: [], since: '' };
  }
}

async function syncOneTree(r: Run, t: PlanTree, index: number, signal: AbortSignal): Promise<void> {
  const dir = t.dir ?? t.name;
  const snap = await journalSnapshot(r, t);
  const trusted = snap.trusted && !!r.previous;
  const reason = snap.trusted && !r.previous ? 'there is no previous backup to link against' : snap.reason;
  const message = trusted ? `${snap.changed.length} changed paths since ${snap.since}` : `full rsync pass: ${reason}`;
  r.ctx.log.info(
    {
      tree: t.name,
      mode: trusted ? 'journal' : 'full',
      changedPaths: trusted ? snap.changed.length : undefined,
      since: snap.since || undefined,
      reason: trusted ? undefined : reason,
    },
    `tree ${t.name}: ${message}`,
  );
  // The store syncs the tree (hard links / the journal's paths only) and describes it into its part file.
  const res = await r.phases.run(
    treePhase(t),
    async (h) => {
      const part = await PartWriter.create(path.join(r.tempDir, PARTS_DIR, `tree-${index}.jsonl`));
      let synced: TreeSyncResult;
      try {
        synced = await r.staging!.syncTree({
          dir,
          source: t.source,
          excludes: t.excludes,
          previous: r.previous,
          changed: trusted ? snap.changed : undefined,
          fullReason: trusted ? undefined : reason,
          out: part,
          signal,
          onProgress: (p) => h.update({ ...p, message: p.message ?? message }),
        });
      } finally {
        await part.close();
      }
      r.treeFiles.set(dir, { res: synced, part: part.file });
      return synced;
    },
    message,
  );
  r.warnings.push(...res.warnings);
  r.trees.push({
    name: t.name,
    dir,
    source: t.source,
    owner: t.owner,
    files: 0,
    bytes: 0,
    linkedFiles: 0,
    syncMode: res.mode,
    ...(res.mode === 'full' ? { syncReason: res.reason } : { changedPaths: snap.changed.length }),
  });
}

/**
 * After PUBLISH: each journal now follows the new backup (and starts preparing the next
 * link farm). After a failure: the snapshots are abandoned, their changes stay for the next
 * backup. A seal that fails only costs the next backup a full pass.
 */
async function settleJournals(r: Run, finalRef: BackupRef | undefined): Promise<void> {
  const journals = r.ctx.journals;
  if (!journals) return;
  if (!finalRef) {
    for (const tree of r.snapshotted) journals.abandoned(tree);
    return;
  }
  const ref = finalRef;
  // Each tree's journal is its own file (rewritten, fsynced, renamed): sealed side by side.
  await Promise.all(
    r.snapshotted.map(async (tree) => {
      try {
        await journals.sealed(tree, refPath(ref));
        const t = r.ctx.config.plan.trees.find((x) => x.name === tree);
        // The store prepares what the next journaled sync of this tree needs (local: its link farm).
        if (t) agentStore(r.ctx.config).prepareNext?.(ref.host, ref, tree, t.dir ?? t.name);
      } catch (err) {
        r.ctx.log.warn(
          { tree, err: (err as Error).message },
          `sealing the change journal of ${tree} failed; its next backup makes a full rsync pass`,
        );
        journals.abandoned(tree);
      }
    }),
  );
}

async function versionFile(r: Run): Promise<void> {
  if (r.version === null) {
    r.phases.skip('BACKUP_VERSION_FILE', 'the plan names no product version');
    return;
  }
  const v = r.version;
  await r.phases.run('BACKUP_VERSION_FILE', async (h) => {
    await fsp.writeFile(r.staging!.pathFor('version.txt'), v, { mode: 0o644 });
    const n = Buffer.byteLength(v);
    r.known.set('version.txt', await hashFile(path.join(r.tempDir, 'version.txt')));
    h.update({ bytesDone: n, filesDone: 1, filesTotal: 1 });
  });
}

/** Where an archive's compressed blocks start and end (the store cuts its blobs there), ascending; undefined without blocks. */
function blockCuts(entries: BlockIndex[string] | undefined): number[] | undefined {
  if (!entries) return undefined;
  const cuts = new Set<number>();
  for (const blocks of Object.values(entries))
    for (const [, , offset, csize] of blocks) {
      cuts.add(offset);
      cuts.add(offset + csize);
    }
  return cuts.size ? [...cuts].sort((a, b) => a - b) : undefined;
}

/** Walk the finished directory and build the manifest (hashes of new tree files are read here). */
async function describe(r: Run): Promise<Manifest> {
  const { config } = r.ctx;
  const out = await PartWriter.create(path.join(r.tempDir, PARTS_DIR, 'top.jsonl'));
  // Every top-level file described belongs to the backup (the store keeps what it is told of).
  const staging = r.staging!;
  const sink: ManifestSink = {
    add: async (e) => {
      if (e.type === 'file' && e.sha256) await staging.addFile(e.path, e.sha256, { cuts: blockCuts(r.blocks[e.path]) });
      await out.add(e);
    },
  };
  const top = await r.phases
    .run('MANIFEST', (h) =>
      collectFiles({
        dir: r.tempDir,
        known: r.known,
        treeDirs: [],
        skipDirs: r.trees.map((t) => t.dir),
        out: sink,
        signal: r.ctx.signal,
        onProgress: (p) => h.update({ ...p, message: 'describing the archives' }),
      }),
    )
    .finally(() => out.close());
  const col = { entries: top.entries, files: top.files, bytes: top.bytes, hashedBytes: top.hashedBytes, reusedHashes: 0 };
  r.written = top.written;
  r.dirs = top.dirs;
  const parts = [out.file];
  // In plan order (the trees are synced side by side, and finish in any order).
  const planOrder = new Map(config.plan.trees.map((t, i) => [t.name, i]));
  r.trees.sort((a, b) => planOrder.get(a.name)! - planOrder.get(b.name)!);
  for (const t of r.trees) {
    const { res: tc, part } = r.treeFiles.get(t.dir)!;
    Object.assign(t, { files: tc.files, bytes: tc.bytes, linkedFiles: tc.linkedFiles });
    parts.push(part);
    col.entries += tc.entries;
    col.files += tc.files;
    col.bytes += tc.bytes;
    col.hashedBytes += tc.hashedBytes;
    col.reusedHashes += tc.reusedHashes;
  }
  r.parts = parts;
  r.treeFiles.clear();
  const order = new Map(config.plan.datasets.map((d, i) => [d.name, i]));
  r.datasets.sort((a, b) => order.get(a.name)! - order.get(b.name)!);
  const sum = (xs: number[]) => xs.reduce((s, x) => s + x, 0);
  r.ctx.log.info(
    {
      files: col.files,
      hashedBytes: col.hashedBytes,
      reusedHashes: col.reusedHashes,
      linked: sum(r.trees.map((t) => t.linkedFiles)),
    },
    'manifest built',
  );
  return buildManifest({
    id: makeBackupId(config.name, r.ts),
    host: config.name,
    timestamp: r.ts,
    createdAt: r.startedAt.toISOString(),
    completedAt: '',
    origin: 'boxback',
    plan: { name: config.plan.name, product: config.plan.product },
    product: { name: config.plan.product, version: r.version },
    source: { hostname: config.hostname, addresses: config.addresses },
    consistency: r.consistency,
    quiesce:
      r.consistency === 'live'
        ? { mode: 'none', windowMs: 0 }
        : { mode: r.mode, windowMs: r.windowMs, copyMs: r.copyMs, stopMs: r.stopMs, startMs: r.startMs },
    initiatedBy: r.req.initiatedBy || undefined,
    initiatedVia: r.req.initiatedVia || undefined,
    previous: previousRel(r),
    phases: [],
    datasets: r.datasets,
    trees: r.trees,
    files: [],
    totals: { files: col.files, bytes: col.bytes },
    warnings: r.warnings,
  });
}

/**
 * Re-read every archive written and compare with the hash taken while writing it; a zip was
 * read back write by write as it was written (zip-writer.ts) and is not read again.
 */
async function verify(r: Run, signal: AbortSignal): Promise<void> {
  // Every archive is still there (a read-back one too); the others are read again.
  const sizes = new Map(
    await Promise.all([...r.known.keys()].map(async (rel) => [rel, (await fsp.stat(path.join(r.tempDir, rel))).size] as const)),
  );
  const items = [...r.known.entries()].filter(([rel]) => !r.readBack.has(rel));
  const bytesTotal = items.reduce((s, [rel]) => s + sizes.get(rel)!, 0);
  const message = r.readBack.size ? `${r.readBack.size} archives were read back as they were written` : undefined;
  await r.phases.run(
    'VERIFY',
    async (h) => {
      let bytesDone = 0;
      let filesDone = 0;
      let last = 0;
      await mapLimit(items, 2, async ([rel, sha]) => {
        signal.throwIfAborted();
        const got = await hashFile(path.join(r.tempDir, rel), (n) => {
          bytesDone += n;
          if (Date.now() - last > 250) {
            last = Date.now();
            h.update({ bytesDone, bytesTotal, filesDone, filesTotal: items.length });
          }
        });
        if (got !== sha)
          throw new BoxbackError(
            'BOXBACK_ERR_VERIFY_FAILED',
            `${rel} reads back with a different SHA-256 than was written: the store's disk may be failing`,
          );
        filesDone++;
      });
      h.update({ bytesDone, bytesTotal, filesDone, filesTotal: items.length, message });
    },
    message,
  );
}

/** POST_BACKUP_SCRIPT: on success and on failure. Returns the error of a failed `fail` hook. */
async function postBackupHooks(
  r: Run,
  committed: boolean,
  finalDir: string | undefined,
  error: BoxbackError | undefined,
): Promise<BoxbackError | undefined> {
  const { config, log, jobId } = r.ctx;
  const steps = config.plan.hooks.postBackup;
  if (steps.length === 0) return undefined;
  const env = gocdEnv({
    at: r.startedAt,
    success: committed && !error, // on S3 there is no directory: success is the commit
    baseDir: localHostDir(config) ?? '',
    backupPath: finalDir,
    initiatedBy: r.req.initiatedBy,
    initiatedVia: r.req.initiatedVia,
    backupId: r.ts ? makeBackupId(config.name, r.ts) : '',
    host: config.name,
    jobId,
    error: error?.message,
  });
  try {
    const out = await r.phases.run('POST_BACKUP_SCRIPT', async (h) =>
      runHooks('post-backup', steps, {
        env,
        log,
        onStep: (i, argv) => h.update({ filesDone: i, filesTotal: steps.length, message: argv.join(' ') }),
      }),
    );
    r.warnings.push(...out.warnings);
    if (out.failure) r.warnings.push(out.failure.message);
    return out.failure;
  } catch (err) {
    const be = asBoxbackError(err, 'BOXBACK_ERR_HOOK_FAILED');
    r.warnings.push(be.message);
    return be;
  }
}
