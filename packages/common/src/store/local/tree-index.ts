/**
 * A restore's view of one stored tree's manifest entries, read in one pass of the manifest
 * (before, fetchTree read it twice per tree: the listed paths and types for the copy, then the
 * whole entries for the check of the copy), and the check of a fresh copy by one walk of it.
 *
 *   TreeIndex     each listed path (relative to the tree) -> its type, and of a file its size
 *                 and SHA-256 (32 bytes in one growing buffer, not a hex string per entry), of
 *                 a symlink its target: the paths the copy needs anyway, ~41 bytes more each
 *   checkCopy     one walk of the copy (`cp` just wrote it: its directories and files are in
 *                 the page cache), each entry compared with the index: an entry it does not
 *                 list, or of another type than listed, and the copy is `exact: false` (the
 *                 caller discards it and copies only the listed entries); else each file's size
 *                 and SHA-256 and each symlink's target checked, and each listed entry the copy
 *                 lacks named `missing`: a problem line per difference, named by the backup's
 *                 path as verifyTreeCopy names them (a restore's VERIFY does not look at them). Small files are read synchronously (hash-sync.ts), larger ones
 *                 through the thread pool, four at a time.
 */
import { lstatSync, readdirSync, readlinkSync, type Dirent } from 'node:fs';
import path from 'node:path';
import { SYNC_HASH_MAX, sha256SmallSync, yieldEvery } from '../../hash-sync.js';
import { hashFile, type ManifestFile } from '../../manifest.js';
import type { EntryType } from './tree-copy.js';

const TYPES: EntryType[] = ['file', 'symlink', 'dir'];

export class TreeIndex {
  /** Listed path (relative to the tree) -> its index in the arrays below. */
  readonly at = new Map<string, number>();
  private readonly types: number[] = [];
  private readonly sizes: number[] = [];
  private sha = Buffer.alloc(0);
  private readonly targets = new Map<number, string>();

  constructor(readonly dir: string) {}

  get size(): number {
    return this.at.size;
  }

  /** Add manifest entry `f` (its path under the tree, `rel`). */
  add(rel: string, f: Pick<ManifestFile, 'type' | 'size' | 'sha256' | 'target'>): void {
    const i = this.types.length;
    this.at.set(rel, i);
    this.types.push(TYPES.indexOf(f.type));
    this.sizes.push(f.size);
    if ((i + 1) * 32 > this.sha.length) {
      const grown = Buffer.alloc(Math.max(1024, this.sha.length * 2));
      this.sha.copy(grown);
      this.sha = grown;
    }
    if (f.type === 'file' && f.sha256) this.sha.write(f.sha256, i * 32, 32, 'hex');
    if (f.type === 'symlink' && f.target !== undefined) this.targets.set(i, f.target);
  }

  typeOf(i: number): EntryType {
    return TYPES[this.types[i]];
  }

  /** Listed path -> type (rsync --files-from's list, holdsExactly's map). */
  listed(): Map<string, EntryType> {
    const m = new Map<string, EntryType>();
    for (const [rel, i] of this.at) m.set(rel, this.typeOf(i));
    return m;
  }

  /** Entry `i` as verifyTreeCopy reads it (path, type, size, sha256, target). */
  entry(rel: string, i: number): ManifestFile {
    const type = this.typeOf(i);
    return {
      path: `${this.dir}/${rel}`,
      type,
      size: this.sizes[i],
      sha256: type === 'file' ? this.sha.toString('hex', i * 32, i * 32 + 32) : undefined,
      target: this.targets.get(i),
      mode: 0,
      uid: 0,
      gid: 0,
      mtimeMs: 0,
    };
  }

  *entries(): Generator<ManifestFile> {
    for (const [rel, i] of this.at) yield this.entry(rel, i);
  }

  /** Whether the hex digest `hex` is entry i's SHA-256. */
  shaIs(i: number, hex: string): boolean {
    return this.sha.toString('hex', i * 32, i * 32 + 32) === hex;
  }

  sizeOf(i: number): number {
    return this.sizes[i];
  }

  targetOf(i: number): string | undefined {
    return this.targets.get(i);
  }
}

function typeOf(d: Dirent): EntryType | undefined {
  if (d.isFile()) return 'file';
  if (d.isDirectory()) return 'dir';
  if (d.isSymbolicLink()) return 'symlink';
  return undefined;
}

/** Larger files hashed through the thread pool this many at a time. */
const POOL_HASHES = 4;

/**
 * The fresh copy `dest` of the tree `index` describes, walked once: `exact` false at the first
 * entry the index does not list, or lists as another type; else the problems (size, SHA-256,
 * symlink target, missing), one line each.
 */
export async function checkCopy(dest: string, index: TreeIndex, signal?: AbortSignal): Promise<{ exact: boolean; problems: string[] }> {
  const problems: string[] = [];
  const pause = yieldEvery();
  const inFlight = new Set<Promise<void>>();
  const seen = new Uint8Array(index.size);
  const named = (rel: string) => `${index.dir}/${rel}`;
  const walk = async (rel: string): Promise<boolean> => {
    for (const d of readdirSync(rel ? path.join(dest, rel) : dest, { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      const i = index.at.get(r);
      const t = typeOf(d);
      if (i === undefined || !t || index.typeOf(i) !== t) return false;
      seen[i] = 1;
      const abs = path.join(dest, r);
      if (t === 'dir') {
        if (!(await walk(r))) return false;
        continue;
      }
      if (t === 'symlink') {
        if (readlinkSync(abs) !== index.targetOf(i)) problems.push(`${named(r)}: symlink target changed`);
      } else if (index.sizeOf(i) <= SYNC_HASH_MAX) {
        const sum = sha256SmallSync(abs, index.sizeOf(i));
        if (sum === undefined) problems.push(`${named(r)}: size ${lstatSync(abs).size}, manifest says ${index.sizeOf(i)}`);
        else if (!index.shaIs(i, sum)) problems.push(`${named(r)}: SHA-256 mismatch`);
      } else {
        const size = lstatSync(abs).size;
        if (size !== index.sizeOf(i)) problems.push(`${named(r)}: size ${size}, manifest says ${index.sizeOf(i)}`);
        else {
          while (inFlight.size >= POOL_HASHES) await Promise.race(inFlight);
          const p: Promise<void> = hashFile(abs).then(
            (sum) => {
              inFlight.delete(p);
              if (!index.shaIs(i, sum)) problems.push(`${named(r)}: SHA-256 mismatch`);
            },
            (err: NodeJS.ErrnoException) => {
              inFlight.delete(p);
              problems.push(`${named(r)}: ${err.code ?? err.message}`);
            },
          );
          inFlight.add(p);
        }
      }
      signal?.throwIfAborted();
      await pause();
    }
    return true;
  };
  try {
    const exact = await walk('');
    await Promise.all(inFlight);
    // Listed entries the stored tree lacks (cp copied what is there): named, as a missing stored file.
    if (exact && seen.includes(0)) for (const [rel, i] of index.at) if (!seen[i]) problems.push(`${named(rel)}: missing`);
    problems.sort();
    return { exact, problems };
  } finally {
    await Promise.all(inFlight);
  }
}
