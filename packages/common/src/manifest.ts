/**
 * The backup format both sides read: a directory `backup_{YYYYMMdd-HHmmss}` in the store
 * (under `<store>/<host>/`) holding GoCD's archives, boxback's extra archives and synced
 * trees, and `manifest.json` describing every file (size, SHA-256, owner, mode), the
 * source box, the consistency mode and each phase. See docs/design/store-layout.md.
 */
import { createHash } from 'node:crypto';
import { lstatSync, promises as fsp, readlinkSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { BoxbackError } from './errors.js';
import { digestFile } from './file-digests.js';
import { openFileText } from './file-text.js';
import { SYNC_HASH_MAX, sha256SmallSync, yieldEvery } from './hash-sync.js';
import { mapLimit } from './limit.js';
import { checkBackupZips } from './zip-read.js';

export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_FORMAT = 'boxback/manifest@1';
export const BACKUP_DIR_RE = /^backup_(\d{8}-\d{6})$/;

export type Consistency = 'quiesced' | 'live';
export type QuiesceMode = 'stop' | 'maintenance' | 'none';

export interface ManifestFile {
  /** Path relative to the backup directory, '/'-separated. */
  path: string;
  type: 'file' | 'symlink' | 'dir';
  size: number;
  /** Hex SHA-256 of the content (regular files only). */
  sha256?: string;
  /** Permission bits (st_mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  /** Symlink target, as stored. */
  target?: string;
  /**
   * Inode number in the store (tree files only). The next backup's tree files hard-linked
   * to this one share it, so their SHA-256 is reused instead of re-read.
   */
  ino?: number;
}

export interface ManifestPhase {
  name: string;
  state: 'done' | 'failed' | 'skipped';
  startedAt: string;
  endedAt: string;
  durationMs: number;
  bytes: number;
  files: number;
}

export type DatasetKindName = 'zip' | 'postgres' | 'h2' | 'sqlite' | 'mysql';

export interface ManifestProbe {
  result: 'ok' | 'failed';
  /** What was run: "SCRIPT on the copy opened read-only", "PRAGMA integrity_check"... */
  method: string;
  durationMs: number;
  /** The engine's own words (a failure's message, or a count). */
  message?: string;
}

export interface ManifestDataset {
  /** Dataset name from the plan (database, config, config-repo...). */
  name: string;
  /** File in the backup directory: db.zip, config-dir.zip, db.<dbname>... */
  archive: string;
  /**
   * The dataset driver that wrote it, named as the plan's kind (packages/agent/src/datasets/).
   * Manifests before drivers wrote `pg_dump` for a postgres dump: still read as postgres.
   */
  kind: DatasetKindName | 'pg_dump';
  /**
   * How the copy was taken: inside the quiesce window; by the engine's own online copy; live
   * for data the plan says needs no window; live-unverified: a database file copied while its
   * service ran, with nothing to prove it opens. Absent in older manifests.
   */
  capture?: 'quiesced' | 'engine' | 'live' | 'live-unverified';
  /** The consistency probe: the copy opened in its real engine (datasets/<kind>.ts). */
  probe?: ManifestProbe;
  /** Absolute source paths on the box; each becomes a top-level entry of the archive. */
  sources: string[];
  /** Where the archive extracts to on restore (absolute directory). */
  target: string;
  owner?: { user: string; group: string };
  /** Entries and uncompressed bytes in the archive. */
  entries: number;
  bytes: number;
  /** Extra per-kind facts (pg_dump: format, server version). */
  extra?: Record<string, unknown>;
}

export interface ManifestTree {
  /** Tree name from the plan (artifacts, test-reports). */
  name: string;
  /** Directory inside the backup directory. */
  dir: string;
  /** Absolute source directory on the box (and restore target). */
  source: string;
  owner?: { user: string; group: string };
  files: number;
  bytes: number;
  /** Files that cost only a hard link to the previous backup. */
  linkedFiles: number;
  /** How the tree was synced: a full rsync pass, or only journaled paths. */
  syncMode: 'full' | 'journal';
  /** Why the tree was synced with a full rsync pass (journal untrusted, first backup, periodic pass...). */
  syncReason?: string;
  /** Paths the journal listed as changed (syncMode journal). */
  changedPaths?: number;
}

export interface Manifest {
  format: string;
  /** Backup ID: "<host>@<YYYYMMdd-HHmmss>". */
  id: string;
  host: string;
  /** UTC timestamp of the directory name. */
  timestamp: string;
  createdAt: string;
  completedAt: string;
  origin: 'boxback' | 'gocd-import';
  agentVersion: string;
  plan: { name: string; product: string };
  product: { name: string; version: string | null };
  source: { hostname: string; addresses: string[] };
  consistency: Consistency;
  /**
   * windowMs: services quiesced (their stop begun to their start done); copyMs: the consistent
   * copy inside it; stopMs, startMs: the services' own stop and start inside it (the rest is ours).
   */
  quiesce: { mode: QuiesceMode; windowMs: number; copyMs?: number; stopMs?: number; startMs?: number };
  initiatedBy?: string;
  initiatedVia?: string;
  /** Store-relative path of the backup the trees were hard-linked against. */
  previous?: string;
  phases: ManifestPhase[];
  datasets: ManifestDataset[];
  trees: ManifestTree[];
  /** Every file in the backup directory except manifest.json itself. */
  files: ManifestFile[];
  totals: { files: number; bytes: number };
  warnings: string[];
}

/**
 * The consistency a listing shows: the manifest's, or `live-unverified` when a dataset was
 * copied live with nothing to prove it opens (a plain zip of a database file, --live).
 */
export function consistencyOf(m: Pick<Manifest, 'consistency' | 'datasets'>): string {
  if ((m.datasets ?? []).some((d) => d.capture === 'live-unverified')) return 'live-unverified';
  return m.consistency ?? '';
}

/** One line per dataset for `backup get`: kind, how it was copied, the probe's result. */
export function datasetFacts(d: ManifestDataset): string {
  const capture = {
    quiesced: 'copied quiesced',
    engine: "the engine's online copy",
    live: 'copied live',
    'live-unverified': 'LIVE-UNVERIFIED: copied live, nothing proves it opens',
  }[d.capture ?? 'live'];
  const probe = d.probe
    ? `; probe ${d.probe.result} in ${(d.probe.durationMs / 1000).toFixed(1)} s (${d.probe.method}${d.probe.message ? `: ${d.probe.message}` : ''})`
    : '';
  return `${d.kind === 'pg_dump' ? 'postgres' : d.kind}${d.capture ? `, ${capture}` : ''}${probe}`;
}

export function formatTimestamp(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}-${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}`;
}

export function parseTimestamp(ts: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})$/.exec(ts);
  if (!m) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad backup timestamp "${ts}" (want YYYYMMdd-HHmmss)`);
  return new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]));
}

export function backupId(host: string, timestamp: string): string {
  return `${host}@${timestamp}`;
}

/** Store-relative directory of a backup: "<host>/backup_<timestamp>". */
export function backupRelPath(host: string, timestamp: string): string {
  return `${host}/backup_${timestamp}`;
}

/** Resolve a store-relative backup path, refusing anything that escapes the store. */
export function resolveInStore(store: string, rel: string): string {
  const parts = rel.split('/');
  if (parts.length !== 2 || !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(parts[0]) || !BACKUP_DIR_RE.test(parts[1])) {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad backup path "${rel}": want "<host>/backup_YYYYMMdd-HHmmss"`);
  }
  return path.join(store, parts[0], parts[1]);
}

/** hashFile's read buffers, reused file after file (at most HASH_BUFFERS of each size kept). */
const HASH_BUFFER = 1 << 20;
/** For a file of up to SMALL_HASH_UP_TO bytes (sizeHint): a tree's files, read in a few pieces. */
const SMALL_HASH_BUFFER = 256 << 10;
const SMALL_HASH_UP_TO = 4 << 20;
const HASH_BUFFERS = 8;
const hashBuffers = new Map<number, Buffer[]>([
  [HASH_BUFFER, []],
  [SMALL_HASH_BUFFER, []],
]);

/**
 * SHA-256 (hex) of `file`, read through a pooled buffer: a buffer read per file (fsp.readFile,
 * or one sized to it) was, at 120k tree files, gigabytes of ArrayBuffers that V8 collects only
 * every ~64 MB of them (docs/design/agent-memory.md). 1 MiB buffers, or 256 KiB ones for a file
 * whose `sizeHint` is up to 4 MiB: a full pass hashes a tree's files 4 at a time, and the pool
 * (kept by the daemon between jobs) then holds 1 MiB instead of 4. A file that grew past its
 * hint is read whole all the same.
 */
export async function hashFile(file: string, onBytes?: (n: number) => void, sizeHint?: number): Promise<string> {
  const h = createHash('sha256');
  const size = sizeHint !== undefined && sizeHint <= SMALL_HASH_UP_TO ? SMALL_HASH_BUFFER : HASH_BUFFER;
  const pool = hashBuffers.get(size)!;
  const buf = pool.pop() ?? Buffer.allocUnsafeSlow(size);
  try {
    const fh = await fsp.open(file, 'r');
    try {
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) break;
        h.update(buf.subarray(0, bytesRead));
        onBytes?.(bytesRead);
      }
    } finally {
      await fh.close();
    }
  } finally {
    // Hashed (update copies nothing out): the buffer takes the next file.
    if (pool.length < HASH_BUFFERS) pool.push(buf);
  }
  return h.digest('hex');
}

export async function readManifest(dir: string): Promise<Manifest> {
  const file = path.join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new BoxbackError(
      'BOXBACK_ERR_MANIFEST_INVALID',
      `${file}: ${code === 'ENOENT' ? 'missing (not a boxback backup, or an unfinished one)' : code}`,
    );
  }
  return parseManifestText(text, file);
}

/** MANIFEST_INVALID unless `p` is a relative path that stays inside the backup. */
function checkEntryPath(p: unknown, where: string): void {
  if (typeof p !== 'string' || p.startsWith('/') || p.split('/').includes('..')) {
    throw new BoxbackError('BOXBACK_ERR_MANIFEST_INVALID', `${where} names an unsafe path "${String(p)}"`);
  }
}

/** A file line's path (manifestChunks writes it first), read without parsing the whole line. */
const LINE_PATH = /^\{"path":"((?:[^"\\]|\\.)*)"/;

/** The path of a manifest file line (its JSON text); parsed whole when it does not begin as manifestChunks writes it. */
export function pathOfLine(json: string): string {
  const m = LINE_PATH.exec(json);
  if (!m) return (JSON.parse(json) as ManifestFile).path;
  return m[1].includes('\\') ? (JSON.parse(`"${m[1]}"`) as string) : m[1];
}

/** manifestChunks' file lines begin with these three fields, in this order. */
const LINE_HEAD = /^\{"path":"((?:[^"\\]|\\.)*)","type":"(file|dir|symlink)","size":(\d+),/;

/**
 * `s` as a string of its own. A string cut out of a manifest line (slice, a regex group) is, in
 * V8, a view of the text chunk the line came from (256 KiB, file-text.ts), which it keeps
 * alive: a map of 100k paths kept that way holds the whole manifest text (100k entries: 49 MB
 * of live heap against 32 MB, test/store/manifest-stream.test.ts). A concatenation sliced
 * again is flattened into a new string first.
 */
export function ownString(s: string): string {
  return ` ${s}`.slice(1);
}

/** The path, type and size of a manifest file line (its JSON text), read without parsing it when it begins as manifestChunks writes it. */
export function lineHead(json: string): Pick<ManifestFile, 'path' | 'type' | 'size'> {
  const m = LINE_HEAD.exec(json);
  if (!m) {
    const f = JSON.parse(json) as ManifestFile;
    return { path: f.path, type: f.type, size: Number(f.size) || 0 };
  }
  return { path: m[1].includes('\\') ? (JSON.parse(`"${m[1]}"`) as string) : m[1], type: m[2] as ManifestFile['type'], size: Number(m[3]) };
}

/**
 * Read a manifest one file line at a time, so that a 100k-file manifest is never one string
 * or 100k objects in memory (manifestChunks writes one line per file):
 *   1. the lines before ` "files": [` and after its ` ]` are the manifest's head and tail
 *   2. each file line's JSON text goes to `onFile`, in order, its path checked as
 *      parseManifestText checks it (awaited: `onFile` may hold the read back)
 *   3. the head and tail are parsed and checked (format, files an array); the manifest comes
 *      back with `files: []`
 * A manifest in another layout (all on one line, every field on its own line) is read whole
 * from a second `open()` when its first file line is not one entry, and its entries go to
 * `onFile` the same way. Throws MANIFEST_INVALID like parseManifestText; `where` names it.
 */
export async function scanManifest(
  open: () => Readable | Promise<Readable>,
  where: string,
  onFile: (json: string) => void | Promise<void>,
): Promise<Manifest> {
  const head: string[] = [];
  let state: 'head' | 'files' | 'tail' = 'head';
  let emitted = 0;
  let otherLayout = false;
  const input = await open();
  const rl = createInterface({ input, crlfDelay: Infinity });
  try {
    for await (const line of rl) {
      if (state !== 'files') {
        if (state === 'head' && line === ' "files": [') state = 'files';
        else head.push(line);
        continue;
      }
      if (line.startsWith('  {"') && (line.endsWith('}') || line.endsWith('},'))) {
        const json = line.endsWith(',') ? line.slice(2, -1) : line.slice(2);
        try {
          checkEntryPath(pathOfLine(json), where);
          await onFile(json);
        } catch (err) {
          // A line that is not JSON (the caller parses it): the manifest is damaged.
          if (err instanceof SyntaxError) throw new BoxbackError('BOXBACK_ERR_MANIFEST_INVALID', `${where} is not valid JSON`);
          throw err;
        }
        emitted++;
        continue;
      }
      const close = /^ \](,?)$/.exec(line);
      if (close) {
        head.push(` "files": []${close[1]}`);
        state = 'tail';
        continue;
      }
      if (emitted > 0) throw new BoxbackError('BOXBACK_ERR_MANIFEST_INVALID', `${where} is not valid JSON`);
      otherLayout = true;
      break;
    }
  } finally {
    rl.close();
    input.destroy();
  }
  let m: Manifest;
  if (otherLayout) {
    const chunks: string[] = [];
    const again = await open();
    again.setEncoding('utf8');
    for await (const c of again) chunks.push(c as string);
    m = parseManifestText(chunks.join(''), where);
  } else {
    if (state === 'files') throw new BoxbackError('BOXBACK_ERR_MANIFEST_INVALID', `${where} is not valid JSON`);
    m = parseManifestText(head.join('\n'), where);
  }
  // A manifest read whole (another layout, or all on one line): its entries, one at a time.
  for (const f of m.files) await onFile(JSON.stringify(f));
  return { ...m, files: [] };
}

/** scanManifest of a manifest file; a missing one throws as readManifest does. */
export async function scanManifestFile(file: string, onFile: (json: string) => void | Promise<void>, where = file): Promise<Manifest> {
  const open = async () => {
    try {
      return await openFileText(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new BoxbackError(
        'BOXBACK_ERR_MANIFEST_INVALID',
        `${file}: ${code === 'ENOENT' ? 'missing (not a boxback backup, or an unfinished one)' : code}`,
      );
    }
  };
  return scanManifest(open, where, onFile);
}

/** A manifest's text as a stream, for scanManifest (a store that only gives the whole text). */
export function textStream(text: string): Readable {
  return Readable.from([text], { objectMode: false });
}

/** A manifest's text, parsed and checked (format, no unsafe path); `where` names it in errors. */
export function parseManifestText(text: string, where: string): Manifest {
  let m: Manifest;
  try {
    m = JSON.parse(text) as Manifest;
  } catch {
    throw new BoxbackError('BOXBACK_ERR_MANIFEST_INVALID', `${where} is not valid JSON`);
  }
  if (m.format !== MANIFEST_FORMAT || !Array.isArray(m.files)) {
    throw new BoxbackError('BOXBACK_ERR_MANIFEST_INVALID', `${where} is not a ${MANIFEST_FORMAT} manifest`);
  }
  for (const f of m.files) checkEntryPath(f.path, where);
  return m;
}

export interface VerifyResult {
  ok: boolean;
  filesChecked: number;
  bytesChecked: number;
  problems: string[];
  durationMs: number;
}

export interface VerifyProgress {
  filesDone: number;
  filesTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

/** Which files to read and hash (the others: presence and size only). */
type ReadData = (f: ManifestFile) => boolean;

const pauseAfterSmall = yieldEvery();

/** One entry of a backup directory against the manifest: a problem line pushed when it differs. */
async function checkEntry(
  dir: string,
  f: ManifestFile,
  readData: ReadData,
  problems: string[],
  onBytes: (n: number) => void,
  /** Where the entry's copy is read (default: its place in `dir`); problem lines still name `f.path`. */
  abs = path.join(dir, ...f.path.split('/')),
): Promise<void> {
  const read = f.type === 'file' && readData(f);
  if (f.type === 'file' && f.size <= SYNC_HASH_MAX && read) {
    // A small file: checked synchronously (hash-sync.ts), the event loop given back now and then.
    const problem = checkSmallSync(abs, f);
    if (problem) problems.push(problem);
    else onBytes(f.size);
    return pauseAfterSmall();
  }
  if (!read) {
    // Presence, type, size or link target only: one lstat from the inode cache, synchronously.
    // Through the thread pool each waited behind the restore's inflate, write and hash jobs
    // (36k tree files sized: 12-25 s beside a restore's staging, most of it queueing).
    const problem = checkStatSync(abs, f);
    if (problem) problems.push(problem);
    return pauseAfterSmall();
  }
  // A large file read and hashed through the thread pool.
  try {
    const st = await fsp.lstat(abs);
    if (!st.isFile()) {
      problems.push(`${f.path}: expected a regular file`);
    } else if (st.size !== f.size) {
      problems.push(`${f.path}: size ${st.size}, manifest says ${f.size}`);
    } else {
      // On the pool in one request with the agent's addon (file-digests.ts), else here.
      const native = await digestFile(abs, f.size);
      if (native && 'problem' in native) problems.push(`${f.path}: ${native.problem === 'ENOENT' ? 'missing' : native.problem}`);
      else {
        const sum = native ? native.sha256 : await hashFile(abs, onBytes, f.size);
        if (native) onBytes(f.size);
        if (sum !== f.sha256) problems.push(`${f.path}: SHA-256 mismatch`);
      }
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    problems.push(`${f.path}: ${code === 'ENOENT' ? 'missing' : (code ?? (err as Error).message)}`);
  }
}

/** Progress of a verify, reported at most every 200 ms (and once more at the end, forced). */
function progressOf(onProgress: ((p: VerifyProgress) => void) | undefined, prog: VerifyProgress): (force?: boolean) => void {
  let lastEmit = 0;
  return (force = false) => {
    const now = Date.now();
    if (onProgress && (force || now - lastEmit > 200)) {
      lastEmit = now;
      onProgress({ ...prog });
    }
  };
}

/** An entry's presence, type, size (a file) or target (a symlink), synchronously, its content not read: a problem line, or undefined. */
function checkStatSync(abs: string, f: ManifestFile): string | undefined {
  try {
    const st = lstatSync(abs);
    if (f.type === 'symlink') {
      if (!st.isSymbolicLink()) return `${f.path}: expected a symlink`;
      return readlinkSync(abs) === f.target ? undefined : `${f.path}: symlink target changed`;
    }
    if (!st.isFile()) return `${f.path}: expected a regular file`;
    return st.size === f.size ? undefined : `${f.path}: size ${st.size}, manifest says ${f.size}`;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return `${f.path}: ${code === 'ENOENT' ? 'missing' : (code ?? (err as Error).message)}`;
  }
}

/** A small file of a backup against its entry, synchronously: a problem line, or undefined. */
function checkSmallSync(abs: string, f: ManifestFile): string | undefined {
  try {
    const st = lstatSync(abs);
    if (!st.isFile()) return `${f.path}: expected a regular file`;
    if (st.size !== f.size) return `${f.path}: size ${st.size}, manifest says ${f.size}`;
    const sum = sha256SmallSync(abs, f.size);
    if (sum === undefined) return `${f.path}: size changed while it was read`;
    return sum === f.sha256 ? undefined : `${f.path}: SHA-256 mismatch`;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return `${f.path}: ${code === 'ENOENT' ? 'missing' : (code ?? (err as Error).message)}`;
  }
}

/** Re-hash every file of a backup directory and compare with its manifest. */
export async function verifyBackupDir(
  dir: string,
  manifest?: Manifest,
  onProgress?: (p: VerifyProgress) => void,
  concurrency = 4,
  /** Which files to read and hash (default every one); the others are checked for presence and size only. */
  readData: ReadData = () => true,
  signal?: AbortSignal,
): Promise<VerifyResult> {
  const started = Date.now();
  const m = manifest ?? (await readManifest(dir));
  const problems: string[] = [];
  const files = m.files.filter((f) => f.type !== 'dir');
  const bytesTotal = files.reduce((s, f) => s + (f.type === 'file' ? f.size : 0), 0);
  const prog: VerifyProgress = { filesDone: 0, filesTotal: files.length, bytesDone: 0, bytesTotal };
  const emit = progressOf(onProgress, prog);
  const onBytes = (n: number) => {
    prog.bytesDone += n;
    emit();
  };
  await mapLimit(files, concurrency, async (f) => {
    signal?.throwIfAborted();
    await checkEntry(dir, f, readData, problems, onBytes);
    prog.filesDone++;
    emit();
  });
  emit(true);
  return verifyResult(problems, prog, started);
}

function verifyResult(problems: string[], prog: VerifyProgress, started: number): VerifyResult {
  problems.sort();
  return {
    ok: problems.length === 0,
    filesChecked: prog.filesDone,
    bytesChecked: prog.bytesDone,
    problems,
    durationMs: Date.now() - started,
  };
}

/**
 * verifyBackupDir with the manifest read as it goes (scanManifestFile): at most `concurrency`
 * entries are held at once, whatever the backup's size. The progress' totals grow as the
 * manifest is read (they are the entries seen so far).
 */
export async function verifyBackupDirStreamed(
  dir: string,
  onProgress?: (p: VerifyProgress) => void,
  concurrency = 4,
  readData: ReadData = () => true,
  signal?: AbortSignal,
  /** Entries not looked at at all (a restore's tree files, checked as they are fetched). */
  skip?: (f: Pick<ManifestFile, 'path'>) => boolean,
): Promise<VerifyResult & { manifest: Manifest }> {
  const started = Date.now();
  const problems: string[] = [];
  const prog: VerifyProgress = { filesDone: 0, filesTotal: 0, bytesDone: 0, bytesTotal: 0 };
  const emit = progressOf(onProgress, prog);
  const onBytes = (n: number) => {
    prog.bytesDone += n;
    emit();
  };
  const inFlight = new Set<Promise<void>>();
  const manifest = await scanManifestFile(path.join(dir, MANIFEST_FILE), async (json) => {
    const h = lineHead(json);
    if (h.type === 'dir' || skip?.(h)) return;
    const f = JSON.parse(json) as ManifestFile;
    prog.filesTotal++;
    if (f.type === 'file') prog.bytesTotal += f.size;
    while (inFlight.size >= concurrency) await Promise.race(inFlight);
    signal?.throwIfAborted();
    // checkEntry never throws: a problem is a line in `problems`.
    const p: Promise<void> = checkEntry(dir, f, readData, problems, onBytes).then(() => {
      inFlight.delete(p);
      prog.filesDone++;
      emit();
    });
    inFlight.add(p);
  }).finally(() => Promise.all(inFlight));
  emit(true);
  return { ...verifyResult(problems, prog, started), manifest };
}

/**
 * A copy of stored tree `dir` at `dest` (a restore's staging, in the page cache just after the
 * copy) against the manifest's `entries` of that tree: each file's size and SHA-256, each
 * symlink's target; directories are not checked. Problem lines name the backup's paths
 * (`artifacts/a/b.jar: SHA-256 mismatch`). `entries` may be streamed: at most `concurrency`
 * are held at once.
 */
export async function verifyTreeCopy(
  entries: AsyncIterable<ManifestFile> | Iterable<ManifestFile>,
  dir: string,
  dest: string,
  o: { concurrency?: number; signal?: AbortSignal } = {},
): Promise<VerifyResult> {
  const started = Date.now();
  const problems: string[] = [];
  const prog: VerifyProgress = { filesDone: 0, filesTotal: 0, bytesDone: 0, bytesTotal: 0 };
  const onBytes = (n: number) => void (prog.bytesDone += n);
  const prefix = `${dir}/`;
  const inFlight = new Set<Promise<void>>();
  try {
    for await (const f of entries) {
      if (f.type === 'dir' || !f.path.startsWith(prefix)) continue;
      prog.filesTotal++;
      while (inFlight.size >= (o.concurrency ?? 4)) await Promise.race(inFlight);
      o.signal?.throwIfAborted();
      const abs = path.join(dest, ...f.path.slice(prefix.length).split('/'));
      // checkEntry never throws: a problem is a line in `problems`.
      const p: Promise<void> = checkEntry(dest, f, () => true, problems, onBytes, abs).then(() => {
        inFlight.delete(p);
        prog.filesDone++;
      });
      inFlight.add(p);
    }
  } finally {
    await Promise.all(inFlight);
  }
  return verifyResult(problems, prog, started);
}

/**
 * What `backup verify` and import check: every file against the manifest (verifyBackupDir),
 * then every entry of every zip archive read and CRC-checked (checkBackupZips), streamed.
 * An archive whose SHA-256 already failed is not read twice.
 */
export async function verifyBackupDeep(
  dir: string,
  manifest?: Manifest,
  onProgress?: (p: VerifyProgress) => void,
  signal?: AbortSignal,
): Promise<VerifyResult & { zipEntriesChecked: number }> {
  const started = Date.now();
  const m = manifest ?? (await readManifest(dir));
  const sha = await verifyBackupDir(dir, m, onProgress, 4, undefined, signal);
  const bad = new Set(sha.problems.map((p) => p.split(':')[0]));
  const zips = await checkBackupZips(dir, m, undefined, bad);
  const problems = [...sha.problems, ...zips.problems];
  return {
    ok: problems.length === 0,
    filesChecked: sha.filesChecked,
    bytesChecked: sha.bytesChecked,
    problems,
    durationMs: Date.now() - started,
    zipEntriesChecked: zips.entries,
  };
}
