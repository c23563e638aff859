/**
 * The last backup's block-indexed archives (a database's db.zip), kept on this box for the next
 * backup's block reuse when the store is not a directory here (S3). A local store keeps them
 * itself: the next backup reads them from the store (zip-blocks.ts readBlockIndex). From a
 * bucket they would be downloaded at every backup (measured slower than deflating them again,
 * docs/design/store-s3-performance.md), so without this an S3 incremental deflated its whole
 * database again: 64 MiB of it for 2% of change, the small bench's critical path.
 *
 *   <stateDir>/archive-cache/
 *     current/               the archives and boxback-blocks.json of backup `cache.json.ref`
 *     cache.json             { format, ref, blocksSha256, archives: { name: { sha256, size } } }
 *     .next-<job>/           hard links to a running backup's files, taken before its commit
 *                            (an interrupted backup's are removed by the next one's stage)
 *
 *   stage    before PUBLISH: each block-indexed archive and the index, hard-linked from the
 *            backup's scratch directory (the store's scratch is under stateDir: same file
 *            system; another one, and nothing is kept)
 *   keep     after PUBLISH: cache.json removed, current/ replaced by the staged links, cache.json
 *            written (temp, fsync, rename) last; a failed backup drops its links instead
 *   read     at the next backup's CREATING_DIR: used only when cache.json names the host's
 *            newest backup and every archive has the size and the index the SHA-256 it lists
 *
 * A cache is only ever a source of bytes that are checked again: each reused block's compressed
 * bytes must have the CRC-32 its index lists (zip-writer.ts), and the new archive is hashed as it
 * is written and stored by that hash. A damaged or stale cache costs a deflate, never a wrong
 * backup. It holds one copy of the archives (the size of the database's archive); deleting the
 * directory at any time is safe. BOXBACK_ARCHIVE_CACHE=off neither keeps nor reads it.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomAccessOf, refPath, writeFileAtomic, type BackupRef, type Logger } from '@boxback/common';
import { BLOCKS_FILE, parseBlockIndex, type BlockIndex, type ReuseSource } from './zip-blocks.js';

const DIR = 'archive-cache';
const CURRENT = 'current';
const META = 'cache.json';
const FORMAT = 'boxback/archive-cache@1';

interface CacheMeta {
  format: string;
  ref: string;
  blocksSha256: string;
  archives: Record<string, { sha256: string; size: number }>;
}

const enabled = () => process.env.BOXBACK_ARCHIVE_CACHE !== 'off';
const root = (stateDir: string) => path.join(stateDir, DIR);

/** The cached archives of `prev`, by archive name (empty: nothing cached for it, or not usable). */
export async function readArchiveCache(stateDir: string, prev: BackupRef): Promise<Map<string, ReuseSource>> {
  if (!enabled()) return new Map();
  try {
    const meta = JSON.parse(await fsp.readFile(path.join(root(stateDir), META), 'utf8')) as CacheMeta;
    if (meta.format !== FORMAT || meta.ref !== refPath(prev)) return new Map();
    const dir = path.join(root(stateDir), CURRENT);
    const text = await fsp.readFile(path.join(dir, BLOCKS_FILE));
    if (createHash('sha256').update(text).digest('hex') !== meta.blocksSha256) return new Map();
    for (const [name, a] of Object.entries(meta.archives)) {
      const st = await fsp.stat(path.join(dir, name));
      if (st.size !== a.size) return new Map();
    }
    const out = parseBlockIndex(text, async (archive) => randomAccessOf(await fsp.open(path.join(dir, archive), 'r')));
    for (const name of out.keys()) if (!meta.archives[name]) out.delete(name);
    return out;
  } catch {
    return new Map(); // none yet, or unreadable: every block is deflated
  }
}

/** A backup's archives hard-linked for the cache before its commit: keep() or drop() it. */
export interface StagedCache {
  keep(ref: BackupRef): Promise<void>;
  drop(): Promise<void>;
}

/**
 * Hard-link the backup's block-indexed archives and its index (in `backupDir`) for the cache.
 * Undefined when there is nothing to keep or it cannot be linked (another file system).
 */
export async function stageArchiveCache(
  stateDir: string,
  jobId: string,
  backupDir: string,
  index: BlockIndex,
  known: Map<string, string>,
  log: Logger,
): Promise<StagedCache | undefined> {
  const names = Object.keys(index).filter((n) => known.has(n));
  const blocksSha256 = known.get(BLOCKS_FILE);
  if (!enabled() || names.length === 0 || !blocksSha256) return undefined;
  const base = root(stateDir);
  const next = path.join(base, `.next-${jobId.replace(/[^\w.-]/g, '_')}`);
  const drop = () => fsp.rm(next, { recursive: true, force: true }).catch(() => undefined);
  const archives: CacheMeta['archives'] = {};
  try {
    await fsp.mkdir(base, { recursive: true, mode: 0o700 });
    // Links an interrupted backup staged (the agent killed before keep or drop): one backup of
    // this host runs at a time (the host lock), so any other is stale.
    for (const e of await fsp.readdir(base)) if (e.startsWith('.next-')) await fsp.rm(path.join(base, e), { recursive: true, force: true });
    await fsp.mkdir(next, { mode: 0o700 });
    for (const name of [...names, BLOCKS_FILE]) {
      await fsp.link(path.join(backupDir, name), path.join(next, name));
      if (name !== BLOCKS_FILE) archives[name] = { sha256: known.get(name)!, size: (await fsp.stat(path.join(next, name))).size };
    }
  } catch (err) {
    log.debug({ err: (err as Error).message }, 'archives not kept for the next backup (cannot link them into the state directory)');
    await drop();
    return undefined;
  }
  return {
    async keep(ref) {
      const meta: CacheMeta = { format: FORMAT, ref: refPath(ref), blocksSha256, archives };
      const current = path.join(base, CURRENT);
      const metaFile = path.join(base, META);
      try {
        // Without cache.json nothing reads current/ while it is replaced.
        await fsp.rm(metaFile, { force: true });
        await fsp.rm(current, { recursive: true, force: true });
        await fsp.rename(next, current);
        await writeFileAtomic(metaFile, JSON.stringify(meta), 0o600);
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'archives not kept for the next backup; it deflates its database archive again');
        await drop();
      }
    },
    drop,
  };
}
