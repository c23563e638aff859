/**
 * ImportBackup and ExportBackup.
 *
 * Import of a path on the controller's filesystem, written through the BackupStore as a
 * staging with the backup's exact timestamp (begin -> files -> commit, the manifest last):
 *   - a boxback backup directory (has manifest.json): verify it, copy it into the staging
 *     directory, verify the copy, commit it as `<host>@<ts>`, register it;
 *   - a GoCD-made directory (db.zip, config-dir.zip, config-repo.zip, version.txt, no
 *     manifest): copy it, build a manifest (size, SHA-256, mode of every file; origin
 *     "gocd-import"; consistency "quiesced"; product version from version.txt), open every
 *     zip and CRC-check every entry (a truncated or damaged zip is refused: nothing is
 *     imported), commit with that manifest, register;
 *   - a `.tar` made by export: extract it (regular files, dirs and symlinks only; no
 *     absolute or `..` paths) into a scratch directory, verify, move it into the staging,
 *     commit.
 * Every verify here is verifyBackupDeep: the manifest's checksums and every zip entry's CRC-32.
 * The timestamp comes from a `backup_YYYYMMdd-HHmmss` name when there is one, else now.
 *
 * Export streams `backup_<ts>/...` as a tar read through the store (store/tar.ts, never
 * buffered whole) in DataChunks.
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tar from 'tar';
import {
  BACKUP_DIR_RE,
  BOXBACK_VERSION,
  BoxbackError,
  MANIFEST_FILE,
  MANIFEST_FORMAT,
  backupId as makeBackupId,
  checkName,
  backupTar,
  formatTimestamp,
  hashFile,
  parseTimestamp,
  readManifest,
  refFromPath,
  verifyBackupDeep,
  type BackupStore,
  type Logger,
  type Manifest,
  type ManifestDataset,
  type ManifestFile,
} from '@boxback/common';
import { rowFromStore } from './backup-record.js';
import type { BackupRow, Catalog } from './catalog/types.js';

export interface ImportDeps {
  catalog: Catalog;
  store: BackupStore;
  log: Logger;
}

const GOCD_FILES: Record<string, { name: string }> = {
  'db.zip': { name: 'database' },
  'config-dir.zip': { name: 'config' },
  'wrapper-config-dir.zip': { name: 'wrapper-config' },
  'config-repo.zip': { name: 'config-repo' },
};

async function exists(p: string): Promise<boolean> {
  return fsp.lstat(p).then(
    () => true,
    () => false,
  );
}

function tsFromName(name: string): string {
  return BACKUP_DIR_RE.exec(name)?.[1] ?? formatTimestamp(new Date());
}

/** Every entry under `dir` as manifest files (regular files hashed), '/'-separated, sorted. */
async function describeTree(dir: string): Promise<ManifestFile[]> {
  const out: ManifestFile[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of await fsp.readdir(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (!rel && e.name === MANIFEST_FILE) continue;
      const abs = path.join(dir, r);
      const st = await fsp.lstat(abs);
      const base = { path: r, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: Math.floor(st.mtimeMs) };
      if (st.isDirectory()) {
        out.push({ ...base, type: 'dir', size: 0 });
        await walk(r);
      } else if (st.isSymbolicLink()) {
        out.push({ ...base, type: 'symlink', size: 0, target: await fsp.readlink(abs) });
      } else if (st.isFile()) {
        out.push({ ...base, type: 'file', size: st.size, sha256: await hashFile(abs) });
      } else {
        throw new BoxbackError('BOXBACK_ERR_UNSAFE_ARCHIVE', `${r} is not a regular file, directory or symlink; refusing to import it`);
      }
    }
  };
  await walk('');
  return out.sort((a, b) => (a.path < b.path ? -1 : 1));
}

/** Build the manifest of a GoCD-made backup directory (already copied to `dir`). */
async function gocdManifest(dir: string, host: string, ts: string): Promise<Manifest> {
  const files = await describeTree(dir);
  const version = (await fsp.readFile(path.join(dir, 'version.txt'), 'utf8').catch(() => '')).trim();
  const datasets: ManifestDataset[] = [];
  for (const f of files) {
    if (f.path.includes('/') || f.type !== 'file') continue;
    const known = GOCD_FILES[f.path];
    if (known) datasets.push({ name: known.name, archive: f.path, kind: 'zip', sources: [], target: '', entries: 0, bytes: f.size });
    else if (/^db\.[A-Za-z0-9_-]+$/.test(f.path) && f.path !== 'db.zip') {
      datasets.push({ name: 'database', archive: f.path, kind: 'postgres', sources: [], target: '', entries: 0, bytes: f.size });
    }
  }
  const createdAt = parseTimestamp(ts).toISOString();
  const regular = files.filter((f) => f.type === 'file');
  return {
    format: MANIFEST_FORMAT,
    id: makeBackupId(host, ts),
    host,
    timestamp: ts,
    createdAt,
    completedAt: new Date().toISOString(),
    origin: 'gocd-import',
    agentVersion: BOXBACK_VERSION,
    plan: { name: 'gocd', product: 'gocd' },
    product: { name: 'gocd', version: version || null },
    source: { hostname: '', addresses: [] },
    consistency: 'quiesced',
    quiesce: { mode: 'none', windowMs: 0 },
    initiatedVia: 'import',
    phases: [],
    datasets,
    trees: [],
    files,
    totals: { files: regular.length, bytes: regular.reduce((n, f) => n + f.size, 0) },
    warnings: [],
  };
}

/** Every file against the manifest and every entry of every zip CRC-checked (verifyBackupDeep), or throw. */
async function verifyOrThrow(dir: string, what: string, m?: Manifest): Promise<void> {
  const v = await verifyBackupDeep(dir, m);
  if (!v.ok) {
    throw new BoxbackError(
      'BOXBACK_ERR_VERIFY_FAILED',
      `${what} is damaged, nothing was imported (${v.problems.length} problem(s)): ${v.problems.slice(0, 3).join('; ')}`,
    );
  }
}

/** Copy (or, from a scratch directory, move) a backup directory's content into `dest`. */
async function fill(src: string, dest: string, move: boolean): Promise<void> {
  await fsp.rm(dest, { recursive: true, force: true });
  if (move) {
    try {
      await fsp.rename(src, dest);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    }
  }
  await fsp.cp(src, dest, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true, errorOnExist: true });
}

/**
 * Store the backup directory `src` as `<host>@<ts>` with manifest `m` (verified again once
 * copied into the staging), and record it.
 */
async function place(d: ImportDeps, src: string, m: Manifest, origin: string, move = false): Promise<BackupRow> {
  const { host, timestamp: ts } = m;
  if (await d.catalog.getBackup(makeBackupId(host, ts))) {
    throw new BoxbackError('BOXBACK_ERR_ALREADY_EXISTS', `backup ${makeBackupId(host, ts)} already exists in the store`);
  }
  const s = await d.store.begin({ host, startedAt: new Date(), timestamp: ts, jobId: 'import', log: d.log });
  try {
    await fill(src, s.dir, move);
    await verifyOrThrow(s.dir, 'the copied backup', m);
    for (const f of m.files) if (f.type === 'file' && f.sha256) await s.addFile(f.path, f.sha256);
    const { ref } = await s.commit(JSON.stringify(m, null, 2));
    const row = await rowFromStore(d.store, ref, '');
    return await d.catalog.putBackup({ ...row, origin, initiatedVia: 'import' });
  } finally {
    await s.abort(); // nothing once committed
  }
}

async function importDir(d: ImportDeps, src: string, hostArg: string): Promise<BackupRow> {
  const name = path.basename(src);
  if (await exists(path.join(src, MANIFEST_FILE))) {
    const m = await readManifest(src);
    await verifyOrThrow(src, src);
    const host = hostArg || m.host;
    checkName(host);
    const ts = BACKUP_DIR_RE.test(name) ? tsFromName(name) : m.timestamp;
    const renamed = host !== m.host || ts !== m.timestamp ? { ...m, host, timestamp: ts, id: makeBackupId(host, ts) } : m;
    return place(d, src, renamed, 'boxback-import');
  }
  const hasGocd =
    (await exists(path.join(src, 'version.txt'))) &&
    (await Promise.all(['db.zip', 'config-dir.zip'].map((f) => exists(path.join(src, f))))).some(Boolean);
  if (!hasGocd) {
    throw new BoxbackError(
      'BOXBACK_ERR_INVALID_ARGUMENT',
      `${src} is neither a boxback backup (no manifest.json) nor a GoCD backup (version.txt with db.zip or config-dir.zip)`,
    );
  }
  if (!hostArg) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `${src} is a GoCD backup, which names no host: pass --host NAME`);
  checkName(hostArg);
  const ts = tsFromName(name);
  const m = await gocdManifest(src, hostArg, ts);
  await verifyOrThrow(src, `the GoCD backup ${src}`, m);
  return place(d, src, m, 'gocd-import');
}

async function importTar(d: ImportDeps, file: string, hostArg: string, tmp: string): Promise<BackupRow> {
  const allowed = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory', 'SymbolicLink']);
  try {
    await tar.x({
      file,
      cwd: tmp,
      strict: true,
      preservePaths: false,
      filter: (_p, entry) => {
        const type = (entry as { type?: string }).type;
        if (type && !allowed.has(type) && type !== 'ExtendedHeader' && type !== 'GlobalExtendedHeader') {
          throw new BoxbackError(
            'BOXBACK_ERR_UNSAFE_ARCHIVE',
            `${file}: entry ${_p} is a ${type}; only files, directories and symlinks may be imported`,
          );
        }
        return true;
      },
    });
  } catch (err) {
    if (err instanceof BoxbackError) throw err;
    const msg = (err as Error).message;
    if (/contains '\.\.'|absolute|outside/i.test(msg)) {
      throw new BoxbackError(
        'BOXBACK_ERR_UNSAFE_ARCHIVE',
        `${file}: an entry would land outside the backup directory (${msg.replace(/^TAR_ENTRY_ERROR: /, '')}); refusing the whole archive`,
      );
    }
    throw new BoxbackError('BOXBACK_ERR_ARCHIVE_FAILED', `${file} is not a readable tar: ${msg}`);
  }
  const tops = (await fsp.readdir(tmp)).filter((n) => BACKUP_DIR_RE.test(n));
  if (tops.length !== 1)
    throw new BoxbackError(
      'BOXBACK_ERR_INVALID_ARGUMENT',
      `${file} does not hold exactly one backup_YYYYMMdd-HHmmss directory (made by \`boxback backup export\`?)`,
    );
  const inner = path.join(tmp, tops[0]);
  const m = await readManifest(inner);
  await verifyOrThrow(inner, file);
  const host = hostArg || m.host;
  checkName(host);
  const ts = tsFromName(tops[0]);
  return place(d, inner, { ...m, host, timestamp: ts, id: makeBackupId(host, ts) }, 'boxback-import', true);
}

export async function importBackup(d: ImportDeps, src: string, host: string): Promise<BackupRow> {
  if (!src || !path.isAbsolute(src))
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `import path "${src}" must be absolute (a path on the controller's filesystem)`);
  const st = await fsp.stat(src).catch(() => undefined);
  if (!st) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `${src} does not exist on the controller's filesystem`);
  if (st.isDirectory()) return importDir(d, src, host);
  // A tar is extracted into a scratch directory of this box first (then moved into the staging).
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'boxback-import-'));
  try {
    return await importTar(d, src, host, tmp);
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

const CHUNK = 1024 * 1024;

/** The backup as a tar stream, in chunks of about 1 MiB. */
export async function* exportBackup(store: BackupStore, b: BackupRow): AsyncGenerator<{ data: Buffer; totalBytes: number }> {
  const ref = refFromPath(b.path);
  if (!(await store.has(ref))) {
    throw new BoxbackError('BOXBACK_ERR_MANIFEST_INVALID', `${b.id} is not complete in the store (${b.path} has no manifest)`);
  }
  let buf: Buffer[] = [];
  let size = 0;
  for await (const chunk of backupTar(store, ref) as AsyncIterable<Buffer>) {
    buf.push(chunk);
    size += chunk.length;
    if (size >= CHUNK) {
      yield { data: Buffer.concat(buf), totalBytes: 0 };
      buf = [];
      size = 0;
    }
  }
  if (size) yield { data: Buffer.concat(buf), totalBytes: 0 };
}
