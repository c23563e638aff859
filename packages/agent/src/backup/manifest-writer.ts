/**
 * Describing every file of a backup for manifest.json.
 *
 *   1. walk the temporary backup directory (not the stage, not manifest.json); a tree is
 *      described right after its sync (subdir), while the archives are still being written
 *   2. for each entry: type, size, mode, uid, gid, mtime, symlink target; tree files also
 *      record their inode
 *   3. SHA-256:
 *      - archives and version.txt: already known (hashed on their way to disk)
 *      - a tree file hard-linked to the previous backup (same inode as the previous
 *        manifest's entry, same size and mtime): the previous manifest's SHA-256, not re-read
 *      - anything else: read and hashed, 4 files at a time
 *   4. buildManifest puts the whole document together.
 */
import { createHash } from 'node:crypto';
import { lstatSync, promises as fsp, readlinkSync } from 'node:fs';
import path from 'node:path';
import { BOXBACK_VERSION, MANIFEST_FILE, MANIFEST_FORMAT, hashFile, mapLimit, type Manifest, type ManifestFile } from '@boxback/common';
import { walkTree, type WalkEntry } from './walk.js';

export const STAGE_DIR = '.stage';
const SMALL_FILE = 256 * 1024;

export interface CollectOptions {
  /** The temporary backup directory. */
  dir: string;
  /** rel path -> SHA-256 of files hashed while written (archives, version.txt). */
  known: Map<string, string>;
  /** Top-level directories that hold synced trees. */
  treeDirs: string[];
  /** Describe only this top-level directory (a tree, right after its sync). */
  subdir?: string;
  /** Top-level directories to list but not walk (trees already described). */
  skipDirs?: string[];
  /** The previous backup (its manifest and directory), for hard-linked files. */
  prev?: { dir: string; manifest: Manifest };
  signal?: AbortSignal;
  onProgress?: (p: { filesDone: number; filesTotal: number; bytesDone: number; bytesTotal: number }) => void;
}

export interface CollectResult {
  files: ManifestFile[];
  /** Per tree dir: files, bytes and files that share their inode with the previous backup. */
  trees: Map<string, { files: number; bytes: number; linkedFiles: number }>;
  hashedBytes: number;
  reusedHashes: number;
  /** Files this backup wrote (not hard links to the previous one): what must be fsynced. */
  written: string[];
}

async function sha256Of(file: string, size: number, onBytes: (n: number) => void): Promise<string> {
  if (size <= SMALL_FILE) {
    const buf = await fsp.readFile(file);
    onBytes(buf.length);
    return createHash('sha256').update(buf).digest('hex');
  }
  return hashFile(file, onBytes);
}

export async function collectFiles(o: CollectOptions): Promise<CollectResult> {
  const prevByPath = new Map<string, ManifestFile>();
  const prefix = o.subdir ? `${o.subdir}/` : '';
  if (o.prev) for (const f of o.prev.manifest.files) if (f.type === 'file' && f.sha256 && f.path.startsWith(prefix)) prevByPath.set(f.path, f);
  const treeSet = new Set(o.treeDirs);
  const trees = new Map(o.treeDirs.map((d) => [d, { files: 0, bytes: 0, linkedFiles: 0 }]));
  const files: ManifestFile[] = [];
  const toHash: Array<{ f: ManifestFile; abs: string }> = [];
  let reusedHashes = 0;

  const onEntry = (walked: WalkEntry): void => {
    const e = prefix ? { ...walked, rel: prefix + walked.rel } : walked;
    const st = e.st;
    const top = e.rel.split('/')[0];
    const tree = treeSet.has(top) && e.rel !== top ? trees.get(top) : undefined;
    const type: ManifestFile['type'] = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'file';
    if (!st.isDirectory() && !st.isSymbolicLink() && !st.isFile()) return;
    const f: ManifestFile = { path: e.rel, type, size: type === 'file' ? st.size : 0, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: Math.round(st.mtimeMs) };
    if (type === 'symlink') f.target = readlinkSync(e.abs);
    if (type === 'file') {
      const known = o.known.get(e.rel);
      if (known) f.sha256 = known;
      else if (tree) {
        f.ino = st.ino;
        const p = prevByPath.get(e.rel);
        if (p && st.nlink > 1 && p.size === st.size && p.mtimeMs === f.mtimeMs && sameInode(p, st.ino, o.prev!.dir)) {
          f.sha256 = p.sha256;
          reusedHashes++;
          tree.linkedFiles++;
        }
      }
      if (!f.sha256) toHash.push({ f, abs: e.abs });
    }
    if (tree && type !== 'dir') {
      tree.files++;
      tree.bytes += f.size;
    }
    files.push(f);
  };
  const skip = new Set(o.skipDirs ?? []);
  await walkTree(o.subdir ? path.join(o.dir, o.subdir) : o.dir, {
    exclude: (rel) => !prefix && (rel === STAGE_DIR || rel === MANIFEST_FILE || rel.startsWith('.')),
    noDescend: (rel) => !prefix && skip.has(rel),
    signal: o.signal,
    onEntry,
    collect: false,
  });

  const bytesTotal = toHash.reduce((s, x) => s + x.f.size, 0);
  const prog = { filesDone: 0, filesTotal: toHash.length, bytesDone: 0, bytesTotal };
  let last = 0;
  const report = (force = false) => {
    const now = Date.now();
    if (o.onProgress && (force || now - last >= 250)) {
      last = now;
      o.onProgress({ ...prog });
    }
  };
  const written = toHash.map((x) => x.abs);
  for (const [rel] of o.known) if (!prefix || rel.startsWith(prefix)) written.push(path.join(o.dir, rel));
  await mapLimit(toHash, 4, async ({ f, abs }) => {
    o.signal?.throwIfAborted();
    f.sha256 = await sha256Of(abs, f.size, (n) => {
      prog.bytesDone += n;
    });
    prog.filesDone++;
    report();
  });
  report(true);
  return { files, trees, hashedBytes: prog.bytesDone, reusedHashes, written };
}

/** The previous manifest's inode when it has one; else look at the previous backup's file. */
function sameInode(p: ManifestFile, ino: number, prevDir: string): boolean {
  if (p.ino !== undefined) return p.ino === ino;
  try {
    return lstatSync(path.join(prevDir, ...p.path.split('/'))).ino === ino;
  } catch {
    return false;
  }
}

export type ManifestParts = Omit<Manifest, 'format' | 'agentVersion' | 'totals'>;

/** The manifest document, with totals computed from its files. */
export function buildManifest(parts: ManifestParts): Manifest {
  let bytes = 0;
  let n = 0;
  for (const f of parts.files) {
    if (f.type === 'dir') continue;
    n++;
    bytes += f.size;
  }
  return { format: MANIFEST_FORMAT, agentVersion: BOXBACK_VERSION, ...parts, totals: { files: n, bytes } };
}

/**
 * manifest.json text: readable at the top, one line per file (a 100k-file backup stays a
 * few tens of MB instead of ten times that when every field gets its own line).
 */
export function manifestToJson(m: Manifest): string {
  const head = JSON.stringify({ ...m, files: '@FILES@' }, null, 1);
  const at = head.indexOf('"@FILES@"');
  if (m.files.length === 0) return `${head.slice(0, at)}[]${head.slice(at + 9)}\n`;
  let body = '';
  for (let i = 0; i < m.files.length; i++) body += `${i ? ',\n' : ''}  ${JSON.stringify(m.files[i])}`;
  return `${head.slice(0, at)}[\n${body}\n ]${head.slice(at + 9)}\n`;
}
