/**
 * A tree of a backup in a local store (BackupStaging.syncTree): stored as a complete
 * directory whose unchanged files are hard links to the host's previous backup, then
 * described into the caller's manifest sink.
 *
 *   1. choose: the journal's changed paths are trusted (`changed` given) and the previous
 *      backup holds the tree -> journaled; else a full rsync pass (and why)
 *   2. journaled: the previous tree's hard-link farm (prepared in the background after the
 *      previous backup, link-farm.ts, or linked now), then only the changed paths synced
 *      (incremental-sync.ts); any failure but a cancel or a full disk -> a full pass instead
 *   3. full: rsync -a --delete --link-dest=<previous tree> (rsync.ts); with no previous tree
 *      and no excludes, a plain copy (tree-copy.ts; a copy that does not complete, say a file
 *      vanished under a live tree, is finished by rsync)
 *   4. describe (manifest-writer.ts): journaled, from the previous manifest's lines plus the
 *      changed roots afresh (no walk of the tree); full, a walk that takes a hard-linked
 *      file's SHA-256 from the previous manifest and hashes the rest. The previous manifest's
 *      index of checksums (read once per backup) is read for a full pass, and for a journaled
 *      one only when --link-dest linked files under its roots (new runs and reports link none)
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { asBoxbackError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { MANIFEST_FILE, type ManifestFile } from '../../manifest.js';
import type { BackupRef, ManifestSink, TreeSyncRequest, TreeSyncResult } from '../backup-store.js';
import { removeTree } from '../../remove-tree.js';
import { refPath } from '../ref.js';
import { syncTreeIncremental } from './incremental-sync.js';
import type { LinkFarms } from './link-farm.js';
import {
  PARTS_DIR,
  collectFiles,
  describeFromPrevious,
  emptyIndex,
  promoteRoots,
  type CollectResult,
  type PrevIndex,
} from './manifest-writer.js';
import { syncTree as rsyncTree } from './rsync.js';
import { COLD_COPY_STREAMS, copyTree } from './tree-copy.js';

/** The previous backup: its directory, and its manifest's index (undefined when it has no readable manifest). */
export interface PrevBackup {
  dir: string;
  /** Read on the first call (once for every tree). */
  index: () => Promise<PrevIndex | undefined>;
  /** Its manifest read once into the page cache (once for every tree), for a describe's line-by-line read later. */
  warm: () => Promise<void>;
}

export interface TreeContext {
  /** The temporary backup directory. */
  tempDir: string;
  /** The previous backup's directory and (read in the background) its manifest index. */
  previous: (ref: BackupRef | undefined) => PrevBackup | undefined;
  known: Map<string, string>;
  farms?: LinkFarms;
  log: Logger;
}

const isDir = (p: string) =>
  fsp.stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );

/**
 * Counts what went through, so a failed description can tell whether it may start over. It
 * takes lines as they are (addLine) only when the sink behind it does: a describer hands a
 * line-taking sink entries it did not parse whole.
 */
class CountingSink implements ManifestSink {
  n = 0;
  readonly addLine?: (json: string, entry: ManifestFile) => void | Promise<void>;
  constructor(private readonly out: ManifestSink) {
    const addLine = out.addLine?.bind(out);
    if (addLine)
      this.addLine = (json, entry) => {
        this.n++;
        return addLine(json, entry);
      };
  }
  add(entry: ManifestFile): void | Promise<void> {
    this.n++;
    return this.out.add(entry);
  }
}

async function journaledSync(c: TreeContext, req: TreeSyncRequest, dest: string, prevTree: string, prevRel: string, message: string) {
  const taken = c.farms ? await c.farms.take(req.dir, prevRel) : undefined;
  const farm = taken?.dir;
  const synced = await syncTreeIncremental({
    source: req.source,
    dest,
    prevTree,
    changed: req.changed!,
    excludes: req.excludes,
    farm,
    signal: req.signal,
    onProgress: (p) => req.onProgress?.({ ...p, message: `${message} (${p.step})` }),
  });
  c.log.info(
    {
      tree: req.dir,
      roots: synced.roots,
      removed: synced.removed,
      filesTransferred: synced.filesTransferred,
      bytesTransferred: synced.bytesTransferred,
      linkedUnderRoots: synced.linkedFiles,
      preparedFarm: synced.preparedFarm,
      linkMs: synced.linkMs,
      syncMs: synced.syncMs,
      copyMs: synced.copyMs,
      copiedBy: synced.copiedBy,
      dirsMs: synced.dirsMs,
    },
    `tree ${req.dir} synced from the journal`,
  );
  // The prepared farm was flushed when made: only what this sync changed needs flushing.
  return { ...synced, durableFarm: synced.preparedFarm && taken?.durable === true };
}

async function fullSync(c: TreeContext, req: TreeSyncRequest, dest: string, prevTree: string | undefined, why: string) {
  // Nothing to link against (a first backup) and nothing to exclude: a plain copy, rsync's attributes, a third of its CPU.
  if (!req.excludes?.length && !(prevTree && (await isDir(prevTree)))) {
    const startedAt = Date.now();
    try {
      await copyTree(
        req.source,
        dest,
        req.signal,
        (bytesDone) => req.onProgress?.({ bytesDone, bytesTotal: 0, filesDone: 0, filesTotal: 0, message: `full copy: ${why}` }),
        COLD_COPY_STREAMS,
      );
      c.log.info({ tree: req.dir, copyMs: Date.now() - startedAt }, `tree ${req.dir} copied (no previous tree to link against)`);
      return { warnings: [], bytesTransferred: -1 };
    } catch (err) {
      const be = asBoxbackError(err);
      if (req.signal?.aborted || be.code !== 'BOXBACK_ERR_SYNC_FAILED') throw err;
      // A file that vanished or changed type under a live tree: rsync completes the partial copy.
      c.log.info({ tree: req.dir, err: be.message }, `tree ${req.dir}: the copy did not complete; rsync finishes it`);
    }
  }
  const synced = await rsyncTree({
    source: req.source,
    dest,
    linkDest: prevTree,
    excludes: req.excludes,
    signal: req.signal,
    onProgress: (p) => req.onProgress?.({ ...p, message: `full rsync pass: ${why}` }),
  });
  c.log.info({ tree: req.dir, rsyncMs: synced.durationMs, bytesTransferred: synced.bytesTransferred }, `tree ${req.dir} synced by rsync`);
  return synced;
}

/** Store one tree; returns the result and what it wrote (for commit's flush). */
export async function syncLocalTree(c: TreeContext, req: TreeSyncRequest): Promise<TreeSyncResult & { col: CollectResult }> {
  const dest = path.join(c.tempDir, ...req.dir.split('/'));
  const prevBackup = c.previous(req.previous);
  let prevTree = prevBackup ? path.join(prevBackup.dir, ...req.dir.split('/')) : undefined;
  const noManifest = 'there is no previous backup with a readable manifest';
  let reason = req.changed ? '' : (req.fullReason ?? 'no trusted change journal');
  if (req.changed && !prevBackup) reason = noManifest;
  else if (req.changed && !(await isDir(prevTree!))) reason = `the previous backup has no ${req.dir}/ tree to link against`;
  let mode: 'full' | 'journal' = reason ? 'full' : 'journal';
  const message = mode === 'journal' ? `${req.changed!.length} changed paths` : `full rsync pass: ${reason}`;
  let warnings: string[];
  let bytesTransferred: number;
  let durableFarm = false;
  /** The previous manifest's checksums are needed: for files hard-linked under the changed roots, or a full pass. */
  let needIndex = true;
  if (mode === 'journal') {
    // The describe reads the previous manifest on the JS thread after the sync: cached meanwhile
    // (a backup starts with the manifest's pages cold; the describe awaits this read).
    void prevBackup!.warm();
    try {
      const s = await journaledSync(c, req, dest, prevTree!, refPath(req.previous!), message);
      ({ warnings, bytesTransferred, durableFarm } = s);
      // Nothing linked under the roots (new runs, new reports): every root file is hashed
      // anyway, and the untouched rest is described from the previous manifest's lines.
      needIndex = s.linkedFiles !== 0;
      if (needIndex && !(await prevBackup!.index())) {
        reason = noManifest;
        await removeTree(dest);
        mode = 'full';
      }
    } catch (err) {
      const be = asBoxbackError(err);
      if (req.signal?.aborted || be.code === 'BOXBACK_ERR_CANCELLED' || be.code === 'BOXBACK_ERR_DISK_FULL') throw err;
      // Whatever went wrong, a full pass still makes a correct tree.
      reason = `the journaled sync failed (${be.message})`;
      c.log.warn({ tree: req.dir, err: be.message }, `tree ${req.dir}: ${reason}; making a full rsync pass`);
      await removeTree(dest);
      mode = 'full';
    }
  }
  if (mode === 'full') void prevBackup?.index(); // read while rsync runs
  const index = mode === 'journal' && !needIndex ? emptyIndex() : await prevBackup?.index();
  const prev = prevBackup && index ? { dir: prevBackup.dir, index } : undefined;
  // Without a readable previous manifest nothing is linked against it (as before: a plain copy).
  if (!prev) prevTree = undefined;
  if (mode === 'full') ({ warnings, bytesTransferred } = await fullSync(c, req, dest, prevTree, reason));
  // A description that cannot use the previous manifest's lines walks the tree: with its checksums.
  const forWalk = async () => {
    const whole = needIndex ? index : await prevBackup?.index();
    return prevBackup && whole ? { dir: prevBackup.dir, index: whole } : undefined;
  };
  if (mode === 'journal') await prevBackup!.warm().catch(() => undefined); // a failed read is the describe's to report
  const col = await describeTree(c, req, mode, prev, dest, prevTree, mode === 'journal' && durableFarm, forWalk);
  if (bytesTransferred! < 0) bytesTransferred = col.bytes; // copied whole: every byte is new
  const tree = col.trees.get(req.dir) ?? { files: 0, bytes: 0, linkedFiles: 0 };
  return {
    mode,
    ...(mode === 'full' ? { reason } : {}),
    warnings: warnings!,
    entries: col.entries,
    files: col.files,
    bytes: col.bytes,
    linkedFiles: tree.linkedFiles,
    hashedBytes: col.hashedBytes,
    reusedHashes: col.reusedHashes,
    bytesTransferred: bytesTransferred!,
    col,
  };
}

async function describeTree(
  c: TreeContext,
  req: TreeSyncRequest,
  mode: 'full' | 'journal',
  prev: { dir: string; index: PrevIndex } | undefined,
  dest: string,
  prevTree: string | undefined,
  /** The tree was a flushed link farm: of its unchanged directories none needs an fsync. */
  durableFarm = false,
  /** `prev` with the whole index, for a walk of the tree (`prev` may hold only what the roots need). */
  forWalk: () => Promise<{ dir: string; index: PrevIndex } | undefined> = async () => prev,
): Promise<CollectResult> {
  const startedAt = Date.now();
  const out = new CountingSink(req.out);
  const opts = {
    dir: c.tempDir,
    subdir: req.dir,
    known: c.known,
    treeDirs: [req.dir],
    prev,
    out,
    signal: req.signal,
    onProgress: (p: { filesDone: number; filesTotal: number; bytesDone: number; bytesTotal: number }) =>
      req.onProgress?.({ ...p, message: 'checksumming new files' }),
  };
  let col: CollectResult | undefined;
  if (mode === 'journal' && prev) {
    // Only what the journal names is looked at; the rest is the previous manifest's lines.
    try {
      const roots = await promoteRoots(req.changed!, dest, prevTree!);
      const scratch = path.join(c.tempDir, PARTS_DIR, `roots-${req.dir.replace(/\//g, '_')}.jsonl`);
      col = await describeFromPrevious({ ...opts, roots, prevManifest: path.join(prev.dir, MANIFEST_FILE), scratch, durableFarm });
      c.log.info({ tree: req.dir, roots: roots.length }, `tree ${req.dir}: described from the previous manifest and the journal's roots`);
    } catch (err) {
      req.signal?.throwIfAborted();
      if (out.n > 0) throw err;
      c.log.warn({ tree: req.dir, err: (err as Error).message }, `tree ${req.dir}: described by a full walk instead`);
      opts.prev = await forWalk();
    }
  }
  col ??= await collectFiles(opts);
  c.log.info(
    { tree: req.dir, describeMs: Date.now() - startedAt, hashedBytes: col.hashedBytes, reusedHashes: col.reusedHashes },
    `tree ${req.dir} described`,
  );
  return col;
}
