/**
 * The backup's manifest as a restore holds it (step VERIFY reads it first): every field, but
 * of the file list only the top-level files: the archives, dumps and version.txt, what
 * BackupFiles and VERIFY look up. The trees' entries (all but a few of a 100k-file backup's)
 * are not kept: the store reads them again, a line at a time, where they are needed
 * (store.verify, store.fetchTree), so a restore's memory does not grow with the backup's files.
 *
 *   1. the manifest's text through the store, streamed when it can (store.openManifest)
 *   2. scanManifest: one file line at a time, paths checked; a top-level entry parsed and kept
 *   3. the manifest returned with `files` = those entries; totals as the manifest has them
 */
import {
  lineHead,
  refId,
  scanManifest,
  textStream,
  type BackupRef,
  type BackupStore,
  type Manifest,
  type ManifestFile,
} from '@boxback/common';

export async function readManifestOutline(store: BackupStore, ref: BackupRef): Promise<Manifest> {
  const open = store.openManifest ? () => store.openManifest!(ref) : async () => textStream(await store.readManifestText(ref));
  const files: ManifestFile[] = [];
  let n = 0;
  let bytes = 0;
  const m = await scanManifest(open, `the manifest of ${refId(ref)}`, (json) => {
    const h = lineHead(json);
    if (!h.path.includes('/')) files.push(JSON.parse(json) as ManifestFile);
    // Counted in case the manifest has no totals (they are written after the file list).
    if (h.type === 'dir') return;
    n++;
    bytes += h.size;
  });
  return { ...m, files, totals: m.totals ?? { files: n, bytes } };
}
