/**
 * The `local` backend: a directory on local disk or an NFS mount, laid out as
 * docs/design/store-layout.md says (GoCD-style `backup_<ts>` directories). Its features,
 * invisible behind BackupStore: trees share unchanged files with the previous backup by hard
 * links (rsync --link-dest, tree.ts), a journaled backup syncs only the changed paths over a
 * hard-link farm prepared in the background after the previous one (link-farm.ts,
 * incremental-sync.ts), and a delete frees only what no other backup links (delete.ts).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { BoxbackError } from '../../errors.js';
import { createLogger, type Logger } from '../../logger.js';
import { MANIFEST_FILE, formatTimestamp, type VerifyResult } from '../../manifest.js';
import type {
  BackupRef,
  BackupStaging,
  BackupStore,
  BeginOptions,
  RandomAccessFile,
  StoreDescription,
  StoreVerifyOptions,
  FetchTreeOptions,
} from '../backup-store.js';
import { removeTree } from '../../remove-tree.js';
import { makeRef, refId } from '../ref.js';
import { deleteBackupDir, uniqueBytes } from './delete.js';
import { backupDir, hasBackup, hostDir, listBackupRefs, listHostDirs } from './layout.js';
import { FARM_DIR, LinkFarms } from './link-farm.js';
import { readPrevIndex } from './manifest-writer.js';
import type { PrevBackup } from './tree.js';
import * as read from './read.js';
import { createTempDir, freeTimestamp, removeStaleTemps } from './staging-fs.js';
import { LocalStaging } from './staging.js';

/**
 * Read `file` once, its bytes dropped (1 MiB reads into one buffer): its pages cached for a
 * reader that comes later in small reads. Any failure is that reader's to report.
 */
async function readThrough(file: string): Promise<void> {
  const fh = await fsp.open(file, 'r').catch(() => undefined);
  if (!fh) return;
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    while ((await fh.read(buf, 0, buf.length, null)).bytesRead > 0);
  } catch {
    /* the reader sees it */
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Staging directories of imports (an exact timestamp): a backup's begin never removes them. */
const IMPORT_PREFIX = '.tmp-import_';

export interface LocalStoreOptions {
  /** For background work (link farms); default a logger of its own. */
  log?: Logger;
  /** Prepare hard-link farms for the next journaled backup (prepareNext); default true. */
  prepareFarms?: boolean;
}

export class LocalBackupStore implements BackupStore {
  private readonly farms = new Map<string, LinkFarms>();
  private readonly log: Logger;

  constructor(
    readonly root: string,
    private readonly o: LocalStoreOptions = {},
  ) {
    this.log = o.log ?? createLogger('store');
  }

  describe(): StoreDescription {
    return { kind: 'local', location: this.root };
  }

  listHosts(): Promise<string[]> {
    return listHostDirs(this.root);
  }

  listBackups(host: string): Promise<BackupRef[]> {
    return listBackupRefs(this.root, host);
  }

  has(ref: BackupRef): Promise<boolean> {
    return hasBackup(this.root, ref);
  }

  readManifestText(ref: BackupRef): Promise<string> {
    return read.readManifestText(this.root, ref);
  }

  openManifest(ref: BackupRef): Promise<Readable> {
    return read.openManifest(this.root, ref);
  }

  openFile(ref: BackupRef, rel: string, range?: { start?: number; end?: number }): Promise<Readable> {
    return read.openFile(this.root, ref, rel, range);
  }

  openRandomAccess(ref: BackupRef, rel: string): Promise<RandomAccessFile> {
    return read.openRandomAccess(this.root, ref, rel);
  }

  localFile(ref: BackupRef, rel: string): Promise<{ path: string; release(): Promise<void> }> {
    return read.localFile(this.root, ref, rel);
  }

  fetchTree(ref: BackupRef, dir: string, dest: string, o?: FetchTreeOptions): Promise<void> {
    return read.fetchTree(this.root, ref, dir, dest, o);
  }

  /** A restore's trees copied side by side (read.ts: each by four cp at once). */
  readonly treesAtOnce = 2;

  verify(ref: BackupRef, o?: StoreVerifyOptions): Promise<VerifyResult> {
    return read.verifyLocal(this.root, ref, o);
  }

  async uniqueBytes(ref: BackupRef): Promise<number> {
    const dir = backupDir(this.root, ref);
    if (!(await fsp.lstat(dir).catch(() => undefined)))
      throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `backup ${refId(ref)} is not in the store`);
    return uniqueBytes(dir);
  }

  delete(ref: BackupRef): Promise<{ deleted: boolean; freedBytes: number }> {
    return deleteBackupDir(this.root, ref);
  }

  async begin(o: BeginOptions): Promise<BackupStaging> {
    o.signal?.throwIfAborted();
    const host = makeRef(o.host, '00000000-000000').host;
    let ts: string;
    let tempDir: string;
    if (o.timestamp !== undefined) {
      ts = makeRef(host, o.timestamp).timestamp;
      if (await this.has({ host, timestamp: ts }))
        throw new BoxbackError('BOXBACK_ERR_ALREADY_EXISTS', `backup ${refId({ host, timestamp: ts })} is already in the store`);
      tempDir = await createTempDir(this.root, host, ts, o.jobId, IMPORT_PREFIX);
    } else {
      await removeStaleTemps(this.root, host, o.log);
      ts = (await freeTimestamp(this.root, host, o.startedAt, formatTimestamp)).ts;
      tempDir = await createTempDir(this.root, host, ts, o.jobId);
    }
    // The previous backup's manifest index is read once, when a tree first asks for it: a full
    // pass asks as it starts (the index is read while rsync runs), a journaled sync only when
    // --link-dest linked files under its changed roots (their checksums are in the index).
    const prevCache = new Map<string, PrevBackup>();
    const previous = (ref: BackupRef | undefined): PrevBackup | undefined => {
      if (!ref) return undefined;
      const dir = backupDir(this.root, ref);
      let p = prevCache.get(dir);
      if (!p) {
        let index: ReturnType<PrevBackup['index']> | undefined;
        const read = () =>
          (index ??= readPrevIndex(dir).catch((err: unknown) => {
            o.log.warn({ err, prevDir: dir }, 'previous backup has no readable manifest: trees are copied in full');
            return undefined;
          }));
        let warmed: Promise<void> | undefined;
        const warm = () => (warmed ??= readThrough(path.join(dir, MANIFEST_FILE)));
        p = { dir, index: read, warm };
        prevCache.set(dir, p);
      }
      return p;
    };
    const ref = makeRef(host, ts);
    return new LocalStaging(ref, tempDir, { previous, farms: this.farmsOf(host), log: o.log }, o.signal);
  }

  async removeInterrupted(host: string, log: Logger): Promise<number> {
    const farms = this.farms.get(host);
    this.farms.delete(host);
    await farms?.close();
    // Prepared farms hold a whole tree of links each: rm -rf, not Node's recursive rm (at the
    // default file counts that took a starting daemon to 317 MB for 30 s: agent-memory.md).
    await removeTree(`${hostDir(this.root, host)}/${FARM_DIR}`);
    return removeStaleTemps(this.root, host, log);
  }

  prepareNext(host: string, ref: BackupRef, _tree: string, dir: string): void {
    try {
      this.farmsOf(host)?.prepare(dir, dir, `${ref.host}/backup_${ref.timestamp}`);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'could not start preparing a link farm');
    }
  }

  async close(): Promise<void> {
    for (const f of this.farms.values()) await f.close();
    this.farms.clear();
  }

  private farmsOf(host: string): LinkFarms | undefined {
    if (this.o.prepareFarms === false) return undefined;
    let f = this.farms.get(host);
    if (!f) {
      f = new LinkFarms(this.root, host, this.log);
      this.farms.set(host, f);
    }
    return f;
  }
}
