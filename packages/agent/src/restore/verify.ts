/**
 * Step VERIFY: refuse a damaged backup before anything on the box is touched. Everything
 * is read through the store (BackupStore), never from a store path:
 *   1. every file of the backup against its manifest entry: `store.verify` with contentOnly
 *      (local: size, SHA-256, symlink targets; no walk for unlisted files in a tree: fetchTree
 *      copies only the manifest's entries; s3: every file's content re-read and hashed), but
 *      what a real restore reads next through a store that checks it then, still before STOP,
 *      not read here: on s3 the parts and trees (sized here, checked as downloaded), on local
 *      the trees (not looked at here at all: fetchTree checks each staged copy's presence,
 *      type, size and bytes, in the page cache just after the copy: each stored tree file is
 *      read from disk once). When every entry below a directory is such a tree file, the
 *      outline's top-level files are passed as `only` and the manifest is not read again
 *      (a backend may ignore it). A dry run reads everything.
 *   2. every archive the restore will use is listed in the manifest (so it was checked)
 *   3. every zip archive of the backup (not only those this box's plan restores) opens and
 *      its central directory reads to the end (`files.openArchive`: the stored file, or read
 *      from a remote store without a download); with `crc` (dry run, where nothing is extracted
 *      after) also every entry's data is read and CRC-checked, from `files.get` (the stored
 *      file, or a download checked against the manifest's SHA-256). pg_dump files are no zips:
 *      the SHA-256 of 1 is their check (and pg_restore reads them back at VERSION_CHECK)
 * A real restore checks every entry's CRC-32 as it extracts, into staging, before the
 * swap: a damaged one still changes nothing.
 * Any problem throws BOXBACK_ERR_VERIFY_FAILED naming the first few.
 */
import { BoxbackError, checkZipArchive, mapLimit, zipArchivesOf, zipEntries, type Manifest } from '@boxback/common';
import type { JobContext } from '../job.js';
import { collectEvery } from '../memory.js';
import type { BackupFiles } from './backup-files.js';
import { nestedTops } from './outline.js';
import type { RestoreTargets } from './targets.js';
import { timed } from './timed.js';

export interface VerifySummary {
  files: number;
  bytes: number;
  zipEntries: number;
  crcChecked: boolean;
}

/** Every zip opens (and, with `crc`, every entry's CRC checks); a damaged one is a problem line. */
async function checkZips(
  files: BackupFiles,
  archives: string[],
  crc: boolean,
  onBytes: (n: number) => void,
): Promise<{ entries: number; problems: string[] }> {
  let entries = 0;
  const problems: string[] = [];
  await mapLimit(archives, 2, async (rel) => {
    let local = '';
    try {
      if (crc) {
        local = await files.get(rel);
        entries += (await checkZipArchive(local, rel, onBytes)).entries;
        return;
      }
      // the central directory only: from a remote store its last blobs, not a download
      const a = await files.openArchive(rel);
      try {
        for await (const e of zipEntries(a.src, rel)) {
          void e;
          entries++;
        }
      } finally {
        await a.close();
      }
    } catch (err) {
      const msg = local ? (err as Error).message.split(local).join(rel) : (err as Error).message;
      problems.push(crc || msg.startsWith(`${rel}:`) ? msg : `${rel}: ${msg}`);
    }
  });
  problems.sort();
  return { entries, problems };
}

export async function verifyBackup(
  ctx: JobContext,
  files: BackupFiles,
  manifest: Manifest,
  targets: RestoreTargets,
  crc: boolean,
): Promise<VerifySummary> {
  const problems: string[] = [];
  const listed = new Set(manifest.files.map((f) => f.path));
  for (const d of targets.parts) if (!listed.has(d.archive)) problems.push(`${d.archive}: not in the manifest, cannot be checked`);

  // A real restore (no CRC pass here) reads every part and tree it restores through the store
  // right after, each file checked against the manifest before it is used and before STOP:
  // a backend that checks on read need not download them here too.
  const trees = targets.trees.map((t) => `${t.dir}/`);
  const archives = new Set(targets.parts.map((p) => p.archive));
  const checkedOnRead = crc ? undefined : (rel: string) => archives.has(rel) || trees.some((t) => rel.startsWith(t));
  // Every entry below a directory is a tree file the restore fetches (and checks as it does):
  // the outline's top-level files are all VERIFY reads itself, the manifest not read again.
  const tops = nestedTops(manifest);
  const only = checkedOnRead && tops && [...tops].every((d) => trees.includes(`${d}/`)) ? manifest.files : undefined;
  // The manifest's totals: `manifest` is the outline (outline.ts), its file list the top-level
  // files only; with `only`, those files (a backend may still read more: never shown above 100%).
  const shaTotal = only ? only.reduce((n, f) => n + (f.type === 'file' ? f.size : 0), 0) : manifest.totals.bytes;
  const filesTotal = only ? only.filter((f) => f.type !== 'dir').length : manifest.totals.files;
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
      bytesTotal: Math.max(shaTotal + zipTotal, shaDone + zipDone),
      filesDone,
      filesTotal: Math.max(filesTotal, filesDone),
      message: crc ? 'checksums and zip CRCs' : 'checksums',
    });
  };
  ctx.emit({ phase: 'VERIFY', state: 'started', bytesTotal: shaTotal + zipTotal, filesTotal });
  const [sha, zips] = await Promise.all([
    timed(ctx, 'verify_sha256', () =>
      files.store.verify(files.ref, {
        contentOnly: true,
        checkedOnRead,
        only,
        signal: ctx.signal,
        onProgress: (p) => {
          shaDone = p.bytesDone;
          collectEvery(p.filesDone - filesDone);
          filesDone = p.filesDone;
          emit();
        },
      }),
    ),
    timed(ctx, 'verify_zips', () =>
      checkZips(files, zipArchivesOf(checked), crc, (n) => {
        zipDone += n;
        emit();
      }),
    ),
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
