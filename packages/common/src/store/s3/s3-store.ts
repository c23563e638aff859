/**
 * `S3BackupStore`: the BackupStore of an S3-compatible object store, content-addressed,
 * deduplicated across backups and hosts, and encrypted on this side (format:
 * docs/design/store-s3-format.md). The pieces, one file each:
 *
 *   client.ts       requests: credentials, retries, typed errors, signed SHA-256 bodies, multipart, bandwidth
 *   repo.ts         the objects and what they mean: keys, config, index, snapshots, locks
 *   blob-writer.ts  content -> chunks -> blobs -> packs, each blob stored once
 *   staging.ts      a backup being written (lock, addFile, syncTree, commit with snapshot LAST)
 *   tree-upload.ts  syncTree straight from the source
 *   restore.ts      reading back: streams, random access, checked downloads, fetchTree
 *   prune.ts        removing what no backup needs, safe against running backups
 *   store-keys.ts   init, add/list/remove keys
 *
 * The store opens lazily (the first call unwraps the data key and loads the index), so the
 * constructor is synchronous and never touches the network.
 */
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { BoxbackError } from '../../errors.js';
import { mapLimit } from '../../limit.js';
import { createLogger, type Logger } from '../../logger.js';
import { formatTimestamp, parseTimestamp, type Manifest, type ManifestFile, type VerifyResult } from '../../manifest.js';
import type {
  BackupRef,
  BackupStaging,
  BackupStore,
  BeginOptions,
  RandomAccessFile,
  StoreDescription,
  StoreVerifyOptions,
  TreeSyncProgress,
} from '../backup-store.js';
import { storeLocation, type S3StoreConfig } from '../config.js';
import { checkStoredPath, makeRef, refId } from '../ref.js';
import { ObjectClient, type ObjectClientOptions } from './client.js';
import { readSecretFile } from './keys.js';
import { prune, referencedBlobs, type PruneResult } from './prune.js';
import { packKey, Repo, type SnapshotHeader } from './repo.js';
import { blobStream, downloadChecked, fetchTreeInto, randomAccess } from './restore.js';
import { S3Staging } from './staging.js';
import { inside, type PreviousTree } from './tree-upload.js';

export interface S3StoreOptions extends ObjectClientOptions {
  /** The secret that unwraps the data key; default: the config's keyFile (0600). */
  secret?: Buffer;
  /** Where backups are staged and downloads land before checking (default: the OS temp dir). */
  scratchDir?: string;
  log?: Logger;
  /** A backup's lock must be refreshed within this (default 5 min; refreshed every third of it). */
  lockLeaseMs?: number;
  /** prune: objects younger than this are never deleted (default 1 h). */
  graceMs?: number;
  /** Bytes per pack object (default 4 MiB, blob-writer.ts). */
  packTarget?: number;
}

interface Loaded {
  h: SnapshotHeader;
  manifest: Manifest;
  files: Map<string, ManifestFile>;
  contents: Record<string, string[]>;
}

export class S3BackupStore implements BackupStore {
  readonly client: ObjectClient;
  private repoP: Promise<Repo> | null = null;
  private readonly log: Logger;
  private readonly loaded = new Map<string, Promise<Loaded>>();
  private readonly lockLeaseMs: number;

  constructor(
    readonly config: S3StoreConfig,
    private readonly o: S3StoreOptions = {},
  ) {
    this.client = new ObjectClient(config, o);
    this.log = o.log ?? createLogger('s3-store');
    this.lockLeaseMs = o.lockLeaseMs ?? 5 * 60 * 1000;
  }

  describe(): StoreDescription {
    return { kind: 's3', location: storeLocation(this.config) };
  }

  /** The opened repository (data key unwrapped, index loaded). */
  repo(): Promise<Repo> {
    this.repoP ??= (async () => {
      const secret = this.o.secret ?? (this.config.keyFile ? readSecretFile(this.config.keyFile, 'store key file') : null);
      if (!secret) throw new BoxbackError('BOXBACK_ERR_STORE_KEY', `${this.describe().location}: no keyFile in the store config`);
      return Repo.open(this.client, secret);
    })();
    this.repoP.catch(() => {
      this.repoP = null; // a failed open is tried again next time
    });
    return this.repoP;
  }

  private async snapshot(ref: BackupRef): Promise<SnapshotHeader> {
    makeRef(ref.host, ref.timestamp); // INVALID_ARGUMENT for a bad host or timestamp
    const repo = await this.repo();
    const h = await repo.readSnapshot(repo.snapshotName(ref.host, ref.timestamp));
    if (!h) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no backup ${refId(ref)} in ${this.describe().location}`);
    // A backup committed since this process loaded the index (another host's, or this agent's
    // restore of a backup written after it started): every index object a snapshot needs is
    // written before the snapshot, so one refresh finds them all.
    if ([...h.manifest.blobs, ...h.contents.blobs].some((b) => !repo.locate(b))) await repo.refreshIndex();
    return h;
  }

  private load(ref: BackupRef): Promise<Loaded> {
    const id = refId(ref);
    let p = this.loaded.get(id);
    if (!p) {
      p = (async () => {
        const repo = await this.repo();
        const h = await this.snapshot(ref);
        // one read of the snapshot object; its manifest and content map fetched side by side
        const [text, contents] = await Promise.all([this.manifestOf(repo, h, ref), repo.readContents(h)]);
        const manifest = JSON.parse(text) as Manifest;
        const files = new Map((manifest.files ?? []).map((f) => [f.path, f]));
        return { h, manifest, files, contents };
      })();
      p.catch(() => this.loaded.delete(id));
      if (this.loaded.size > 8) this.loaded.delete(this.loaded.keys().next().value!);
      this.loaded.set(id, p);
    }
    return p;
  }

  async listHosts(): Promise<string[]> {
    const repo = await this.repo();
    const hosts = new Set((await repo.listSnapshots()).map((s) => s.h.host));
    for (const l of await repo.listLocks()) if (l.body) hosts.add(l.body.host);
    return [...hosts].sort();
  }

  async listBackups(host: string): Promise<BackupRef[]> {
    const repo = await this.repo();
    return (await repo.listSnapshots())
      .filter((s) => s.h.host === host)
      .map((s) => makeRef(s.h.host, s.h.timestamp))
      .sort((a, b) => a.timestamp.localeCompare(b.timestamp));
  }

  async has(ref: BackupRef): Promise<boolean> {
    makeRef(ref.host, ref.timestamp);
    const repo = await this.repo();
    return (await this.client.head(repo.snapshotName(ref.host, ref.timestamp))) !== null;
  }

  async readManifestText(ref: BackupRef): Promise<string> {
    const repo = await this.repo();
    return this.manifestOf(repo, await this.snapshot(ref), ref);
  }

  private async manifestOf(repo: Repo, h: SnapshotHeader, ref: BackupRef): Promise<string> {
    return (await repo.readContentWhole(h.manifest, `manifest of ${refId(ref)}`)).toString('utf8');
  }

  private async stored(ref: BackupRef, rel: string): Promise<{ f: ManifestFile | undefined; blobs: string[]; repo: Repo }> {
    checkStoredPath(rel);
    const l = await this.load(ref);
    const blobs = l.contents[rel];
    if (!blobs) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `${refId(ref)} has no stored file ${rel}`);
    return { f: l.files.get(rel), blobs, repo: await this.repo() };
  }

  async openFile(ref: BackupRef, rel: string, range?: { start?: number; end?: number }): Promise<Readable> {
    const { blobs, repo } = await this.stored(ref, rel);
    return blobStream(repo, blobs, range);
  }

  async openRandomAccess(ref: BackupRef, rel: string): Promise<RandomAccessFile> {
    const { blobs, repo } = await this.stored(ref, rel);
    const size = blobs.reduce((s, b) => s + (repo.locate(b)?.plain ?? 0), 0);
    return randomAccess(repo, blobs, size);
  }

  async localFile(
    ref: BackupRef,
    rel: string,
    o: { scratchDir: string; sha256?: string; signal?: AbortSignal },
  ): Promise<{ path: string; release(): Promise<void> }> {
    const { f, blobs, repo } = await this.stored(ref, rel);
    const file = inside(o.scratchDir, rel);
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await downloadChecked(repo, blobs, file, { sha256: o.sha256 ?? f?.sha256, size: f?.size }, `${refId(ref)}:${rel}`);
    return { path: file, release: () => fsp.rm(file, { force: true }) };
  }

  async fetchTree(
    ref: BackupRef,
    dir: string,
    dest: string,
    o: { signal?: AbortSignal; onProgress?: (p: TreeSyncProgress) => void } = {},
  ): Promise<void> {
    checkStoredPath(dir);
    const l = await this.load(ref);
    const entries = [...l.files.values()].filter((f) => f.path.startsWith(`${dir}/`));
    await fetchTreeInto({ repo: await this.repo(), entries, contents: l.contents, dir, dest, concurrency: this.config.concurrency, ...o });
  }

  async verify(ref: BackupRef, o: StoreVerifyOptions = {}): Promise<VerifyResult> {
    const started = Date.now();
    const repo = await this.repo();
    let l: Loaded;
    try {
      l = await this.load(ref);
    } catch (err) {
      if (!(err instanceof BoxbackError) || err.code !== 'BOXBACK_ERR_STORE_TAMPERED') throw err;
      return { ok: false, filesChecked: 0, bytesChecked: 0, problems: [err.message], durationMs: Date.now() - started };
    }
    const files = [...l.files.values()].filter((f) => f.type === 'file');
    const problems: string[] = [];
    const prog = { filesDone: 0, filesTotal: files.length, bytesDone: 0, bytesTotal: files.reduce((s, f) => s + f.size, 0) };
    const packSizes = new Map<string, Promise<number | null>>();
    const packSize = (p: string) => {
      if (!packSizes.has(p))
        packSizes.set(
          p,
          this.client.head(packKey(p)).then((x) => x?.size ?? null),
        );
      return packSizes.get(p)!;
    };
    const fraction = o.quick ? 0 : (o.sample ?? 1);
    await mapLimit(files, this.config.concurrency, async (f) => {
      o.signal?.throwIfAborted();
      const blobs = l.contents[f.path];
      if (!blobs) return void problems.push(`${f.path}: not in the backup's content map`);
      try {
        const read = !o.checkedOnRead?.(f.path) && (fraction >= 1 || (fraction > 0 && Math.random() < fraction));
        if (read) {
          const h = createHash('sha256');
          let size = 0;
          for await (const b of repo.readContent(blobs)) {
            h.update(b);
            size += b.length;
            prog.bytesDone += b.length;
          }
          if (size !== f.size) problems.push(`${f.path}: size ${size}, manifest says ${f.size}`);
          else if (h.digest('hex') !== f.sha256) problems.push(`${f.path}: SHA-256 mismatch`);
        } else {
          let plain = 0;
          for (const b of blobs) {
            const loc = repo.locate(b);
            if (!loc) throw new Error(`blob ${b.slice(0, 12)} is in no index`);
            const size = await packSize(loc.pack);
            if (size === null) throw new Error(`pack ${loc.pack.slice(0, 12)} is missing`);
            if (size < loc.offset + loc.length) throw new Error(`pack ${loc.pack.slice(0, 12)} is truncated (${size} bytes)`);
            plain += loc.plain;
          }
          if (plain !== f.size) problems.push(`${f.path}: stored ${plain} bytes, manifest says ${f.size}`);
        }
      } catch (err) {
        const what = err instanceof BoxbackError && err.code === 'BOXBACK_ERR_STORE_TAMPERED' ? 'SHA-256 mismatch: ' : '';
        problems.push(`${f.path}: ${what}${(err as Error).message}`);
      }
      prog.filesDone++;
      o.onProgress?.({ ...prog });
    });
    problems.sort();
    return {
      ok: problems.length === 0,
      filesChecked: prog.filesDone,
      bytesChecked: prog.bytesDone,
      problems,
      durationMs: Date.now() - started,
    };
  }

  async uniqueBytes(ref: BackupRef): Promise<number> {
    const repo = await this.repo();
    const l = await this.load(ref);
    const { blobs: others } = await referencedBlobs(repo, repo.snapshotName(ref.host, ref.timestamp));
    const mine = new Set([...l.h.manifest.blobs, ...l.h.contents.blobs, ...Object.values(l.contents).flat()]);
    let bytes = 0;
    for (const b of mine) if (!others.has(b)) bytes += repo.locate(b)?.length ?? 0;
    return bytes;
  }

  /**
   * Drop the backup's snapshot object: it is gone from listings at once. `freedBytes` is what
   * only it held; those objects are removed by the next `prune` (grace period, running backups).
   */
  async delete(ref: BackupRef): Promise<{ deleted: boolean; freedBytes: number }> {
    if (!(await this.has(ref))) return { deleted: false, freedBytes: 0 };
    const freedBytes = await this.uniqueBytes(ref).catch(() => 0);
    const repo = await this.repo();
    await repo.deleteSnapshot(repo.snapshotName(ref.host, ref.timestamp));
    this.loaded.delete(refId(ref));
    return { deleted: true, freedBytes };
  }

  async begin(o: BeginOptions): Promise<BackupStaging> {
    const repo = await this.repo();
    await this.client.settleAborts(); // multipart uploads a failed backup could not abort then
    let ref: BackupRef;
    if (o.timestamp) {
      ref = makeRef(o.host, o.timestamp);
      if (await this.has(ref)) throw new BoxbackError('BOXBACK_ERR_ALREADY_EXISTS', `backup ${refId(ref)} already exists`);
    } else {
      let t = Math.floor(o.startedAt.getTime() / 1000) * 1000;
      ref = makeRef(o.host, formatTimestamp(new Date(t)));
      while (await this.has(ref)) {
        t += 1000;
        ref = makeRef(o.host, formatTimestamp(new Date(t)));
      }
    }
    const root = this.o.scratchDir ?? path.join(os.tmpdir(), 'boxback-s3');
    await fsp.mkdir(root, { recursive: true, mode: 0o700 });
    const dir = await fsp.mkdtemp(path.join(root, `${o.host}-${ref.timestamp}-`));
    const s = new S3Staging(repo, ref, dir, {
      lockLeaseMs: this.lockLeaseMs,
      jobId: o.jobId,
      log: o.log,
      packTarget: this.o.packTarget,
      loadPrevious: (prev) => this.previousTree(prev),
    });
    await s.start();
    o.log.info({ ref, store: this.describe().location, timestamp: parseTimestamp(ref.timestamp).toISOString() }, 's3 backup begun');
    return s;
  }

  private async previousTree(ref: BackupRef): Promise<PreviousTree | undefined> {
    try {
      const l = await this.load(ref);
      return { files: l.files, contents: l.contents };
    } catch (err) {
      if (err instanceof BoxbackError && err.code === 'BOXBACK_ERR_NOT_FOUND') return undefined;
      throw err;
    }
  }

  /** Drop the locks an interrupted backup of `host` left (its packs go at the next prune). */
  async removeInterrupted(host: string, log: Logger): Promise<number> {
    const repo = await this.repo();
    const mine = (await repo.listLocks()).filter((l) => l.body?.host === host);
    await this.client.delete(mine.map((l) => l.name));
    const root = this.o.scratchDir ?? path.join(os.tmpdir(), 'boxback-s3');
    for (const d of await fsp.readdir(root).catch(() => [] as string[]))
      if (d.startsWith(`${host}-`)) await fsp.rm(path.join(root, d), { recursive: true, force: true });
    if (mine.length) log.info({ host, locks: mine.length }, 'removed the locks of interrupted s3 backups');
    return mine.length;
  }

  /** Remove objects no backup needs (prune.ts). */
  async prune(o: { graceMs?: number; now?: () => number; consolidateAbove?: number } = {}): Promise<PruneResult> {
    const repo = await this.repo();
    return prune(repo, { ...o, graceMs: o.graceMs ?? this.o.graceMs, lockLeaseMs: this.lockLeaseMs, log: this.log });
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
