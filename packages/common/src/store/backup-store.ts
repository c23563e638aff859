/**
 * The one way into stored backups: `BackupStore` owns every read and write of the backup
 * store, for the agent (backup, restore, delete) and the controller (catalog, import,
 * export, verify, retention). Nothing outside the `store/` modules builds a store path or
 * touches stored bytes with `node:fs`: callers are handed a `BackupStore` (as restic's
 * archiver is handed a Repository) and name backups by `BackupRef`. Design note:
 * docs/design/store-interface.md; the directory layout of the `local` backend:
 * docs/design/store-layout.md.
 *
 * Backends (`registry.ts` maps a config's `kind` to a constructor):
 *   local   a directory (local disk or an NFS mount): store/local/
 *   s3      an S3-compatible object store, content-addressed and encrypted: store/s3/
 *
 * Writing a backup (agent), in order:
 *   1. s = await store.begin({ host, startedAt, jobId, log, signal })
 *        removes what an interrupted backup of this host left (the backend's business),
 *        picks a timestamp no complete backup of the host has (s.ref), prepares `s.dir`
 *   2. files: write each stored file at s.pathFor(rel) (archives, dumps, version.txt,
 *        the block index: any streaming writer), then s.addFile(rel, sha256) once it is
 *        complete and closed; it must not change afterwards (a backend may upload it at once)
 *   3. trees: await s.syncTree({ dir, source, changed, ... }) per tree; the backend decides
 *        how (local: rsync --link-dest to the previous backup, or only the journal's changed
 *        paths over a hard-link farm; s3: upload only content whose SHA-256 it lacks, read
 *        straight from the source); either way each entry's manifest line goes to `out`
 *   4. await s.commit(manifestText): every byte durable first, the manifest written LAST;
 *        only then does the backup exist for list/has/readManifest. Or, on any failure or
 *        abort: await s.abort() (nothing of it is ever listed; idempotent, never throws)
 *
 * Reading a backup (agent restore, controller): readManifest(Text) -> openFile / localFile /
 * fetchTree. Restore never needs the store on its filesystem: `localFile` is the stored file
 * itself (local) or a verified download into the restore's own staging directory (s3), and
 * `fetchTree` writes a tree straight into the staging sibling of its target.
 *
 * Guarantees every backend keeps:
 *   - a backup is listed, `has` is true, and its manifest reads, only after commit; an
 *     interrupted backup (crash, SIGKILL, network cut, full disk) never is;
 *   - delete makes a backup vanish from listings first (manifest away first), then frees
 *     what only it held; it never frees what another complete backup needs;
 *   - every error is a BoxbackError: NOT_FOUND (no such backup), MANIFEST_INVALID
 *     (unreadable or unsafe manifest), VERIFY_FAILED (content does not match its SHA-256),
 *     DISK_FULL, UNREACHABLE (a remote store did not answer), INVALID_ARGUMENT (bad ref);
 *   - secrets (credentials, keys) never appear in `describe()`, errors or logs.
 */
import type { Readable } from 'node:stream';
import type { Logger } from '../logger.js';
import type { Manifest, ManifestFile, VerifyProgress, VerifyResult } from '../manifest.js';

/** A stored backup: the host it belongs to and its UTC timestamp (YYYYMMdd-HHmmss). */
export interface BackupRef {
  readonly host: string;
  readonly timestamp: string;
}

/** What the backend is, for messages: `local /srv/boxback/store`, `s3 https://host/bucket/prefix`. Never secrets. */
export interface StoreDescription {
  kind: string;
  /** A place a person recognises (a directory, a URL without credentials). */
  location: string;
}

export interface BeginOptions {
  host: string;
  /** The backup's timestamp is this instant's (UTC, to the second), moved on a second at a time if taken. */
  startedAt: Date;
  /** Exact timestamp instead (import): ALREADY_EXISTS when a complete backup has it. */
  timestamp?: string;
  jobId: string;
  log: Logger;
  signal?: AbortSignal;
}

/** A random-access reader of one stored file (the zip writer copies unchanged blocks out of the previous archive). */
export interface RandomAccessFile {
  readonly size: number;
  /** Read up to `length` bytes at `position` into `buffer` at `offset`, as FileHandle.read does. */
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  close(): Promise<void>;
}

/** Where a tree's manifest lines go, in walk order (the caller assembles manifest.json from them). */
export interface ManifestSink {
  add(entry: ManifestFile): void | Promise<void>;
  /**
   * Optional: the same entry with its JSON text already made (`JSON.stringify(entry)`); a sink
   * that writes manifest lines takes the text as it is (a journaled tree's unchanged lines
   * are copied from the previous manifest without being stringified again).
   */
  addLine?(json: string, entry: ManifestFile): void | Promise<void>;
}

export interface TreeSyncProgress {
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesTotal: number;
  /** What the backend is doing ("full rsync pass: ...", "uploading new content"). */
  message?: string;
}

export interface TreeSyncRequest {
  /** The tree's directory inside the backup ("artifacts"); manifest paths start with `${dir}/`. */
  dir: string;
  /** The live source directory on this box. */
  source: string;
  /** rsync-style exclude patterns, relative to `source`. */
  excludes?: string[];
  /** The host's previous complete backup: unchanged files are linked / not uploaded again. */
  previous?: BackupRef;
  /**
   * The change journal's trusted list of paths (relative to `source`) changed since
   * `previous` was taken; undefined: not trusted, the backend must look at every file.
   * A backend may still make a full pass (it says why in `reason`).
   */
  changed?: string[];
  /** Why the journal is not trusted (goes into `reason` of a full pass). */
  fullReason?: string;
  /** Every entry of the tree, as it was stored. */
  out: ManifestSink;
  signal?: AbortSignal;
  onProgress?: (p: TreeSyncProgress) => void;
}

export interface TreeSyncResult {
  /** 'journal': only `changed` was looked at; 'full': every file. */
  mode: 'full' | 'journal';
  /** For a full pass: why (no journal, no previous tree, the journaled sync failed...). */
  reason?: string;
  warnings: string[];
  entries: number;
  files: number;
  bytes: number;
  /** Files whose content the previous backup already held (hard-linked / not uploaded). */
  linkedFiles: number;
  /** Bytes read from the source to hash or copy; and hashes taken from the previous manifest. */
  hashedBytes: number;
  reusedHashes: number;
  /** Bytes actually transferred (copied or uploaded). */
  bytesTransferred: number;
}

/** A backup being written; see the header for the order of calls. */
export interface BackupStaging {
  readonly ref: BackupRef;
  /**
   * A local directory where this backup's files are written before they are stored
   * (local: the temporary backup directory in the store itself; s3: a scratch directory on
   * this box). Only what `addFile` and `syncTree` name is stored; anything else under it
   * (the quiesce stage copy, manifest part files) is scratch, removed by commit and abort.
   */
  readonly dir: string;
  /** The local path to write stored file `rel` ('/'-separated, inside `dir`); its parent exists. */
  pathFor(rel: string): string;
  /**
   * `rel` is written and closed, with this SHA-256: it belongs to the backup. `o.cuts`: byte
   * offsets where independently compressed pieces of it start and end (an archive's 1 MiB
   * blocks, agent/backup/zip-blocks.ts); a content-addressed backend starts a stored piece at
   * each, so an unchanged block is stored once whatever precedes it (s3); others ignore them.
   */
  addFile(rel: string, sha256: string, o?: { cuts?: readonly number[] }): Promise<void>;
  /** Store a tree (see TreeSyncRequest); its entries go to `req.out`. */
  syncTree(req: TreeSyncRequest): Promise<TreeSyncResult>;
  /**
   * Make everything durable, write the manifest last, make the backup appear.
   * `hint.files/dirs`: absolute paths this backup wrote under `dir`, when few (a backend
   * may flush exactly those instead of its whole filesystem).
   */
  commit(
    manifest: string | Iterable<string> | AsyncIterable<string>,
    hint?: { files: string[]; dirs: string[] },
  ): Promise<{ ref: BackupRef; manifestBytes: number }>;
  /** Throw the backup away (nothing of it is ever listed). Idempotent; logs and swallows its own errors. */
  abort(): Promise<void>;
}

/** Options of BackupStore.fetchTree. */
export interface FetchTreeOptions {
  signal?: AbortSignal;
  onProgress?: (p: TreeSyncProgress) => void;
  /** The backup's manifest as the caller already read it (a backend may use it instead of reading it again). */
  manifest?: Manifest;
}

/** Options of BackupStore.verify. */
export interface StoreVerifyOptions {
  /** Only presence and sizes (no content read). */
  quick?: boolean;
  /** Read this fraction (0..1] of the content at random (a scheduled verify), the rest quick. */
  sample?: number;
  /**
   * What a restore needs: each file's bytes against the manifest only; no zip entry CRCs (a
   * restore checks those as it extracts) and no search for unlisted files in a tree (fetchTree
   * writes only the listed entries).
   */
  contentOnly?: boolean;
  /**
   * Files the caller reads next through localFile or fetchTree (a restore). Where a backend's
   * reads check every byte against the manifest before handing it out, it only looks at their
   * presence and sizes here, rather than reading them twice: s3 for both (each download is
   * checked); local for tree files (fetchTree hashes its copy), not for archives (localFile
   * hands out the stored file itself, unchecked).
   */
  checkedOnRead?: (rel: string) => boolean;
  /**
   * With contentOnly: the only entries to check, as the caller read them (a restore whose every
   * file not among them is checkedOnRead: its outline's top-level files), so the manifest need
   * not be read again. A backend may ignore it and read the manifest.
   */
  only?: ManifestFile[];
  signal?: AbortSignal;
  onProgress?: (p: VerifyProgress) => void;
}

export interface BackupStore {
  describe(): StoreDescription;

  /** Hosts with at least one complete backup or anything in progress, sorted. */
  listHosts(): Promise<string[]>;
  /** Complete (committed) backups of `host`, oldest first. */
  listBackups(host: string): Promise<BackupRef[]>;
  /** Quick: is `ref` a complete backup (its manifest present)? No content read. */
  has(ref: BackupRef): Promise<boolean>;

  /** manifest.json's text, as committed (NOT_FOUND / MANIFEST_INVALID). */
  readManifestText(ref: BackupRef): Promise<string>;
  /**
   * manifest.json's text as a stream (errors as readManifestText), for scanManifest: a store
   * that has the file at hand need not hold a 100k-file manifest in memory. Optional: without
   * it, readers stream readManifestText's string.
   */
  openManifest?(ref: BackupRef): Promise<Readable>;

  /** A stored file's content as a stream (`start`/`end` inclusive, as fs.createReadStream). */
  openFile(ref: BackupRef, rel: string, range?: { start?: number; end?: number }): Promise<Readable>;
  /** A stored file for random reads. */
  openRandomAccess(ref: BackupRef, rel: string): Promise<RandomAccessFile>;
  /**
   * The stored file `rel` as a local file: the stored file itself where the store is a
   * filesystem (local: no copy; do not modify it), else downloaded into `scratchDir` (which
   * exists) and checked against `sha256` before this resolves. `release()` removes a download.
   */
  localFile(
    ref: BackupRef,
    rel: string,
    o: { scratchDir: string; sha256?: string; signal?: AbortSignal },
  ): Promise<{ path: string; release(): Promise<void> }>;
  /**
   * Write stored tree `dir` into local directory `dest` (created if missing; owners, modes,
   * mtimes and symlinks as stored, every file checked against the manifest's SHA-256 before
   * this resolves: s3 as it downloads (STORE_TAMPERED), local by hashing the copy
   * (VERIFY_FAILED naming the files)). Only the entries the manifest lists are written.
   */
  fetchTree(ref: BackupRef, dir: string, dest: string, o?: FetchTreeOptions): Promise<void>;
  /**
   * How many fetchTree calls a restore runs at once (default 1). local: 2 (a cold copy of small
   * files waits on the disk's latency; a second tree's reads fill the gaps); s3 keeps 1 (each
   * fetch holds its tree's entries and downloads in memory).
   */
  readonly treesAtOnce?: number;

  /** Re-read (or, quick, look at) every file the manifest lists and compare. */
  verify(ref: BackupRef, o?: StoreVerifyOptions): Promise<VerifyResult>;
  /** Bytes that deleting `ref` would free (held by no other backup). */
  uniqueBytes(ref: BackupRef): Promise<number>;
  /** Delete a backup: gone from listings first, then its bytes. `deleted` false when it was not there. */
  delete(ref: BackupRef): Promise<{ deleted: boolean; freedBytes: number }>;

  /** Start writing a backup (see the header). */
  begin(o: BeginOptions): Promise<BackupStaging>;
  /** Remove what interrupted backups of `host` left (agent start). Returns how many. */
  removeInterrupted(host: string, log: Logger): Promise<number>;

  /**
   * Optional: the next backup of `host` will likely sync tree `dir` against `ref` with a
   * journal (local: prepares the hard-link farm in the background). Never throws.
   */
  prepareNext?(host: string, ref: BackupRef, tree: string, dir: string): void;
  /**
   * Optional: free what no complete backup references any more (an object store, where
   * `delete` only drops a backup's manifest). Safe while backups run (a grace period and
   * live locks protect what they write). The controller calls it after retention deleted
   * something, and at least once a day. `deletedBytes`: bytes freed now.
   */
  prune?(): Promise<{ deletedBytes: number }>;
  /** Optional: release what this process holds (background work, connections). */
  close?(): Promise<void>;
}
