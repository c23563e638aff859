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
 * `nestedTops(m)`: the first path segments of the entries not kept (the trees' directories),
 * so VERIFY knows when the kept entries are all it has to read itself.
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

const tops = new WeakMap<Manifest, ReadonlySet<string>>();

/** The first segments of the paths of the entries an outline did not keep (`artifacts` of `artifacts/a/b`). */
export function nestedTops(m: Manifest): ReadonlySet<string> | undefined {
  return tops.get(m);
}

export async function readManifestOutline(store: BackupStore, ref: BackupRef): Promise<Manifest> {
  const open = store.openManifest ? () => store.openManifest!(ref) : async () => textStream(await store.readManifestText(ref));
  const files: ManifestFile[] = [];
  let n = 0;
  let bytes = 0;
  const nested = new Set<string>();
  const m = await scanManifest(open, `the manifest of ${refId(ref)}`, (json) => {
    const h = lineHead(json);
    const slash = h.path.indexOf('/');
    if (slash < 0) files.push(JSON.parse(json) as ManifestFile);
    else if (!nested.has(h.path.slice(0, slash))) nested.add(h.path.slice(0, slash));
    // Counted in case the manifest has no totals (they are written after the file list).
    if (h.type === 'dir') return;
    n++;
    bytes += h.size;
  });
  const outline = { ...m, files, totals: m.totals ?? { files: n, bytes } };
  tops.set(outline, nested);
  return outline;
}
