/**
 * A restore's view of one stored tree's manifest entries, read in one pass of the manifest
 * (before, fetchTree read it twice per tree: the listed paths and types for the copy, then the
 * whole entries for the check of the copy), and the check of a fresh copy by one walk of it.
 *
 *   TreeIndex     each listed path (relative to the tree) -> its type, and of a file its size
 *                 and SHA-256 (32 bytes in one growing buffer, not a hex string per entry), of
 *                 a symlink its target: in typed arrays and one buffer of the paths' bytes, no
 *                 string or object per entry (~100 bytes each, outside the JS heap)
 *   checkCopy     one walk of the copy (`cp` just wrote it: its directories and files are in
 *                 the page cache), each entry compared with the index: an entry it does not
 *                 list, or of another type than listed, and the copy is `exact: false` (the
 *                 caller discards it and copies only the listed entries); else each file's size
 *                 and SHA-256 and each symlink's target checked, and each listed entry the copy
 *                 lacks named `missing`: a problem line per difference, named by the backup's
 *                 path as verifyTreeCopy names them (a restore's VERIFY does not look at them). Files up to 1 MiB (SYNC_COPY_HASH_MAX) are read
 *                 synchronously (hash-sync.ts sha256DigestSync: the copy is in the page cache),
 *                 their digests compared as bytes; larger ones through the thread pool, four at a time.
 *   CopyCheck     the same check by parts: each entry a split copy's cp has finished checked
 *                 while the copy goes on (`part`), the rest walked after it (`finish`). With
 *                 the agent's addon (file-digests.ts) every file's size and SHA-256 are read
 *                 on libuv's pool, 256 files or 16 MiB a request, one request at a time: the
 *                 JS thread walks, looks entries up and compares digests, nothing more
 */
import { lstatSync, readdirSync, readlinkSync, type Dirent } from 'node:fs';
import path from 'node:path';
import { digestBatcher, type DigestBatcher } from '../../file-digests.js';
import { SYNC_COPY_HASH_MAX, sha256DigestSync, yieldEvery } from '../../hash-sync.js';
import { hashFile, type ManifestFile } from '../../manifest.js';
import type { EntryType } from './tree-copy.js';

const TYPES: EntryType[] = ['file', 'symlink', 'dir'];

/** FNV-1a over `n` bytes of `b`. */
function hashBytes(b: Buffer, from: number, n: number): number {
  let h = 0x811c9dc5;
  for (let k = from; k < from + n; k++) h = Math.imul(h ^ b[k], 0x01000193);
  return h >>> 0;
}

/** A typed array of the same kind holding `a`'s elements, with room for `n`. */
function grown<T extends Uint8Array | Uint32Array | Float64Array>(a: T, n: number): T {
  const out = new (a.constructor as new (n: number) => T)(n);
  out.set(a);
  return out;
}

/**
 * The entries live in typed arrays and one buffer of their paths' UTF-8 bytes, found through
 * an open-addressing table of entry numbers: ~70 bytes per entry outside the JS heap, against
 * ~160 bytes of JS heap for a Map of path strings (its string, the map's slot, two array slots),
 * which at the default file counts (100k artifact files, 40k directories) held ~25 MB of heap
 * through the whole copy of the tree (docs/design/agent-memory.md). Looking a path up encodes
 * it into one reused buffer: no allocation per lookup.
 */
export class TreeIndex {
  private n = 0;
  /** Entry i's path is names[starts[i] .. starts[i + 1]). */
  private names = Buffer.allocUnsafeSlow(64 * 1024);
  private starts = new Uint32Array(1025);
  private hashes = new Uint32Array(1024);
  private types = new Uint8Array(1024);
  private sizes = new Float64Array(1024);
  private sha = Buffer.allocUnsafeSlow(1024 * 32);
  /** Entry number + 1 in each slot (0: empty); twice the entries at least, a power of two. */
  private slots = new Uint32Array(2048);
  private readonly targets = new Map<number, string>();
  /** One path's bytes, for a lookup. */
  private key = Buffer.allocUnsafeSlow(4096);

  constructor(readonly dir: string) {}

  get size(): number {
    return this.n;
  }

  /** The path's bytes in `key`: their length. */
  private encode(rel: string): number {
    const len = Buffer.byteLength(rel);
    if (len > this.key.length) this.key = Buffer.allocUnsafeSlow(len * 2);
    return this.key.write(rel, 0, len, 'utf8');
  }

  /** The slot of the path in `key` (`len` bytes, hash `h`): its entry, or the empty slot where it would go. */
  private slotOf(len: number, h: number): number {
    const mask = this.slots.length - 1;
    for (let s = h & mask; ; s = (s + 1) & mask) {
      const e = this.slots[s];
      if (e === 0) return s;
      const i = e - 1;
      if (
        this.hashes[i] === h &&
        this.starts[i + 1] - this.starts[i] === len &&
        this.names.compare(this.key, 0, len, this.starts[i], this.starts[i + 1]) === 0
      )
        return s;
    }
  }

  /** Entry number of path `rel` (relative to the tree), or -1. */
  indexOf(rel: string): number {
    const len = this.encode(rel);
    return this.slots[this.slotOf(len, hashBytes(this.key, 0, len))] - 1;
  }

  pathOf(i: number): string {
    return this.names.toString('utf8', this.starts[i], this.starts[i + 1]);
  }

  /** Add manifest entry `f` (its path under the tree, `rel`; a path listed twice: the last one counts, as in a Map). */
  add(rel: string, f: Pick<ManifestFile, 'type' | 'size' | 'sha256' | 'target'>): void {
    const len = this.encode(rel);
    const h = hashBytes(this.key, 0, len);
    let s = this.slotOf(len, h);
    let i = this.slots[s] - 1;
    if (i < 0) {
      i = this.n++;
      if (this.n > this.types.length) {
        const cap = this.types.length * 2;
        this.starts = grown(this.starts, cap + 1);
        this.hashes = grown(this.hashes, cap);
        this.types = grown(this.types, cap);
        this.sizes = grown(this.sizes, cap);
        const sha = Buffer.allocUnsafeSlow(cap * 32);
        this.sha.copy(sha, 0, 0, i * 32);
        this.sha = sha;
      }
      const at = this.starts[i];
      if (at + len > this.names.length) {
        const names = Buffer.allocUnsafeSlow(Math.max(this.names.length * 2, at + len));
        this.names.copy(names, 0, 0, at);
        this.names = names;
      }
      this.key.copy(this.names, at, 0, len);
      this.starts[i + 1] = at + len;
      this.hashes[i] = h;
      if (this.n * 2 > this.slots.length) {
        this.rehash();
        s = this.slotOf(len, h);
      }
      this.slots[s] = i + 1;
    }
    this.types[i] = TYPES.indexOf(f.type);
    this.sizes[i] = f.size;
    this.sha.fill(0, i * 32, i * 32 + 32);
    if (f.type === 'file' && f.sha256) this.sha.write(f.sha256, i * 32, 32, 'hex');
    if (f.type === 'symlink' && f.target !== undefined) this.targets.set(i, f.target);
    else this.targets.delete(i);
  }

  private rehash(): void {
    const slots = new Uint32Array(this.slots.length * 2);
    const mask = slots.length - 1;
    for (let i = 0; i < this.n; i++) {
      let s = this.hashes[i] & mask;
      while (slots[s] !== 0) s = (s + 1) & mask;
      slots[s] = i + 1;
    }
    this.slots = slots;
  }

  typeOf(i: number): EntryType {
    return TYPES[this.types[i]];
  }

  /** Listed path -> type (rsync --files-from's list, holdsExactly's map). */
  listed(): Map<string, EntryType> {
    const m = new Map<string, EntryType>();
    for (let i = 0; i < this.n; i++) m.set(this.pathOf(i), this.typeOf(i));
    return m;
  }

  /** Entry `i` as verifyTreeCopy reads it (path, type, size, sha256, target). */
  entry(i: number): ManifestFile {
    const type = this.typeOf(i);
    return {
      path: `${this.dir}/${this.pathOf(i)}`,
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
    for (let i = 0; i < this.n; i++) yield this.entry(i);
  }

  /** Whether the hex digest `hex` is entry i's SHA-256. */
  shaIs(i: number, hex: string): boolean {
    return this.sha.toString('hex', i * 32, i * 32 + 32) === hex;
  }

  /** Whether the 32 bytes of `digests` at `at` are entry i's SHA-256 (no buffer made). */
  shaEqualsAt(i: number, digests: Buffer, at: number): boolean {
    return digests.compare(this.sha, i * 32, i * 32 + 32, at, at + 32) === 0;
  }

  /** Whether the 32-byte digest `digest` is entry i's SHA-256 (no hex strings made). */
  shaEquals(i: number, digest: Buffer): boolean {
    return digest.compare(this.sha, i * 32, i * 32 + 32) === 0;
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
 * The check of a fresh copy `dest` of the tree `index` describes: every entry once, against the
 * index. `part(rel)`: an entry the copy has finished (a split copy's cp moved past it:
 * tree-copy.ts `onCopied`), it and everything under it checked while the rest is still being
 * copied (the JS thread's share of the check, ~5 s for the default box's 100k files, no longer
 * all after the copy; the parts still in the page cache); `finish()`: the rest of the copy
 * walked, the parts already checked skipped. `exact` false at the first entry the index does
 * not list, or lists as another type; else the problems (size, SHA-256, symlink target,
 * missing), one line each.
 */
export class CopyCheck {
  private readonly problems: string[] = [];
  private readonly pause = yieldEvery();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly seen: Uint8Array;
  /** Entries checked by part(), with all below them: finish() does not walk them again. */
  private readonly parts = new Set<string>();
  private exact = true;
  private readonly root: string;
  /** The files' sizes and digests read in batches on the pool, when the addon is there. */
  private readonly batches: DigestBatcher | undefined;

  constructor(
    dest: string,
    private readonly index: TreeIndex,
    private readonly signal?: AbortSignal,
  ) {
    this.seen = new Uint8Array(index.size);
    this.root = path.resolve(dest);
    this.batches = digestBatcher((i, problem, digests, at) => {
      const named = this.named(index.pathOf(i));
      if (problem) this.problems.push(`${named}: ${problem}`);
      else if (!index.shaEqualsAt(i, digests, at)) this.problems.push(`${named}: SHA-256 mismatch`);
    });
  }

  /** The finished entry `rel` of the copy (relative to it) and everything under it. */
  async part(rel: string): Promise<void> {
    if (!this.exact) return;
    this.parts.add(rel);
    const st = lstatSync(`${this.root}/${rel}`);
    const t: EntryType | undefined = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : undefined;
    try {
      if (!(await this.entry(rel, t))) this.exact = false;
    } catch (err) {
      await this.settle();
      throw err;
    }
  }

  /** Every hash sent off back (the batches' first failure thrown). */
  private async settle(): Promise<void> {
    await Promise.all(this.inFlight);
    await this.batches?.drain();
  }

  /** The rest of the copy walked (the parts skipped), the pool's hashes awaited, the listed entries not seen named `missing`. */
  async finish(): Promise<{ exact: boolean; problems: string[] }> {
    const { index, seen, problems } = this;
    try {
      if (this.exact) this.exact = await this.walk('');
      await this.settle();
      // Listed entries the stored tree lacks (cp copied what is there): named, as a missing stored file.
      if (this.exact && seen.includes(0))
        for (let i = 0; i < index.size; i++) if (!seen[i]) problems.push(`${this.named(index.pathOf(i))}: missing`);
      problems.sort();
      return { exact: this.exact, problems };
    } finally {
      await Promise.all(this.inFlight);
      await this.batches?.drain().catch(() => undefined);
    }
  }

  private named(rel: string): string {
    return `${this.index.dir}/${rel}`;
  }

  private async walk(rel: string): Promise<boolean> {
    const { root } = this;
    for (const d of readdirSync(rel ? `${root}/${rel}` : root, { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (this.parts.size && this.parts.has(r)) continue;
      if (!(await this.entry(r, typeOf(d)))) return false;
    }
    return true;
  }

  /** One entry of the copy (of type `t`) and, a directory, everything under it: false when not exact. */
  private async entry(r: string, t: EntryType | undefined): Promise<boolean> {
    const { index, problems, inFlight } = this;
    const i = index.indexOf(r);
    if (i < 0 || !t || index.typeOf(i) !== t) return false;
    this.seen[i] = 1;
    // The names are readdir's (no '.', '..' or '/'): joined without path.join's normalizing.
    const abs = `${this.root}/${r}`;
    if (t === 'dir') return this.walk(r);
    if (t === 'symlink') {
      if (readlinkSync(abs) !== index.targetOf(i)) problems.push(`${this.named(r)}: symlink target changed`);
    } else if (this.batches) {
      await this.batches.add(abs, index.sizeOf(i), i);
    } else if (index.sizeOf(i) <= SYNC_COPY_HASH_MAX) {
      const sum = sha256DigestSync(abs, index.sizeOf(i));
      if (sum === undefined) problems.push(`${this.named(r)}: size ${lstatSync(abs).size}, manifest says ${index.sizeOf(i)}`);
      else if (!index.shaEquals(i, sum)) problems.push(`${this.named(r)}: SHA-256 mismatch`);
    } else {
      const size = lstatSync(abs).size;
      if (size !== index.sizeOf(i)) problems.push(`${this.named(r)}: size ${size}, manifest says ${index.sizeOf(i)}`);
      else {
        while (inFlight.size >= POOL_HASHES) await Promise.race(inFlight);
        const p: Promise<void> = hashFile(abs).then(
          (sum) => {
            inFlight.delete(p);
            if (!index.shaIs(i, sum)) problems.push(`${this.named(r)}: SHA-256 mismatch`);
          },
          (err: NodeJS.ErrnoException) => {
            inFlight.delete(p);
            problems.push(`${this.named(r)}: ${err.code ?? err.message}`);
          },
        );
        inFlight.add(p);
      }
    }
    this.signal?.throwIfAborted();
    await this.pause();
    return true;
  }
}

/** The fresh copy `dest` of the tree `index` describes, checked in one walk (CopyCheck, no parts). */
export function checkCopy(dest: string, index: TreeIndex, signal?: AbortSignal): Promise<{ exact: boolean; problems: string[] }> {
  return new CopyCheck(dest, index, signal).finish();
}
