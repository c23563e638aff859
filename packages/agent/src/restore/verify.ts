/**
 * Step VERIFY: refuse a damaged backup before anything on the box is touched.
 *   1. every file of the backup against its manifest entry (size, SHA-256, symlink target)
 *   2. every archive the restore will use is listed in the manifest (so it was checked)
 *   3. no unlisted file hides in a tree directory (rsync would restore it unchecked)
 *   4. every zip archive of the backup (not only those this box's plan restores) opens and
 *      its central directory reads to the end; with `crc` (dry run, where nothing is
 *      extracted after) also every entry's data is read and CRC-checked, beside 1. pg_dump files
 *      are no zips: the SHA-256 of 1 is their check (and pg_restore reads them back at
 *      VERSION_CHECK)
 * A real restore checks every entry's CRC-32 as it extracts, into staging, before the
 * swap: each entry is decompressed once, and a damaged one still changes nothing (the
 * SHA-256 of 1 already proves each zip is byte for byte what the backup wrote).
 * Any problem throws BOXBACK_ERR_VERIFY_FAILED naming the first few.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, checkBackupZips, mapLimit, verifyBackupDir, zipArchivesOf, zipEntries, type Manifest } from '@boxback/common';
import type { JobContext } from '../job.js';
import type { RestoreTargets } from './targets.js';

export interface VerifySummary {
  files: number;
  bytes: number;
  zipEntries: number;
  crcChecked: boolean;
}

async function walkFiles(root: string, rel: string, out: string[]): Promise<void> {
  const dirents = await fsp.readdir(path.join(root, rel), { withFileTypes: true });
  for (const d of dirents) {
    const r = rel ? `${rel}/${d.name}` : d.name;
    if (d.isDirectory()) await walkFiles(root, r, out);
    else out.push(r);
  }
}

async function unlistedTreeFiles(backupDir: string, manifest: Manifest, targets: RestoreTargets): Promise<string[]> {
  const listed = new Set(manifest.files.map((f) => f.path));
  const problems: string[] = [];
  for (const t of targets.trees) {
    const found: string[] = [];
    try {
      await walkFiles(backupDir, t.dir, found);
    } catch (err) {
      problems.push(`${t.dir}/: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      continue;
    }
    for (const f of found) if (!listed.has(f)) problems.push(`${f}: not in the manifest`);
  }
  return problems;
}

/** Every zip opens and its central directory reads to the end (a real restore CRC-checks as it extracts). */
async function openZips(backupDir: string, archives: string[]): Promise<{ entries: number; problems: string[] }> {
  let entries = 0;
  const problems: string[] = [];
  await mapLimit(archives, 2, async (rel) => {
    try {
      for await (const e of zipEntries(path.join(backupDir, rel))) {
        void e;
        entries++;
      }
    } catch (err) {
      problems.push(`${rel}: ${(err as Error).message.split(backupDir + '/').join('')}`);
    }
  });
  return { entries, problems };
}

export async function verifyBackup(
  ctx: JobContext,
  backupDir: string,
  manifest: Manifest,
  targets: RestoreTargets,
  crc: boolean,
): Promise<VerifySummary> {
  const problems: string[] = [];
  const listed = new Set(manifest.files.map((f) => f.path));
  for (const d of targets.parts) if (!listed.has(d.archive)) problems.push(`${d.archive}: not in the manifest, cannot be checked`);
  problems.push(...(await unlistedTreeFiles(backupDir, manifest, targets)));

  const shaTotal = manifest.files.reduce((s, f) => s + (f.type === 'file' ? f.size : 0), 0);
  const checked = { ...manifest, datasets: manifest.datasets.filter((d) => listed.has(d.archive)) };
  const zipTotal = crc ? checked.datasets.reduce((s, d) => s + (d.kind === 'zip' ? d.bytes : 0), 0) : 0;
  let shaDone = 0;
  let zipDone = 0;
  let filesDone = 0;
  let last = 0;
  const emit = (force = false) => {
    const now = Date.now();
    if (!force && now - last < 250) return;
    last = now;
    ctx.emit({
      phase: 'VERIFY',
      bytesDone: shaDone + zipDone,
      bytesTotal: shaTotal + zipTotal,
      filesDone,
      filesTotal: manifest.files.length,
      message: crc ? 'checksums and zip CRCs' : 'checksums',
    });
  };
  ctx.emit({ phase: 'VERIFY', state: 'started', bytesTotal: shaTotal + zipTotal, filesTotal: manifest.files.length });
  const [sha, zips] = await Promise.all([
    verifyBackupDir(backupDir, manifest, (p) => {
      shaDone = p.bytesDone;
      filesDone = p.filesDone;
      emit();
    }),
    crc
      ? checkBackupZips(backupDir, checked, (n) => {
          zipDone += n;
          emit();
        })
      : openZips(backupDir, zipArchivesOf(checked)),
  ]);
  problems.push(...sha.problems, ...zips.problems);
  emit(true);
  if (problems.length > 0) {
    const shown = problems.slice(0, 5).join('; ');
    throw new BoxbackError(
      'BOXBACK_ERR_VERIFY_FAILED',
      `backup ${manifest.id} failed verification, nothing was changed: ${shown}${problems.length > 5 ? ` (and ${problems.length - 5} more)` : ''}`,
      { problems },
    );
  }
  return { files: sha.filesChecked, bytes: sha.bytesChecked, zipEntries: zips.entries, crcChecked: crc };
}
