/**
 * The local backend's file steps for making a backup appear only when it is complete
 * (staging.ts calls them in this order).
 *
 *   1. removeStaleTemps: `.tmp-backup_*` left by a crash or a kill are removed (they are
 *      never listed: listings only take `backup_*` directories with a manifest)
 *   2. createTempDir: `<store>/<host>/.tmp-backup_<ts>-<jobId>/`, where everything is written
 *      (the staging copy included, so it is on the store's filesystem)
 *   3. writeVersionFile: version.txt, GoCD style (no newline)
 *   4. syncToDisk: fsync what this backup wrote and every directory, or (many files) flush
 *      the store's filesystem once with syncfs
 *   5. publish: manifest.json last (write, fsync, rename), rename the directory to
 *      `backup_<ts>`, fsync the host directory
 *   on any failure or abort: removeTemp
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
// execa is imported where it runs (`await import('execa')`), not at load: @boxback/common's index loads
// this module into every process, the `boxback` CLI too, and execa's ~100 files were ~a quarter of
// each CLI run's start-up CPU (test suite, session 19).
import { fsyncDir, fsyncFile, writeFileAtomic } from '../../fs-atomic.js';
import { mapLimit } from '../../limit.js';
import { removeTree } from '../../remove-tree.js';
import type { Logger } from '../../logger.js';
import { BACKUP_DIR_RE, MANIFEST_FILE } from '../../manifest.js';
import { TEMP_PREFIX, hostDir } from './layout.js';
import { LIST_LIMIT } from './manifest-writer.js';

export { TEMP_PREFIX, hostDir } from './layout.js';

/** Remove `.tmp-backup_*` directories of this host (a crashed or killed backup's leftovers). */
export async function removeStaleTemps(store: string, host: string, log: Logger): Promise<number> {
  const dir = hostDir(store, host);
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return 0;
  }
  let n = 0;
  for (const name of names) {
    if (!name.startsWith(TEMP_PREFIX)) continue;
    log.warn({ dir: path.join(dir, name) }, 'removing an unfinished backup left by an earlier run');
    await removeTree(path.join(dir, name));
    n++;
  }
  return n;
}

/** Pick a timestamp whose `backup_<ts>` does not exist yet (two backups in one second move on by a second). */
export async function freeTimestamp(
  store: string,
  host: string,
  start: Date,
  format: (d: Date) => string,
): Promise<{ ts: string; at: Date }> {
  let at = start;
  for (let i = 0; i < 120; i++) {
    const ts = format(at);
    try {
      await fsp.lstat(path.join(hostDir(store, host), `backup_${ts}`));
    } catch {
      return { ts, at };
    }
    at = new Date(at.getTime() + 1000);
  }
  return { ts: format(at), at };
}

export async function createTempDir(store: string, host: string, ts: string, jobId: string, prefix = TEMP_PREFIX): Promise<string> {
  const parent = hostDir(store, host);
  await fsp.mkdir(parent, { recursive: true });
  const safeJob = jobId.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 60);
  const dir = path.join(parent, `${prefix}${ts}-${safeJob}`);
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { mode: 0o750 });
  return dir;
}

export async function removeTemp(dir: string, log: Logger): Promise<void> {
  try {
    await removeTree(dir);
  } catch (err) {
    log.error({ err, dir }, 'could not remove the partial backup directory; it is never listed and is removed at the next backup');
  }
}

/** version.txt as GoCD writes it: the product version, no trailing newline. */
export async function writeVersionFile(dir: string, version: string): Promise<number> {
  const file = path.join(dir, 'version.txt');
  await fsp.writeFile(file, version, { mode: 0o644 });
  return Buffer.byteLength(version);
}

async function fsyncTree(dir: string): Promise<void> {
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await fsyncTree(p);
    else if (e.isFile()) await fsyncFile(p);
  }
  await fsyncDir(dir);
}

/**
 * Up to this many files and directories are fsynced one by one; above it one syncfs is cheaper
 * (a 120k-file incremental: 18k directory fsyncs took 1.06 s, one syncfs 0.27 s).
 */
export const FSYNC_EACH_LIMIT = LIST_LIMIT;

/**
 * Everything under `dir` durably on disk. When the backup wrote few files (an incremental:
 * its trees are mostly hard links, which carry no new data), fsync exactly those files and
 * every directory. When it wrote many (a full backup), one syncfs of the store's filesystem
 * (`sync --file-system`) is far cheaper than an fsync per file, though it also flushes other
 * writers' data. Per-file fsync of the whole tree is the fallback when syncfs fails.
 */
export async function syncToDisk(
  dir: string,
  log: Logger,
  signal?: AbortSignal,
  /** What this backup wrote; undefined: too much to list (one syncfs). */
  wrote?: { files: string[]; dirs: string[] },
): Promise<'syncfs' | 'fsync' | 'fsync-written'> {
  if (wrote && wrote.files.length + wrote.dirs.length <= FSYNC_EACH_LIMIT) {
    await mapLimit(wrote.files, 16, (f) => fsyncFile(f));
    signal?.throwIfAborted();
    await mapLimit([...wrote.dirs].reverse(), 16, (d) => fsyncDir(d));
    return 'fsync-written';
  }
  const { execa } = await import('execa');
  const r = await execa('sync', ['--file-system', dir], {
    reject: false,
    stdin: 'ignore',
    timeout: 15 * 60_000,
    cancelSignal: signal,
    forceKillAfterDelay: 3000,
  });
  if (!r.failed) {
    await fsyncDir(dir);
    return 'syncfs';
  }
  signal?.throwIfAborted();
  log.warn({ output: String(r.stderr ?? '').slice(-2000) }, 'sync --file-system failed; fsyncing every file');
  await fsyncTree(dir);
  return 'fsync';
}

/**
 * Write manifest.json last (its text whole or in pieces), then rename the temporary directory
 * into place. Returns the final directory and the manifest's size in bytes.
 */
export async function publish(
  tempDir: string,
  ts: string,
  manifestText: string | Iterable<string> | AsyncIterable<string>,
  /** Working files inside tempDir that do not belong in the backup (removed once the manifest is written). */
  scratch: string[] = [],
): Promise<{ dir: string; manifestBytes: number }> {
  const manifestBytes = await writeFileAtomic(path.join(tempDir, MANIFEST_FILE), manifestText, 0o644);
  for (const p of scratch) await fsp.rm(p, { recursive: true, force: true });
  const parent = path.dirname(tempDir);
  const final = path.join(parent, `backup_${ts}`);
  if (!BACKUP_DIR_RE.test(path.basename(final))) throw new Error(`bad backup directory name ${final}`);
  await fsp.rename(tempDir, final);
  await fsyncDir(parent);
  return { dir: final, manifestBytes };
}

/** The newest complete `backup_*` directory of this host (has a manifest.json), if any. */
export async function previousBackup(store: string, host: string): Promise<string | undefined> {
  const dir = hostDir(store, host);
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return undefined;
  }
  const candidates = names
    .filter((n) => BACKUP_DIR_RE.test(n))
    .sort()
    .reverse();
  for (const name of candidates) {
    try {
      await fsp.access(path.join(dir, name, MANIFEST_FILE));
      return path.join(dir, name);
    } catch {
      /* not a boxback backup (a raw GoCD import has none): keep looking */
    }
  }
  return undefined;
}
