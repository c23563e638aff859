/**
 * The agent's view of the backup store: deleting a backup (renamed aside first so it
 * vanishes at once, then removed) and counting what that frees.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { resolveInStore } from '@boxback/common';

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

export async function deleteBackup(store: string, rel: string): Promise<{ deleted: boolean; freedBytes: number }> {
  const dir = resolveInStore(store, rel);
  try {
    await fsp.lstat(dir);
  } catch {
    return { deleted: false, freedBytes: 0 };
  }
  const freedBytes = await uniqueBytes(dir);
  const aside = path.join(path.dirname(dir), `.deleting-${path.basename(dir)}-${process.pid}`);
  await fsp.rename(dir, aside);
  await fsp.rm(aside, { recursive: true, force: true });
  return { deleted: true, freedBytes };
}
