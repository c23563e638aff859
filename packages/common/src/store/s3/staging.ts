/**
 * A backup being written to the S3 store (BackupStaging), in the interface's order:
 *
 *   begin     a lock object (locks/<random>, refreshed every lease/3 while the backup runs: a
 *             prune leaves alone what a running backup may use); a scratch directory on this box
 *   addFile   the finished local file is read, chunked and its new blobs uploaded at once;
 *             its SHA-256 must match the caller's; an archive is cut at its blocks' edges
 *             (the caller's `cuts`), so each unchanged compressed block is the same blob
 *   syncTree  tree-upload.ts: straight from the source, unchanged content not uploaded
 *   commit    manifest and content map stored as blobs, every pack upload confirmed, and
 *             meanwhile every pack it reuses confirmed present (index LIST, HEADs), re-indexed
 *             if a prune forgot it -> its index object -> lock still fresh? -> the snapshot
 *             object, LAST -> lock dropped, scratch removed
 *   abort     uploads settled; the packs only it wrote deleted (nothing else can name them:
 *             they were never indexed); lock dropped; scratch removed. Never throws.
 */
import { mkdirSync } from 'node:fs';
import fsp from 'node:fs/promises';
import { BoxbackError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { mapLimit } from '../../limit.js';
import type { BackupRef, BackupStaging, TreeSyncRequest, TreeSyncResult } from '../backup-store.js';
import { checkStoredPath } from '../ref.js';
import { BlobWriter, type BlobWriterOptions } from './blob-writer.js';
import type { PackEntry } from './pack.js';
import { packKey, type ContentRef, type Repo, type SnapshotHeader } from './repo.js';
import { inside, uploadTree, type PreviousTree } from './tree-upload.js';

export interface StagingOptions extends BlobWriterOptions {
  lockLeaseMs: number;
  jobId: string;
  log: Logger;
  /** The previous backup's tree data, loaded on demand. */
  loadPrevious: (ref: BackupRef) => Promise<PreviousTree | undefined>;
}

async function manifestBuffer(m: string | Iterable<string> | AsyncIterable<string>): Promise<Buffer> {
  if (typeof m === 'string') return Buffer.from(m);
  const parts: Buffer[] = [];
  for await (const s of m as AsyncIterable<string>) parts.push(Buffer.from(s));
  return Buffer.concat(parts);
}

export class S3Staging implements BackupStaging {
  private readonly writer: BlobWriter;
  private readonly contents: Record<string, string[]> = {};
  private lockName: string | null = null;
  private lockFreshAt = 0;
  private lockTimer: NodeJS.Timeout | null = null;
  private lockError: unknown = null;
  private finished = false;
  /** The index as it was when this backup started: where reused blobs were. */
  private seenPacks = new Map<string, { entries: PackEntry[] }>();

  constructor(
    private readonly repo: Repo,
    readonly ref: BackupRef,
    readonly dir: string,
    private readonly o: StagingOptions,
  ) {
    this.writer = new BlobWriter(repo, o);
  }

  /** Take the lock, then read the index (in that order: a prune that misses the lock forgot its packs first). */
  async start(): Promise<void> {
    await this.lock();
    await this.repo.refreshIndex();
    this.seenPacks = this.repo.indexedPacks();
  }

  private async lock(): Promise<void> {
    const body = { host: this.ref.host, jobId: this.o.jobId, startedAt: new Date().toISOString(), pid: process.pid };
    this.lockName = await this.repo.writeLock(body);
    this.lockFreshAt = Date.now();
    this.lockTimer = setInterval(
      () => {
        if (!this.lockName) return;
        this.repo
          .writeLock(body, this.lockName)
          .then(() => {
            this.lockFreshAt = Date.now();
          })
          .catch((err: unknown) => {
            this.lockError = err;
          });
      },
      Math.max(1000, Math.floor(this.o.lockLeaseMs / 3)),
    );
    this.lockTimer.unref();
  }

  pathFor(rel: string): string {
    const p = inside(this.dir, checkStoredPath(rel));
    mkdirSync(p.slice(0, p.lastIndexOf('/')), { recursive: true });
    return p;
  }

  async addFile(rel: string, sha256: string, o?: { cuts?: readonly number[] }): Promise<void> {
    const c = await this.writer.storeFile(this.pathFor(rel), undefined, o?.cuts);
    if (c.sha256 !== sha256)
      throw new BoxbackError(
        'BOXBACK_ERR_VERIFY_FAILED',
        `${rel}: its SHA-256 changed between writing and storing it (${c.sha256.slice(0, 12)} vs ${sha256.slice(0, 12)})`,
      );
    this.contents[rel] = c.blobs;
  }

  async syncTree(req: TreeSyncRequest): Promise<TreeSyncResult> {
    const previous = req.previous ? await this.o.loadPrevious(req.previous) : undefined;
    return uploadTree({ repo: this.repo, writer: this.writer, contents: this.contents, previous }, req);
  }

  /**
   * Every pack that `lists` (blob lists of this backup) reuse exists, read after a fresh index
   * LIST; packs a prune dropped from the index meanwhile are returned to be indexed again. The
   * blobs this writer stored are skipped (in its own packs, confirmed by their PUTs; the index
   * does not name them yet), and so are packs in `done` (confirmed already); those confirmed
   * here are added to it.
   */
  private async confirmReused(lists: string[][], done: Set<string>): Promise<Array<[string, PackEntry[]]>> {
    const mine = this.writer.stored;
    if (lists.every((blobs) => blobs.every((b) => mine.has(b)))) return [];
    const where = new Map<string, string>(); // blob -> pack, as this backup saw it
    for (const [pack, p] of this.seenPacks) for (const [id] of p.entries) if (!where.has(id)) where.set(id, pack);
    await this.repo.refreshIndex();
    const packs = new Set<string>();
    const lost = new Set<string>();
    for (const blobs of lists)
      for (const b of blobs) {
        if (mine.has(b)) continue;
        const loc = this.repo.index.get(b);
        if (loc) packs.add(loc.pack);
        else if (where.has(b)) lost.add(where.get(b)!);
        else
          throw new BoxbackError(
            'BOXBACK_ERR_STORE_TAMPERED',
            `blob ${b.slice(0, 12)} named by ${this.ref.host}@${this.ref.timestamp} is in no pack`,
          );
      }
    const todo = [...packs, ...lost].filter((p) => !done.has(p) || lost.has(p));
    await mapLimit(todo, 8, async (pack) => {
      if (!(await this.repo.client.head(packKey(pack))))
        throw new BoxbackError(
          'BOXBACK_ERR_STORE_UNREACHABLE',
          `pack ${pack.slice(0, 12)} that this backup reuses is gone from the store (a prune raced it); retry the backup`,
        );
      done.add(pack);
    });
    return [...lost].map((p) => [p, this.seenPacks.get(p)!.entries]);
  }

  async commit(manifest: string | Iterable<string> | AsyncIterable<string>): Promise<{ ref: BackupRef; manifestBytes: number }> {
    if (this.finished) throw new BoxbackError('BOXBACK_ERR_INTERNAL', 'commit after commit or abort');
    const t0 = Date.now();
    const ms: Record<string, number> = {};
    const step = (name: string) => (ms[name] = Date.now() - t0);
    // the packs the files reuse confirmed (an index LIST, HEADs) while the manifest and the
    // content map are stored and the last packs uploaded: all of it only needs to be done
    // before the index object is written
    const confirmedPacks = new Set<string>();
    const files = this.confirmReused(Object.values(this.contents), confirmedPacks).finally(() => step('confirm'));
    files.catch(() => undefined); // awaited below
    const text = await manifestBuffer(manifest);
    const manifestRef: ContentRef = await this.writer.storeBuffer(text);
    const contentsRef = await this.writer.storeBuffer(Buffer.from(JSON.stringify(this.contents)));
    // the manifest's and the content map's own blobs are named by the snapshot: count them too
    this.contents['\0manifest'] = manifestRef.blobs;
    this.contents['\0contents'] = contentsRef.blobs;
    step('blobs');
    const [resurrected] = await Promise.all([files, this.writer.flush().finally(() => step('flush'))]);
    // a manifest or content map blob found in the index (unchanged since a previous backup): its pack too
    const more = await this.confirmReused([manifestRef.blobs, contentsRef.blobs], confirmedPacks);
    const lost = new Map([...resurrected, ...more]);
    await this.repo.writeIndex([...this.writer.packs, ...lost]);
    step('index');
    if (this.lockError || Date.now() - this.lockFreshAt > this.o.lockLeaseMs)
      throw new BoxbackError(
        'BOXBACK_ERR_STORE_UNREACHABLE',
        `the backup's lock could not be refreshed in time; not committing (${String(this.lockError ?? 'lease ran out')})`,
      );
    const h: SnapshotHeader = {
      format: 'boxback/s3-snapshot@1',
      host: this.ref.host,
      timestamp: this.ref.timestamp,
      committedAt: new Date().toISOString(),
      manifest: manifestRef,
      contents: contentsRef,
    };
    await this.repo.writeSnapshot(h);
    step('snapshot');
    this.finished = true;
    await this.cleanup();
    step('cleanup');
    this.o.log.info(
      {
        ref: this.ref,
        newBlobs: this.writer.newBlobs,
        newBytes: this.writer.newBytes,
        storedBytes: this.writer.storedBytes,
        packs: this.writer.packs.length,
        ms,
      },
      's3 backup committed',
    );
    return { ref: this.ref, manifestBytes: text.length };
  }

  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    try {
      await this.writer.settle();
      // never indexed, so no other backup can name them: gone now rather than at the next prune
      await this.repo.client.delete(this.writer.packs.map(([p]) => packKey(p)));
    } catch (err) {
      this.o.log.warn({ err: String(err) }, "abort: could not delete the partial backup's packs; the next prune will");
    }
    await this.cleanup();
  }

  private async cleanup(): Promise<void> {
    if (this.lockTimer) clearInterval(this.lockTimer);
    this.lockTimer = null;
    const name = this.lockName;
    this.lockName = null;
    // the lock's DELETE and the scratch directory's removal side by side
    await Promise.all([
      name
        ? this.repo.client
            .delete([name])
            .catch((err: unknown) => this.o.log.warn({ err: String(err) }, 'could not drop the backup lock; it expires'))
        : undefined,
      fsp.rm(this.dir, { recursive: true, force: true }).catch(() => undefined),
    ]);
  }
}
