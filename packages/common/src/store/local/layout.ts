/**
 * Where things are in a local store (docs/design/store-layout.md), and the listings:
 *
 *   <root>/<host>/backup_<ts>/            a complete backup once it holds manifest.json
 *   <root>/<host>/.tmp-backup_<ts>-<job>/ a backup being written (never listed)
 *   <root>/<host>/.journal-farm/          hard-link farms for the next journaled backup
 *   <root>/<host>/.deleting-*             a backup being deleted (never listed)
 *
 * Every path is built here from a checked BackupRef and a checked stored path: nothing a
 * caller names can escape the store.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError } from '../../errors.js';
import { BACKUP_DIR_RE, MANIFEST_FILE } from '../../manifest.js';
import type { BackupRef } from '../backup-store.js';
import { HOST_RE, checkStoredPath, makeRef } from '../ref.js';

export const TEMP_PREFIX = '.tmp-backup_';
export const DELETING_PREFIX = '.deleting-';

export function hostDir(root: string, host: string): string {
  if (!HOST_RE.test(host)) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad host name "${host}"`);
  return path.join(root, host);
}

/** `<root>/<host>/backup_<ts>` of a checked ref. */
export function backupDir(root: string, ref: BackupRef): string {
  const r = makeRef(ref.host, ref.timestamp);
  return path.join(root, r.host, `backup_${r.timestamp}`);
}

/** A stored file (or tree directory) of a backup. */
export function storedPath(root: string, ref: BackupRef, rel: string): string {
  return path.join(backupDir(root, ref), ...checkStoredPath(rel).split('/'));
}

const exists = (p: string) =>
  fsp.access(p).then(
    () => true,
    () => false,
  );

export async function hasBackup(root: string, ref: BackupRef): Promise<boolean> {
  return exists(path.join(backupDir(root, ref), MANIFEST_FILE));
}

/** Host directories (anything in them: complete, interrupted or being deleted), sorted. */
export async function listHostDirs(root: string): Promise<string[]> {
  const entries = await fsp.readdir(root, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  return entries
    .filter((e) => e.isDirectory() && HOST_RE.test(e.name))
    .map((e) => e.name)
    .sort();
}

/** Complete backups of `host` (a `backup_*` directory with a manifest), oldest first. */
export async function listBackupRefs(root: string, host: string): Promise<BackupRef[]> {
  let names: string[];
  try {
    names = await fsp.readdir(hostDir(root, host));
  } catch {
    return [];
  }
  const out: BackupRef[] = [];
  for (const name of names.sort()) {
    const m = BACKUP_DIR_RE.exec(name);
    if (!m) continue;
    // A raw GoCD directory without a manifest is not a boxback backup (import makes it one).
    if (await exists(path.join(root, host, name, MANIFEST_FILE))) out.push(Object.freeze({ host, timestamp: m[1] }));
  }
  return out;
}

/** Does `<host>/backup_<ts>` exist at all (complete or not)? */
export async function backupDirExists(root: string, ref: BackupRef): Promise<boolean> {
  return exists(backupDir(root, ref));
}
