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
import { lstatSync, promises as fsp, readFileSync, readlinkSync, rmSync, type Stats } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { fileLinesSync, openFileText } from '../../file-text.js';
import { MANIFEST_FILE, MANIFEST_FORMAT, hashFile, readManifest, type Manifest, type ManifestFile } from '../../manifest.js';
import { digestBatcher } from '../../file-digests.js';
import { SYNC_HASH_MAX, sha256SmallSync } from '../../hash-sync.js';
import { BOXBACK_VERSION } from '../../version.js';
import { walkOrderOfParts, walkTree, type WalkEntry } from '../../walk.js';
import type { ManifestSink } from '../backup-store.js';

export const STAGE_DIR = '.stage';
/** Manifest line files written while describing (inside the temporary directory, removed before the rename). */
export const PARTS_DIR = '.parts';

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
  /** Where the entries go, in walk order (a PartWriter takes their lines as they are). */
  out: ManifestSink;
  /** Describe only these paths under `subdir` (sorted in walk order, none under another). */
  roots?: string[];
  signal?: AbortSignal;
  onProgress?: (p: { filesDone: number; filesTotal: number; bytesDone: number; bytesTotal: number }) => void;
}

export interface CollectResult {
  /** Lines written (every entry, directories included). */
  entries: number;
  /** Files and symlinks, and their bytes. */
  files: number;
  bytes: number;
  /** Per tree dir: files, bytes and files that share their inode with the previous backup. */
  trees: Map<string, { files: number; bytes: number; linkedFiles: number }>;
  hashedBytes: number;
  reusedHashes: number;
  /** Files this backup wrote (not hard links to the previous one): what must be fsynced; undefined when too many to list. */
  written: string[] | undefined;
  /** Its directories (absolute); undefined when too many to list. */
  dirs: string[] | undefined;
}

/** Above this many files or directories a backup is flushed with one syncfs (publish.ts): lists stop growing there. */
export const LIST_LIMIT = 2_000;
/** Entries described ahead of the one being written (their files are hashed meanwhile, 4 at a time). */
const WINDOW = 256;
const HASHING = 4;
/** Files up to this size are read and hashed synchronously. */
const SMALL_SYNC = 64 * 1024;

/**
 * One part of manifest.json's file list: a file of manifest lines (`JSON.stringify(entry)`, one
 * per line), written as the entries are described so that no file list is held in memory.
 */
export class PartWriter implements ManifestSink {
  lines = 0;
  private buf = Buffer.allocUnsafe(1 << 20);
  private used = 0;
  private constructor(
    readonly file: string,
    private readonly fh: fsp.FileHandle,
  ) {}

  static async create(file: string): Promise<PartWriter> {
    await fsp.mkdir(path.dirname(file), { recursive: true });
    return new PartWriter(file, await fsp.open(file, 'w', 0o600));
  }

  add(entry: ManifestFile): Promise<void> {
    return this.line(JSON.stringify(entry));
  }

  addLine(json: string): Promise<void> {
    return this.line(json);
  }

  async line(text: string): Promise<void> {
    this.lines++;
    const len = Buffer.byteLength(text) + 1;
    if (this.used + len > this.buf.length) await this.flush();
    if (len > this.buf.length) {
      await this.write(Buffer.from(`${text}\n`));
      return;
    }
    this.used += this.buf.write(text, this.used);
    this.buf[this.used++] = 0x0a;
  }

  private async flush(): Promise<void> {
    await this.write(this.buf.subarray(0, this.used));
    this.used = 0;
  }

  private async write(b: Buffer): Promise<void> {
    for (let off = 0; off < b.length;) off += (await this.fh.write(b, off, b.length - off)).bytesWritten;
  }

  async close(): Promise<void> {
    await this.flush();
    await this.fh.close();
  }
}

/** An entry whose JSON text is at hand: a sink that writes lines takes the text as it is. */
function emitLine(out: ManifestSink, json: string, entry: ManifestFile): void | Promise<void> {
  return out.addLine ? out.addLine(json, entry) : out.add(entry);
}

/** A list that stops at LIST_LIMIT (then undefined: too many to fsync one by one). */
function cappedPush(list: string[] | undefined, item: string): string[] | undefined {
  if (!list) return undefined;
  if (list.length >= LIST_LIMIT) return undefined;
  list.push(item);
  return list;
}

async function sha256Of(file: string, size: number, onBytes: (n: number) => void): Promise<string> {
  if (size <= SYNC_HASH_MAX) {
    const sum = sha256SmallSync(file, size);
    if (sum !== undefined) {
      onBytes(size);
      return sum;
    }
  }
  return hashFile(file, onBytes, size);
}

/** What a hard-linked file needs of its entry in the previous manifest. */
export interface PrevFile {
  size: number;
  mtimeMs: number;
  sha256: string;
}

/**
 * PrevFiles by inode, compact and off the JS heap: an open-addressing table of slots (linear
 * probing, at most half full) over typed arrays of inodes, sizes and mtimes, and SHA-256s as
 * 32 raw bytes each: ~64 bytes per file, no object or heap number per entry. A Map from inode
 * to slot plus number arrays (before) held ~10-14 MB for a 120k-file tree, most of it in the
 * JS heap, under every full pass that follows a backup (docs/design/agent-memory.md).
 */
export class CompactFiles {
  private n = 0;
  private inos = new Float64Array(0);
  private sizes = new Float64Array(0);
  private mtimes = new Float64Array(0);
  private shas = Buffer.alloc(0);
  /** Slot + 1 per table position (0: empty); its length a power of two, at least twice the slots'. */
  private table = new Int32Array(0);

  get size(): number {
    return this.n;
  }

  /** A table position for `ino` (inodes are integers up to 2^64, as doubles: both halves mixed). */
  private static mix(ino: number): number {
    const lo = ino >>> 0;
    const hi = Math.floor(ino / 4294967296) >>> 0;
    let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b);
    h ^= h >>> 13;
    return Math.imul(h, 0xc2b2ae35) ^ (h >>> 16);
  }

  /** The position of `ino` in the table, or of the empty place where it would go. */
  private place(ino: number): number {
    const mask = this.table.length - 1;
    for (let i = CompactFiles.mix(ino) & mask; ; i = (i + 1) & mask) {
      const slot = this.table[i];
      if (slot === 0 || this.inos[slot - 1] === ino) return i;
    }
  }

  private grow(): void {
    const cap = Math.max(1024, this.inos.length * 2);
    const more = <T extends Float64Array>(old: T): T => {
      const a = new Float64Array(cap) as T;
      a.set(old);
      return a;
    };
    this.inos = more(this.inos);
    this.sizes = more(this.sizes);
    this.mtimes = more(this.mtimes);
    const shas = Buffer.alloc(cap * 32);
    this.shas.copy(shas);
    this.shas = shas;
    this.table = new Int32Array(cap * 2);
    for (let slot = 0; slot < this.n; slot++) this.table[this.place(this.inos[slot])] = slot + 1;
  }

  set(ino: number, p: PrevFile): void {
    if (!/^[0-9a-f]{64}$/.test(p.sha256)) return;
    if (this.n === this.inos.length) this.grow();
    const i = this.place(ino);
    let slot = this.table[i] - 1;
    if (slot < 0) {
      slot = this.n++;
      this.table[i] = slot + 1;
      this.inos[slot] = ino;
    }
    this.sizes[slot] = p.size;
    this.mtimes[slot] = p.mtimeMs;
    this.shas.write(p.sha256, slot * 32, 32, 'hex');
  }

  get(ino: number): PrevFile | undefined {
    if (this.n === 0) return undefined;
    const slot = this.table[this.place(ino)] - 1;
    if (slot < 0) return undefined;
    return {
      size: this.sizes[slot],
      mtimeMs: this.mtimes[slot],
      sha256: this.shas.toString('hex', slot * 32, slot * 32 + 32),
    };
  }

  clear(): void {
    this.n = 0;
    this.inos = new Float64Array(0);
    this.sizes = new Float64Array(0);
    this.mtimes = new Float64Array(0);
    this.shas = Buffer.alloc(0);
    this.table = new Int32Array(0);
  }
}

/**
 * The previous manifest's checksummed files: by inode (what boxback's tree entries record),
 * and by path for entries without one (archives; then the previous backup's file is looked at).
 */
export interface PrevIndex {
  byIno: CompactFiles;
  byPath: Map<string, PrevFile>;
}

/** An index with nothing in it: every file is hashed. */
export const emptyIndex = (): PrevIndex => ({ byIno: new CompactFiles(), byPath: new Map() });

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
  const index = emptyIndex();
  const head: string[] = [];
  let inFiles = false;
  let lineBased = true;
  let input: Readable | undefined;
  try {
    input = await openFileText(path.join(dir, MANIFEST_FILE));
    const rl = createInterface({ input, crlfDelay: Infinity });
    for await (const line of rl) {
      if (inFiles) {
        if (line.startsWith('  {')) {
          const text = line.endsWith(',') ? line.slice(2, -1) : line.slice(2);
          const q = quickEntry(text);
          // Directories and symlinks carry no checksum: only file lines are read further.
          if (q && q.type !== 'file') continue;
          addPrev(index, quickPrevFile(text) ?? (JSON.parse(text) as Partial<ManifestFile>));
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
  } finally {
    input?.destroy(); // closes the file when the loop stopped early
  }
  if (lineBased) return index;
  // Another layout, or not a manifest: readManifest says which (and throws its error).
  const whole = await readManifest(dir);
  const out = emptyIndex();
  for (const f of whole.files) addPrev(out, f);
  return out;
}

export async function collectFiles(o: CollectOptions): Promise<CollectResult> {
  const prefix = o.subdir ? `${o.subdir}/` : '';
  const treeSet = new Set(o.treeDirs);
  const trees = new Map(o.treeDirs.map((d) => [d, { files: 0, bytes: 0, linkedFiles: 0 }]));
  const res: CollectResult = { entries: 0, files: 0, bytes: 0, trees, hashedBytes: 0, reusedHashes: 0, written: [], dirs: [] };
  const prog = { filesDone: 0, filesTotal: 0, bytesDone: 0, bytesTotal: 0 };
  let last = 0;
  const report = (force = false) => {
    const now = Date.now();
    if (o.onProgress && (force || now - last >= 250)) {
      last = now;
      o.onProgress({ ...prog });
    }
  };
  // Entries wait here, in walk order, until their hash is known; then their line is written.
  const window: Array<{ f: ManifestFile; hashed?: Promise<void>; k?: number }> = [];
  let hashing = 0;
  const waiting: Array<() => void> = [];
  // A full walk with BOXBACK_DESCRIBE_ON_POOL=on and the agent's addon: every file read and
  // hashed on the pool, 256 files a request, two requests at once (file-digests.ts); the JS
  // thread walks and writes lines. A file whose size is no longer the walk's is hashed below as
  // it is now, as before. Off by default: at the default size it took the full backup 27.5 ->
  // 24.8 s but its peak RSS 130.2 -> 149.7 MB (the fallback's 158.5), the trees' description
  // now beside the database lane (docs/design/performance.md, session 18). A journal's roots
  // (an incremental's few hundred new files) stay here: their requests would queue behind the
  // database lane's deflate jobs on the pool, on the incremental's critical path.
  const pending = new Map<number, { f: ManifestFile; abs: string; done: () => void; failed: (err: unknown) => void }>();
  let seq = 0;
  const batches =
    o.roots || process.env.BOXBACK_DESCRIBE_ON_POOL !== 'on'
      ? undefined
      : digestBatcher((k, problem, digests, at) => {
          const p = pending.get(k)!;
          pending.delete(k);
          if (problem) return void hashHere(p.f, p.abs).then(p.done, p.failed);
          p.f.sha256 = digests.toString('hex', at, at + 32);
          prog.bytesDone += p.f.size;
          prog.filesDone++;
          report();
          p.done();
        }, 2);
  const windowSize = batches ? WINDOW * 8 : WINDOW;
  const hash = (f: ManifestFile, abs: string, k: number): Promise<void> => {
    if (!batches) return hashHere(f, abs);
    return new Promise<void>((done, failed) => {
      pending.set(k, { f, abs, done, failed });
      batches.add(abs, f.size, k).catch(failed);
    });
  };
  const hashHere = async (f: ManifestFile, abs: string) => {
    if (f.size <= SMALL_SYNC) {
      // Page cache, a few KiB: one synchronous read costs less than four thread-pool round trips.
      // Through one shared scratch buffer: readFileSync made a buffer per file (a full pass
      // over 120k files: ~2 GB of them, dead at once, freed only by the next GC).
      const sum = sha256SmallSync(abs, f.size);
      if (sum !== undefined) {
        prog.bytesDone += f.size;
        f.sha256 = sum;
        prog.filesDone++;
        report();
        return;
      }
      // Its size changed since the walk: hashed as it is now, below.
    }
    if (hashing >= HASHING) await new Promise<void>((r) => waiting.push(r));
    hashing++;
    try {
      o.signal?.throwIfAborted();
      f.sha256 = await sha256Of(abs, f.size, (n) => {
        prog.bytesDone += n;
      });
      prog.filesDone++;
      report();
    } finally {
      hashing--;
      waiting.shift()?.();
    }
  };
  const writeHead = async () => {
    const x = window.shift()!;
    // Its batch sent before it is waited on.
    if (x.hashed && batches?.isOpen(x.k!)) await batches.flush();
    if (x.hashed) await x.hashed;
    await o.out.add(x.f);
    res.entries++;
  };

  const onEntry = (walked: WalkEntry): Promise<void> | undefined => {
    const e = prefix ? { ...walked, rel: prefix + walked.rel } : walked;
    const st = e.st;
    if (!st.isDirectory() && !st.isSymbolicLink() && !st.isFile()) return undefined;
    const top = e.rel.split('/')[0];
    const tree = treeSet.has(top) && e.rel !== top ? trees.get(top) : undefined;
    const type: ManifestFile['type'] = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file';
    const f: ManifestFile = {
      path: e.rel,
      type,
      size: type === 'file' ? st.size : 0,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      mtimeMs: Math.round(st.mtimeMs),
    };
    const x: { f: ManifestFile; hashed?: Promise<void>; k?: number } = { f };
    if (type === 'dir') res.dirs = cappedPush(res.dirs, e.abs);
    if (type === 'symlink') f.target = readlinkSync(e.abs);
    if (type === 'file') {
      const known = o.known.get(e.rel);
      if (known) f.sha256 = known;
      else if (tree) {
        f.ino = st.ino;
        const p = o.prev && st.nlink > 1 ? prevFileOf(o.prev, e.rel, st.ino) : undefined;
        if (p && p.size === st.size && p.mtimeMs === f.mtimeMs) {
          f.sha256 = p.sha256;
          res.reusedHashes++;
          tree.linkedFiles++;
        }
      }
      if (!f.sha256) {
        prog.filesTotal++;
        prog.bytesTotal += f.size;
        res.written = cappedPush(res.written, e.abs);
        x.k = seq++;
        x.hashed = hash(f, e.abs, x.k);
        // Awaited in order by writeHead; a failure is thrown there.
        x.hashed.catch(() => undefined);
      }
    }
    if (type !== 'dir') {
      res.files++;
      res.bytes += f.size;
      if (tree) {
        tree.files++;
        tree.bytes += f.size;
      }
    }
    window.push(x);
    if (window.length < windowSize) return undefined;
    return (async () => {
      while (window.length >= windowSize / 2) await writeHead();
    })();
  };
  const skip = new Set(o.skipDirs ?? []);
  const base = o.subdir ? path.join(o.dir, o.subdir) : o.dir;
  if (o.roots) {
    // Only these paths (and what lies under them), in walk order.
    for (const root of o.roots) {
      const abs = path.join(base, ...root.split('/'));
      let st: Stats;
      try {
        st = lstatSync(abs);
      } catch {
        continue; // deleted
      }
      const wait = onEntry({ rel: root, abs, st });
      if (wait) await wait;
      if (!st.isDirectory()) continue;
      await walkTree(abs, { signal: o.signal, onEntry: (e) => onEntry({ ...e, rel: `${root}/${e.rel}` }), collect: false });
    }
  } else {
    await walkTree(base, {
      exclude: (rel) => !prefix && (rel === STAGE_DIR || rel === MANIFEST_FILE || rel.startsWith('.')),
      noDescend: (rel) => !prefix && skip.has(rel),
      signal: o.signal,
      onEntry,
      collect: false,
    });
  }
  try {
    while (window.length) await writeHead();
  } finally {
    await batches?.drain().catch(() => undefined);
  }
  for (const [rel] of o.known) if (!prefix || rel.startsWith(prefix)) res.written = cappedPush(res.written, path.join(o.dir, rel));
  res.hashedBytes = prog.bytesDone;
  report(true);
  return res;
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

export type ManifestParts = Omit<Manifest, 'format' | 'agentVersion' | 'totals'> & { totals?: Manifest['totals'] };

/** The manifest document, with totals computed from its files (or given, when its files are in parts on disk). */
export function buildManifest(parts: ManifestParts): Manifest {
  if (parts.totals) return { format: MANIFEST_FORMAT, agentVersion: BOXBACK_VERSION, ...parts, totals: parts.totals };
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

/**
 * manifest.json's text in pieces, for a manifest whose file list is in part files (PartWriter):
 * the same text manifestToJson gives for the same entries (each part's non-empty lines, in
 * order, joined by ",\n  "). A part is read in 64 KiB chunks of text and each chunk's complete
 * lines are joined in one `split` and `join` (a JSON line holds no raw newline): a 120k-entry
 * manifest was 120k lines through readline and as many pieces through an async generator, on
 * the JS thread at the end of every backup (PUBLISH). `chunk`: the chunk size (tests).
 */
export async function* manifestPieces(m: Manifest, parts: string[], chunk?: number): AsyncGenerator<string> {
  const head = JSON.stringify({ ...m, files: '@FILES@' }, null, 1);
  const at = head.indexOf('"@FILES@"');
  let first = true;
  /** `text`'s lines (no newline at its end), empty ones left out, as the file list's next piece. */
  const piece = (text: string): string | undefined => {
    const lines = text.split('\n');
    let joined = lines.every((l) => l !== '') ? lines.join(',\n  ') : lines.filter((l) => l !== '').join(',\n  ');
    if (joined === '') return undefined;
    joined = first ? `${head.slice(0, at)}[\n  ${joined}` : `,\n  ${joined}`;
    first = false;
    return joined;
  };
  for (const part of parts) {
    const input = await openFileText(part, chunk);
    let carry = '';
    try {
      for await (const text of input as AsyncIterable<string>) {
        const all = carry + text;
        const end = all.lastIndexOf('\n');
        if (end < 0) {
          carry = all;
          continue;
        }
        carry = all.slice(end + 1);
        const p = piece(all.slice(0, end));
        if (p !== undefined) yield p;
      }
      const p = carry === '' ? undefined : piece(carry);
      if (p !== undefined) yield p;
    } finally {
      input.destroy(); // closes the file when the consumer stopped early
    }
  }
  yield first ? `${head.slice(0, at)}[]${head.slice(at + 9)}\n` : `\n ]${head.slice(at + 9)}\n`;
}

/**
 * walk.ts's order: a directory's entries (names sorted) all come before the content of any of
 * its subdirectories, which follow one subdirectory after the other in name order.
 */
export function walkOrder(a: string, b: string): number {
  return walkOrderOfParts(a.split('/'), b.split('/'));
}

/** Paths reduced to roots (none under another), in walk order. */
export function rootsInWalkOrder(paths: Iterable<string>): string[] {
  const all = new Set([...paths].filter((p) => p !== '' && p !== '.'));
  const out: string[] = [];
  for (const p of all) {
    const parts = p.split('/');
    let covered = false;
    for (let i = 1; i < parts.length && !covered; i++) covered = all.has(parts.slice(0, i).join('/'));
    if (!covered) out.push(p);
  }
  return out.sort(walkOrder);
}

/** manifestChunks' file lines begin with these three fields, in this order. */
const LINE_HEAD = /^\{"path":"((?:[^"\\]|\\.)*)","type":"(file|dir|symlink)","size":(\d+),/;

/**
 * The path, type and size of a manifest file line, read without parsing the whole line (a
 * line kept as it is needs no more); undefined when the line does not start as
 * manifestChunks writes it (then it is parsed).
 */
export function quickEntry(line: string): ManifestFile | undefined {
  const m = LINE_HEAD.exec(line);
  if (!m) return undefined;
  const p = m[1].includes('\\') ? (JSON.parse(`"${m[1]}"`) as string) : m[1];
  // Only these three fields are read by the caller; the line itself is what is written.
  return { path: p, type: m[2] as ManifestFile['type'], size: Number(m[3]) } as ManifestFile;
}

/** After the three head fields: mode, uid, gid, mtimeMs, an optional ino, then sha256 (manifestChunks' order). */
const FILE_TAIL =
  /^\{"path":"((?:[^"\\]|\\.)*)","type":"file","size":(\d+),"mode":\d+,"uid":\d+,"gid":\d+,"mtimeMs":(\d+),(?:"ino":(\d+),)?"sha256":"([0-9a-f]{64})"/;

/** What readPrevIndex keeps of a file line, read without JSON.parse; undefined: parse it. */
function quickPrevFile(line: string): Partial<ManifestFile> | undefined {
  const m = FILE_TAIL.exec(line);
  // An entry written in another key order (its ino after the sha256) is parsed whole.
  if (!m || (!m[4] && line.includes('"ino":'))) return undefined;
  const p = m[1].includes('\\') ? (JSON.parse(`"${m[1]}"`) as string) : m[1];
  return { path: p, type: 'file', size: Number(m[2]), mtimeMs: Number(m[3]), ...(m[4] ? { ino: Number(m[4]) } : {}), sha256: m[5] };
}

/**
 * Describe a tree that is the previous backup's tree plus changes under known roots (a
 * trusted change journal): without walking the tree. The previous manifest's lines of
 * this tree are kept as they are (hard links: same inode, same bytes), except under a root
 * (described afresh, collectFiles with `roots`) and for the roots' ancestor directories
 * (their mtime changed: lstat again). The result is the same manifest part a full walk
 * gives (test/agent/describe-from-previous.test.ts checks it against collectFiles).
 * Throws when the previous manifest is not line based: the caller walks instead.
 */
export async function describeFromPrevious(
  o: Omit<CollectOptions, 'roots' | 'subdir'> & {
    subdir: string;
    roots: string[];
    prevManifest: string;
    /** A scratch file for the roots' lines (removed when done). */
    scratch: string;
    /**
     * The tree is a link farm flushed when it was made (link-farm.ts): its unchanged
     * directories are left out of `dirs` (what the backup fsyncs); the roots' ancestors,
     * whose entries changed, and the roots' own directories stay in.
     */
    durableFarm?: boolean;
  },
): Promise<CollectResult> {
  const prefix = `${o.subdir}/`;
  const roots = rootsInWalkOrder(o.roots);
  if (roots.length === 0 && o.roots.some((r) => r === '' || r === '.')) throw new Error('the whole tree changed');
  const rootSet = new Set(roots);
  const inRoots = (rel: string): boolean => {
    if (rootSet.has(rel)) return true;
    for (let i = rel.indexOf('/'); i !== -1; i = rel.indexOf('/', i + 1)) if (rootSet.has(rel.slice(0, i))) return true;
    return false;
  };
  const ancestors = new Set<string>();
  for (const r of roots) {
    const parts = r.split('/');
    for (let i = 1; i < parts.length; i++) ancestors.add(parts.slice(0, i).join('/'));
  }
  // 1. The roots, described afresh into their own part.
  const rootsPart = await PartWriter.create(o.scratch);
  let fresh: CollectResult;
  try {
    fresh = await collectFiles({ ...o, subdir: o.subdir, roots, out: rootsPart });
  } finally {
    await rootsPart.close();
  }
  const tree = fresh.trees.get(o.subdir) ?? { files: 0, bytes: 0, linkedFiles: 0 };
  const res: CollectResult = { ...fresh, entries: 0, trees: new Map([[o.subdir, tree]]), dirs: fresh.dirs };
  // 2. Merge: the previous lines (minus the roots, ancestors refreshed) with the roots' lines,
  // sorted into walk order (a root directory's content comes after its siblings' entries).
  const freshLines = readFileSync(rootsPart.file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const entry = JSON.parse(line) as ManifestFile;
      return { line, entry, path: entry.path, parts: entry.path.split('/') };
    })
    .sort((a, b) => walkOrderOfParts(a.parts, b.parts));
  let next = 0;
  const emitFreshBefore = async (p: string | undefined) => {
    // Called for every kept line: the line's path is split once, the fresh lines' were split up front.
    const parts = p === undefined || next >= freshLines.length ? undefined : p.split('/');
    while (next < freshLines.length && (parts === undefined || walkOrderOfParts(freshLines[next].parts, parts) < 0)) {
      const l = freshLines[next++];
      await emitLine(o.out, l.line, l.entry);
      res.entries++;
    }
  };
  let inFiles = false;
  let lineBased = false;
  // Read on the JS thread: the manifest was read into the page cache while the tree synced
  // (through the pool each 64 KiB chunk waited behind the archives' 1 MiB jobs: a small
  // incremental's describe took 0.22-0.37 s, 0.10-0.19 s this way, 3 alternated pairs).
  const prev = fileLinesSync(o.prevManifest);
  // Nothing here waits for I/O but the part's 1 MiB writes: the JS thread is given back every
  // few ms so that the archives beside the trees (db.zip's next blocks) are not held up.
  let turn = performance.now();
  let lines = 0;
  try {
    for (const raw of prev) {
      if ((++lines & 255) === 0 && performance.now() - turn >= 4) {
        await new Promise(setImmediate);
        turn = performance.now();
      }
      if (!inFiles) {
        if (raw === ' "files": [') inFiles = lineBased = true;
        continue;
      }
      if (!raw.startsWith('  {')) break;
      const line = raw.endsWith(',') ? raw.slice(2, -1) : raw.slice(2);
      // Most lines are kept as they are: only their path, type and size are read (no JSON.parse).
      const f = (o.out.addLine && quickEntry(line)) || (JSON.parse(line) as ManifestFile);
      if (!f.path.startsWith(prefix)) continue;
      const rel = f.path.slice(prefix.length);
      if (inRoots(rel)) continue;
      await emitFreshBefore(f.path);
      let out = line;
      let entry = f;
      if (ancestors.has(rel)) {
        const st = lstatSync(path.join(o.dir, ...f.path.split('/')));
        entry = {
          ...(JSON.parse(line) as ManifestFile),
          mode: st.mode & 0o7777,
          uid: st.uid,
          gid: st.gid,
          mtimeMs: Math.round(st.mtimeMs),
        };
        out = JSON.stringify(entry);
      }
      if (entry.type === 'dir') {
        if (!o.durableFarm || ancestors.has(rel)) res.dirs = cappedPush(res.dirs, path.join(o.dir, ...entry.path.split('/')));
      } else {
        res.files++;
        res.bytes += entry.size;
        tree.files++;
        tree.bytes += entry.size;
        if (entry.type === 'file') tree.linkedFiles++;
      }
      await emitLine(o.out, out, entry);
      res.entries++;
    }
  } finally {
    prev.return(); // the loop stops at the end of the file list, before the end of the file: close it
  }
  if (!lineBased) throw new Error(`${o.prevManifest} is not one line per file`);
  await emitFreshBefore(undefined);
  rmSync(rootsPart.file, { force: true });
  return res;
}

/**
 * The journal's changed paths as roots a description can trust: each one promoted to its
 * highest ancestor that is not a real directory in both the new tree and the previous one
 * (a directory that became a symlink or a file, or vanished), as the incremental sync does.
 */
export async function promoteRoots(changed: string[], tree: string, prevTree: string): Promise<string[]> {
  // On the JS thread (inode cache, microseconds): the pool's threads may be busy with 1 MiB archive jobs.
  const isDir = (p: string) => lstatSync(p, { throwIfNoEntry: false })?.isDirectory() === true;
  const known = new Map<string, boolean>();
  const bothDirs = (rel: string) => {
    let v = known.get(rel);
    if (v === undefined) {
      v = isDir(path.join(tree, rel)) && isDir(path.join(prevTree, rel));
      known.set(rel, v);
    }
    return v;
  };
  const out: string[] = [];
  for (const raw of changed) {
    const p = path.posix.normalize(raw.split(path.sep).join('/')).replace(/^\/+|\/+$/g, '');
    if (p === '' || p === '.' || p === '..' || p.startsWith('../')) return ['']; // the whole tree
    const parts = p.split('/');
    let root = p;
    for (let i = 1; i < parts.length; i++) {
      const anc = parts.slice(0, i).join('/');
      if (!bothDirs(anc)) {
        root = anc;
        break;
      }
    }
    out.push(root);
  }
  return out;
}
