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
import { createReadStream, lstatSync, promises as fsp, readlinkSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import {
  BOXBACK_VERSION,
  MANIFEST_FILE,
  MANIFEST_FORMAT,
  hashFile,
  mapLimit,
  readManifest,
  type Manifest,
  type ManifestFile,
} from '@boxback/common';
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
  /** The previous backup (its directory and its manifest's tree files), for hard-linked files. */
  prev?: { dir: string; index: PrevIndex };
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

/** What a hard-linked file needs of its entry in the previous manifest. */
export interface PrevFile {
  size: number;
  mtimeMs: number;
  sha256: string;
}

/**
 * The previous manifest's checksummed files, compact: by inode (what boxback's tree entries
 * record), and by path only for entries without one (then the previous backup's file is looked at).
 */
export interface PrevIndex {
  byIno: Map<number, PrevFile>;
  byPath: Map<string, PrevFile>;
}

function addPrev(index: PrevIndex, f: Partial<ManifestFile>): void {
  if (f.type !== 'file' || typeof f.sha256 !== 'string' || !f.sha256 || typeof f.path !== 'string') return;
  const p: PrevFile = { size: Number(f.size), mtimeMs: Number(f.mtimeMs), sha256: f.sha256 };
  if (typeof f.ino === 'number') index.byIno.set(f.ino, p);
  else index.byPath.set(f.path, p);
}

/**
 * Read a backup's manifest.json into a PrevIndex one line at a time (manifestToJson writes one
 * line per file), so that a 100k-file manifest is never one string or 100k objects in memory.
 * A manifest in any other layout is parsed whole. Throws like readManifest when it is not one.
 */
export async function readPrevIndex(dir: string): Promise<PrevIndex> {
  const index: PrevIndex = { byIno: new Map(), byPath: new Map() };
  const head: string[] = [];
  let inFiles = false;
  let lineBased = true;
  try {
    const rl = createInterface({
      input: createReadStream(path.join(dir, MANIFEST_FILE), { encoding: 'utf8', highWaterMark: 256 * 1024 }),
      crlfDelay: Infinity,
    });
    for await (const line of rl) {
      if (inFiles) {
        if (line.startsWith('  {')) {
          addPrev(index, JSON.parse(line.endsWith(',') ? line.slice(0, -1) : line) as Partial<ManifestFile>);
          continue;
        }
        const close = /^ \](,?)$/.exec(line);
        if (!close) throw new Error('not one line per file');
        head.push(` "files": []${close[1]}`);
        inFiles = false;
        continue;
      }
      if (line === ' "files": [') inFiles = true;
      else head.push(line);
    }
    const m = JSON.parse(head.join('\n')) as Partial<Manifest>;
    if (inFiles || m.format !== MANIFEST_FORMAT || !Array.isArray(m.files)) throw new Error('not a manifest');
  } catch {
    lineBased = false;
  }
  if (lineBased) return index;
  // Another layout, or not a manifest: readManifest says which (and throws its error).
  const whole = await readManifest(dir);
  const out: PrevIndex = { byIno: new Map(), byPath: new Map() };
  for (const f of whole.files) addPrev(out, f);
  return out;
}

export async function collectFiles(o: CollectOptions): Promise<CollectResult> {
  const prefix = o.subdir ? `${o.subdir}/` : '';
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
    const f: ManifestFile = {
      path: e.rel,
      type,
      size: type === 'file' ? st.size : 0,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      mtimeMs: Math.round(st.mtimeMs),
    };
    if (type === 'symlink') f.target = readlinkSync(e.abs);
    if (type === 'file') {
      const known = o.known.get(e.rel);
      if (known) f.sha256 = known;
      else if (tree) {
        f.ino = st.ino;
        const p = o.prev && st.nlink > 1 ? prevFileOf(o.prev, e.rel, st.ino) : undefined;
        if (p && p.size === st.size && p.mtimeMs === f.mtimeMs) {
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

/**
 * The previous backup's entry for a file with this inode: by the inode its manifest recorded;
 * else the entry of the same path, when the previous backup's file there has this inode.
 */
function prevFileOf(prev: { dir: string; index: PrevIndex }, rel: string, ino: number): PrevFile | undefined {
  const byIno = prev.index.byIno.get(ino);
  if (byIno) return byIno;
  const byPath = prev.index.byPath.get(rel);
  if (!byPath) return undefined;
  try {
    return lstatSync(path.join(prev.dir, ...rel.split('/'))).ino === ino ? byPath : undefined;
  } catch {
    return undefined;
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
  return [...manifestChunks(m)].join('');
}

/**
 * manifestToJson's text in small pieces (the head, then one per file, then the tail), so that a
 * 100k-file manifest is written to disk without ever being one string in memory.
 */
export function* manifestChunks(m: Manifest): Generator<string> {
  const head = JSON.stringify({ ...m, files: '@FILES@' }, null, 1);
  const at = head.indexOf('"@FILES@"');
  if (m.files.length === 0) {
    yield `${head.slice(0, at)}[]${head.slice(at + 9)}\n`;
    return;
  }
  yield `${head.slice(0, at)}[\n`;
  for (let i = 0; i < m.files.length; i++) yield `${i ? ',\n' : ''}  ${JSON.stringify(m.files[i])}`;
  yield `\n ]${head.slice(at + 9)}\n`;
}
