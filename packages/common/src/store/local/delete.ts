/**
 * Deleting a backup of a local store, and what that frees. Trees share unchanged files with
 * other backups by hard links, so a file frees its bytes only when this backup holds its last
 * link (nlink 1); deleting one backup never harms another.
 *
 *   1. count the bytes only this backup holds (uniqueBytes)
 *   2. rename `<host>/backup_<ts>` to `<host>/.deleting-backup_<ts>-<pid>`: it leaves every
 *      listing at once (and a crash here leaves only a dot directory, removed by the next
 *      delete or interrupted-backup sweep of that host)
 *   3. remove the renamed directory
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { BackupRef } from '../backup-store.js';
import { DELETING_PREFIX, backupDir } from './layout.js';
import { removeTree } from '../../remove-tree.js';

/** Bytes held only by this tree (files with no other hard link). */
export async function uniqueBytes(dir: string): Promise<number> {
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        const st = await fsp.lstat(p);
        if (st.nlink === 1) total += st.size;
      }
    }
  };
  await walk(dir);
  return total;
}

export async function deleteBackupDir(root: string, ref: BackupRef): Promise<{ deleted: boolean; freedBytes: number }> {
  const dir = backupDir(root, ref);
  try {
    await fsp.lstat(dir);
  } catch {
    return { deleted: false, freedBytes: 0 };
  }
  const freedBytes = await uniqueBytes(dir);
  const aside = path.join(path.dirname(dir), `${DELETING_PREFIX}${path.basename(dir)}-${process.pid}`);
  await fsp.rename(dir, aside);
  await removeTree(aside);
  return { deleted: true, freedBytes };
}
