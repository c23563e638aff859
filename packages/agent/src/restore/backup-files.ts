/**
 * The stored files a restore reads as local files (archives, dumps), through the store:
 * `store.localFile` is the stored file itself for a local store (no copy) and, for a remote
 * one (s3), a download into this restore's scratch directory, checked against the manifest's
 * SHA-256 before it is used. The scratch directory is a sibling of the plan's first target
 * (the same filesystem as the data it restores), `<target>.boxback-download-<job>`; it is
 * listed among the restore's staging paths, so a failure or a crashed agent removes it too,
 * and `releaseAll` removes it once the restore no longer needs the files.
 *
 * Zip archives are read through `openArchive` instead: the stored file itself (local), or a
 * random-access reader of the remote store (every blob authenticated and checked against its
 * id as it is read, its size against the manifest's): EXTRACT unzips straight from the store
 * into staging, with no download (no second full copy on disk, nothing to wait for first).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, type BackupRef, type BackupStore, type Manifest, type ZipSource } from '@boxback/common';
import type { AgentConfig } from '../config.js';
import { sibling } from './record.js';

/** `<first plan target>.boxback-download-<job>` (else under the state directory). */
export function scratchDirFor(config: AgentConfig, jobId: string): string {
  const plan = config.plan;
  const first =
    plan.trees[0]?.source ??
    plan.datasets.map((d) => (d as { path?: string }).path ?? (d as { files?: string[] }).files?.[0]).find((p) => !!p);
  return sibling.download(first ? path.resolve(first) : path.join(config.stateDir, 'restores', 'download'), jobId);
}

export class BackupFiles {
  private readonly got = new Map<string, Promise<{ path: string; release(): Promise<void> }>>();
  private readonly sha = new Map<string, string>();
  private readonly size = new Map<string, number>();

  constructor(
    readonly store: BackupStore,
    readonly ref: BackupRef,
    manifest: Manifest,
    readonly scratchDir: string,
    private readonly signal?: AbortSignal,
  ) {
    for (const f of manifest.files) {
      if (f.type !== 'file') continue;
      this.size.set(f.path, f.size);
      if (f.sha256) this.sha.set(f.path, f.sha256);
    }
  }

  /**
   * Stored zip `rel` to read entries from (see the header): a local store's file, or a reader
   * of the remote store's blobs, refused when its size is not the manifest's. Close it after.
   */
  async openArchive(rel: string): Promise<{ src: ZipSource; close(): Promise<void> }> {
    if (this.store.describe().kind === 'local') return { src: await this.get(rel), close: async () => undefined };
    const raf = await this.store.openRandomAccess(this.ref, rel);
    const want = this.size.get(rel);
    if (want !== undefined && raf.size !== want) {
      await raf.close();
      throw new BoxbackError('BOXBACK_ERR_VERIFY_FAILED', `${rel}: stored ${raf.size} bytes, the manifest says ${want}`);
    }
    return { src: raf, close: () => raf.close() };
  }

  /** A local path holding stored file `rel` (checked against the manifest's SHA-256 when downloaded). */
  async get(rel: string): Promise<string> {
    let p = this.got.get(rel);
    if (!p) {
      // A local store hands out the stored file itself: no scratch directory needed.
      const made =
        this.store.describe().kind === 'local' ? Promise.resolve(undefined) : fsp.mkdir(this.scratchDir, { recursive: true, mode: 0o700 });
      p = made.then(() =>
        this.store.localFile(this.ref, rel, { scratchDir: this.scratchDir, sha256: this.sha.get(rel), signal: this.signal }),
      );
      this.got.set(rel, p);
      p.catch(() => this.got.delete(rel));
    }
    return (await p).path;
  }

  /** Release one file (a download is removed; the next get fetches it again). */
  async release(rel: string): Promise<void> {
    const p = this.got.get(rel);
    this.got.delete(rel);
    if (p) await p.then((f) => f.release()).catch(() => undefined);
  }

  /** Release every file but `keep` (after EXTRACT: only the dumps RESTORE_DATABASE loads stay). */
  async releaseExcept(keep: Iterable<string>): Promise<void> {
    const k = new Set(keep);
    for (const rel of [...this.got.keys()]) if (!k.has(rel)) await this.release(rel);
  }

  /** Every download and the scratch directory removed. Never throws. */
  async releaseAll(): Promise<void> {
    for (const rel of [...this.got.keys()]) await this.release(rel);
    await fsp.rm(this.scratchDir, { recursive: true, force: true }).catch(() => undefined);
  }
}
