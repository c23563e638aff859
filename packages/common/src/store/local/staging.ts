/**
 * A backup being written to a local store (BackupStaging). Everything is written under
 * `<store>/<host>/.tmp-backup_<ts>-<job>/` (an import's under `.tmp-import_...`), on the
 * store's filesystem so that trees can hard-link to the previous backup; commit:
 *
 *   1. scratch: top-level entries neither added (addFile) nor synced (syncTree) are noted
 *   2. flush: fsync exactly what this backup wrote (the caller's hint plus what the tree
 *      syncs wrote) when that is few, else one syncfs of the store's filesystem; a tree whose
 *      written files are listed was fsynced as soon as its sync was done (syncTree), and its
 *      flush is awaited here
 *   3. manifest.json written last (temp name, fsync, rename), the scratch removed, the
 *      directory renamed to `backup_<ts>` and the host directory fsynced (staging-fs.ts)
 *
 * abort removes the temporary directory; a crash leaves it, never listed, removed by the
 * next backup of the host (begin) or at agent start (removeInterrupted).
 */
import { mkdirSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../../logger.js';
import { MANIFEST_FILE } from '../../manifest.js';
import type { BackupRef, BackupStaging, TreeSyncRequest, TreeSyncResult } from '../backup-store.js';
import { checkStoredPath } from '../ref.js';
import { fsyncDir, fsyncFile } from '../../fs-atomic.js';
import { mapLimit } from '../../limit.js';
import { LIST_LIMIT } from './manifest-writer.js';
import { publish, removeTemp, syncToDisk } from './staging-fs.js';
import { syncLocalTree, type TreeContext } from './tree.js';

export class LocalStaging implements BackupStaging {
  private readonly known = new Map<string, string>();
  /** Top-level names that belong to the backup. */
  private readonly kept = new Set<string>();
  /** What the tree syncs wrote (undefined: too many to list). */
  private written: string[] | undefined = [];
  private dirs: string[] | undefined = [];
  /** The trees' own flushes, started as each tree was done (syncTree). */
  private readonly flushing: Promise<void>[] = [];
  private state: 'open' | 'committed' | 'aborted' = 'open';

  constructor(
    readonly ref: BackupRef,
    readonly dir: string,
    private readonly ctx: Omit<TreeContext, 'tempDir' | 'known'>,
    private readonly signal?: AbortSignal,
  ) {}

  private get log(): Logger {
    return this.ctx.log;
  }

  pathFor(rel: string): string {
    const p = path.join(this.dir, ...checkStoredPath(rel).split('/'));
    mkdirSync(path.dirname(p), { recursive: true });
    return p;
  }

  async addFile(rel: string, sha256: string): Promise<void> {
    this.known.set(checkStoredPath(rel), sha256);
    this.kept.add(rel.split('/')[0]);
  }

  async syncTree(req: TreeSyncRequest): Promise<TreeSyncResult> {
    checkStoredPath(req.dir);
    this.kept.add(req.dir.split('/')[0]);
    const { col, ...res } = await syncLocalTree({ ...this.ctx, tempDir: this.dir, known: this.known }, req);
    if (col.written && col.dirs && process.env.BOXBACK_EARLY_FLUSH !== 'off') {
      // The tree is complete: what it wrote goes to disk now, beside the rest of the backup,
      // rather than in commit's flush (which waits for it).
      const { written, dirs } = col;
      this.flushing.push(
        (async () => {
          await mapLimit(written, 16, (f) => fsyncFile(f));
          await mapLimit([...dirs].reverse(), 16, (d) => fsyncDir(d));
        })(),
      );
      this.flushing.at(-1)!.catch(() => undefined); // awaited (and thrown) by commit
      return res;
    }
    this.written =
      col.written && this.written && this.written.length + col.written.length <= LIST_LIMIT ? [...this.written, ...col.written] : undefined;
    this.dirs = col.dirs && this.dirs && this.dirs.length + col.dirs.length <= LIST_LIMIT ? [...this.dirs, ...col.dirs] : undefined;
    return res;
  }

  async commit(
    manifest: string | Iterable<string> | AsyncIterable<string>,
    hint?: { files: string[]; dirs: string[] },
  ): Promise<{ ref: BackupRef; manifestBytes: number }> {
    if (this.state !== 'open') throw new Error(`backup ${this.ref.host}@${this.ref.timestamp} is already ${this.state}`);
    // (a manifest.json copied in by an import is replaced by the committed one, not scratch)
    const scratch = (await fsp.readdir(this.dir))
      .filter((n) => !this.kept.has(n) && n !== MANIFEST_FILE)
      .map((n) => path.join(this.dir, n));
    const files = hint && this.written ? [...hint.files, ...this.written] : undefined;
    const dirs = hint && this.dirs ? [this.dir, ...hint.dirs, ...this.dirs] : undefined;
    const wrote = files && dirs && files.length + dirs.length <= LIST_LIMIT ? { files, dirs } : undefined;
    const flushAt = Date.now();
    // The trees flushed as they were done (a failed fsync is thrown here: it may not be reported again).
    await Promise.all(this.flushing);
    const how = await syncToDisk(this.dir, this.log, this.signal, wrote);
    this.log.debug({ how, files: files?.length, dirs: dirs?.length, ms: Date.now() - flushAt }, 'backup flushed to disk');
    this.signal?.throwIfAborted();
    const published = await publish(this.dir, this.ref.timestamp, manifest, scratch);
    this.state = 'committed';
    return { ref: this.ref, manifestBytes: published.manifestBytes };
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await Promise.allSettled(this.flushing);
    await removeTemp(this.dir, this.log);
  }
}
