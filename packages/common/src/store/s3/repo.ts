/**
 * The object-store repository: the objects under the store's prefix and what they mean
 * (docs/design/store-s3-format.md):
 *
 *   config              sealed (aad "config"): format, chunking parameters
 *   keys/<id>           the data key wrapped by one key file or passphrase (keys.ts), JSON
 *   data/<pp>/<sha256>  pack objects (pack.ts), named by the SHA-256 of their bytes
 *   index/<sha256>      sealed (aad "index"): [[pack id, [[blob id, offset, length, plain], ...]], ...]
 *   snapshots/<hmac>    sealed (aad "snapshot:<hmac>"): one per complete backup, written LAST;
 *                       hmac = HMAC(name key, "<host>@<ts>"), so `has` is one HEAD
 *   locks/<random>      sealed (aad "lock"): a running backup, refreshed while it runs
 *   forgotten/<sha256>  sealed (aad "forgotten"): packs a prune dropped from the index, with
 *                       their entries, deleted by a later prune (prune.ts)
 *
 * Opening: list keys/ -> unwrap the data key with the secret -> derive the working keys ->
 * read config -> load the index (every index object, kept and refreshed incrementally).
 */
import { createHash, randomBytes } from 'node:crypto';
import { BoxbackError } from '../../errors.js';
import { mapLimit } from '../../limit.js';
import { DEFAULT_CHUNKING, gearTable, type ChunkParams } from './chunker.js';
import type { ObjectClient } from './client.js';
import { deriveKeys, manifestName, unwrapDataKey, type KeyFile, type StoreKeys } from './keys.js';
import { openBlobParts, type PackEntry } from './pack.js';
import { open, seal, sealedSize, tampered } from './sealed.js';

export const STORE_FORMAT = 'boxback/s3-store@1';

/**
 * A pooled GET buffer's smaller size: 1 MiB and 64 KiB, so that an archive's incompressible
 * 1 MiB block (stored deflate blocks: a few bytes over 1 MiB, sealed) fits it, not the largest
 * blob's 4 MiB buffer.
 */
const POOLED_GET = (1 << 20) + (64 << 10);
/**
 * The sealed bytes a random-access reader reads with one GET at most (a run of blobs lying one
 * after the other: restore.ts), and the pooled buffer size for such a run. 2 MiB, not 4: a
 * restore extracts the database archive beside the trees' fetch, and each run in flight holds
 * its buffer (store-s3-performance.md, session 14).
 */
export const RUN_BYTES = 2 << 20;
const POOLED_RUN = RUN_BYTES + (64 << 10);

/** The smallest buffer of `pool` at least `n` bytes long, taken out of it (undefined: none). */
export function takeBuffer(pool: Buffer[], n: number): Buffer | undefined {
  let best = -1;
  for (let i = 0; i < pool.length; i++) if (pool[i].length >= n && (best < 0 || pool[i].length < pool[best].length)) best = i;
  return best < 0 ? undefined : pool.splice(best, 1)[0];
}

export interface RepoConfig {
  format: typeof STORE_FORMAT;
  chunking: ChunkParams;
  createdAt: string;
}

/** Where a blob lives. */
export interface BlobLoc {
  pack: string;
  offset: number;
  length: number;
  plain: number;
  /** How it was compressed before sealing: its entry's flag (0 none, 1 deflate, 2 brotli; pack.ts). */
  codec: number;
}

/** Where an index entry says its blob is. */
export const locOf = (pack: string, [, offset, length, plain, flags]: PackEntry): BlobLoc => ({
  pack,
  offset,
  length,
  plain,
  codec: flags ?? 0,
});

/** Content stored as a list of blobs, with its size and SHA-256. */
export interface ContentRef {
  blobs: string[];
  size: number;
  sha256: string;
}

/** The snapshot object of one complete backup. */
export interface SnapshotHeader {
  format: 'boxback/s3-snapshot@1';
  host: string;
  timestamp: string;
  committedAt: string;
  /** manifest.json's text. */
  manifest: ContentRef;
  /** JSON {"<rel>": [blob ids]} of every stored file of the backup. */
  contents: ContentRef;
}

export interface LockBody {
  host: string;
  jobId: string;
  startedAt: string;
  pid: number;
}

export const packKey = (id: string) => `data/${id.slice(0, 2)}/${id}`;
export const packIdOfKey = (key: string) => key.slice(key.lastIndexOf('/') + 1);

export function keyError(message: string): BoxbackError {
  return new BoxbackError('BOXBACK_ERR_STORE_KEY', message);
}

export class Repo {
  /** blob id -> where it is (from every index object loaded): what a backup may reuse. */
  readonly index = new Map<string, BlobLoc>();
  private readonly indexObjects = new Map<string, Array<[string, PackEntry[]]>>();
  /** Packs a prune forgot but has not deleted yet (forgotten/ records): still readable, never reused. */
  readonly forgotten = new Map<string, PackEntry[]>();
  private readonly fallback = new Map<string, BlobLoc>();
  private readonly records = new Map<string, Array<[string, PackEntry[]]>>();
  readonly gear: Uint32Array;
  /** The sealed size of the largest blob the chunker cuts (the largest GET buffer a blob read needs). */
  private readonly maxSealedBlob: number;
  private readonly snapshotCache = new Map<string, SnapshotHeader>();

  private constructor(
    readonly client: ObjectClient,
    readonly keys: StoreKeys,
    readonly config: RepoConfig,
  ) {
    this.gear = gearTable(keys.chunk);
    this.maxSealedBlob = sealedSize(config.chunking.max);
  }

  /** Unwrap the data key with `secret` (trying every key file) and read the store's config. */
  static async open(client: ObjectClient, secret: Buffer): Promise<Repo> {
    await client.check();
    const files = await client.list('keys/');
    if (files.length === 0) throw keyError(`${client.location} is not an initialised boxback store (no keys/): run boxback store init`);
    let dataKey: Buffer | null = null;
    for (const f of files) {
      const kf = await readKeyFile(client, f.key);
      dataKey = kf ? unwrapDataKey(kf, secret) : null;
      if (dataKey) break;
    }
    if (!dataKey) throw keyError(`${client.location}: the key file given opens none of the store's ${files.length} key(s)`);
    const keys = deriveKeys(dataKey);
    const raw = await client.get('config');
    if (!raw) throw keyError(`${client.location}: the store has keys but no config object`);
    const config = JSON.parse(open(keys.enc, 'config', raw, 'store config').toString()) as RepoConfig;
    if (config.format !== STORE_FORMAT)
      throw keyError(`${client.location}: store format ${config.format}, this boxback reads ${STORE_FORMAT}`);
    const repo = new Repo(client, keys, config);
    await repo.refreshIndex();
    return repo;
  }

  /** Load index objects written since the last call; forget those that are gone (prune rewrote them). */
  async refreshIndex(): Promise<void> {
    const listed = await this.client.list('index/');
    const names = new Set(listed.map((o) => o.key));
    let dropped = false;
    for (const name of [...this.indexObjects.keys()]) {
      if (!names.has(name)) {
        this.indexObjects.delete(name);
        dropped = true;
      }
    }
    const fresh = listed.filter((o) => !this.indexObjects.has(o.key));
    await mapLimit(fresh, 8, async (o) => {
      const raw = await this.client.get(o.key);
      if (!raw) return; // removed by a prune meanwhile
      if (createHash('sha256').update(raw).digest('hex') !== o.key.slice('index/'.length))
        throw tampered(o.key, 'SHA-256 does not match its name');
      this.indexObjects.set(o.key, JSON.parse(open(this.keys.enc, 'index', raw, o.key).toString()) as Array<[string, PackEntry[]]>);
    });
    if (dropped) this.index.clear();
    for (const [name, packs] of this.indexObjects) if (dropped || fresh.some((f) => f.key === name)) this.addToIndex(packs);
    await this.refreshForgotten();
  }

  /** Load the forgotten/ records (prune.ts): where a forgotten pack's blobs are, for reads only. */
  private async refreshForgotten(): Promise<void> {
    const listed = await this.client.list('forgotten/');
    const names = new Set(listed.map((o) => o.key));
    for (const k of [...this.records.keys()]) if (!names.has(k)) this.records.delete(k);
    await mapLimit(
      listed.filter((o) => !this.records.has(o.key)),
      8,
      async (o) => {
        const raw = await this.client.get(o.key);
        if (raw)
          this.records.set(o.key, JSON.parse(open(this.keys.enc, 'forgotten', raw, o.key).toString()) as Array<[string, PackEntry[]]>);
      },
    );
    this.forgotten.clear();
    this.fallback.clear();
    for (const packs of this.records.values())
      for (const [pack, entries] of packs) {
        this.forgotten.set(pack, entries);
        for (const e of entries) this.fallback.set(e[0], locOf(pack, e));
      }
  }

  get forgottenRecords(): Map<string, Array<[string, PackEntry[]]>> {
    return this.records;
  }

  /** Where to read a blob: the index, else a forgotten pack not deleted yet. */
  locate(id: string): BlobLoc | undefined {
    return this.index.get(id) ?? this.fallback.get(id);
  }

  private addToIndex(packs: Array<[string, PackEntry[]]>): void {
    for (const [pack, entries] of packs) for (const e of entries) if (!this.index.has(e[0])) this.index.set(e[0], locOf(pack, e));
  }

  /** Every pack the loaded index names, with its blobs (prune, verify). */
  indexedPacks(): Map<string, { entries: PackEntry[]; indexObjects: string[] }> {
    const out = new Map<string, { entries: PackEntry[]; indexObjects: string[] }>();
    for (const [name, packs] of this.indexObjects)
      for (const [pack, entries] of packs) {
        const p = out.get(pack) ?? { entries, indexObjects: [] };
        p.indexObjects.push(name);
        out.set(pack, p);
      }
    return out;
  }

  get indexObjectNames(): string[] {
    return [...this.indexObjects.keys()];
  }

  /** Write one index object for these packs (after every one of them is stored). */
  async writeIndex(packs: Array<[string, PackEntry[]]>): Promise<string | null> {
    if (packs.length === 0) return null;
    const raw = seal(this.keys.enc, 'index', Buffer.from(JSON.stringify(packs)));
    const name = `index/${createHash('sha256').update(raw).digest('hex')}`;
    await this.client.put(name, raw);
    this.indexObjects.set(name, packs);
    this.addToIndex(packs);
    return name;
  }

  /**
   * Read, decrypt and check one blob (a ranged GET of its pack); `checkId`: see openBlob.
   * `pool`: GET buffers to take one from and give it back to (the plaintext never shares it).
   */
  async readBlob(id: string, checkId = true, pool?: Buffer[]): Promise<Buffer> {
    const parts = await this.readBlobParts(id, checkId, pool);
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  /** readBlob's plaintext as its frames' (openBlobParts): not joined, for a caller that streams them. */
  async readBlobParts(id: string, checkId = true, pool?: Buffer[]): Promise<Buffer[]> {
    return (await this.readBlobRun([id], checkId, pool))[0];
  }

  /**
   * Blobs lying one right after the other in one pack (the caller checked: `runLength`), read
   * with one ranged GET and opened one by one (each as readBlobParts gives it).
   */
  async readBlobRun(ids: string[], checkId = true, pool?: Buffer[]): Promise<Buffer[][]> {
    return (await this.openRun(ids, checkId, pool, false)).blobs;
  }

  /**
   * readBlobRun with the blobs opened in the GET buffer itself (decrypted in place when the
   * agent's addon is registered: sealed.ts openPartsInPlace), no new buffer per 64 KiB frame:
   * the caller calls `release` once done with them, which gives the buffer back to `pool`.
   */
  async readBlobRunHeld(ids: string[], checkId: boolean, pool: Buffer[]): Promise<{ blobs: Buffer[][]; release: () => void }> {
    return this.openRun(ids, checkId, pool, true);
  }

  private async openRun(
    ids: string[],
    checkId: boolean,
    pool: Buffer[] | undefined,
    held: boolean,
  ): Promise<{ blobs: Buffer[][]; release: () => void }> {
    const locs = ids.map((id) => {
      const loc = this.locate(id);
      if (!loc) throw tampered(`blob ${id.slice(0, 12)}`, 'no index entry names it (the store lost it)');
      return loc;
    });
    const start = locs[0].offset;
    const n = locs[locs.length - 1].offset + locs[locs.length - 1].length - start;
    // three sizes in a pool, POOLED_GET, POOLED_RUN and the largest sealed blob, each GET taking
    // the smallest that fits: buffers of the GETs' own sizes would be dropped again and again
    // (fresh pages faulted in while the body is copied into them)
    const size = n <= POOLED_GET ? POOLED_GET : n <= POOLED_RUN ? POOLED_RUN : Math.max(n, this.maxSealedBlob);
    const buf = (pool && takeBuffer(pool, n)) ?? Buffer.allocUnsafeSlow(pool ? size : n);
    let given = false;
    const release = () => {
      if (!given) pool?.push(buf);
      given = true;
    };
    try {
      const raw = await this.client.get(packKey(locs[0].pack), { start, end: start + n - 1 }, buf);
      const blobs = locs.map((loc, k) => {
        const what = `blob ${ids[k].slice(0, 12)} in pack ${loc.pack.slice(0, 12)}`;
        if (!raw) throw tampered(what, 'its pack is missing');
        if (loc.pack !== locs[0].pack || loc.offset - start + loc.length > raw.length)
          throw tampered(what, `truncated (${raw.length} of ${n} bytes)`);
        const sealed = raw.subarray(loc.offset - start, loc.offset - start + loc.length);
        const parts = openBlobParts(this.keys, ids[k], sealed, loc.codec, loc.plain, checkId, held ? {} : undefined);
        if (parts.reduce((x, p) => x + p.length, 0) !== loc.plain) throw tampered(what, 'wrong length');
        return parts;
      });
      if (!held) release();
      return { blobs, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /**
   * How many of `ids` from `from` on (at most `max`, `maxBytes` sealed) lie one right after the
   * other in one pack: one GET reads them all (readBlobRun). At least 1.
   */
  runLength(ids: string[], from: number, max: number, maxBytes: number): number {
    const first = this.locate(ids[from]);
    if (!first) return 1;
    let end = first.offset + first.length;
    let n = 1;
    while (n < max && from + n < ids.length) {
      const l = this.locate(ids[from + n]);
      if (!l || l.pack !== first.pack || l.offset !== end || end + l.length - first.offset > maxBytes) break;
      end += l.length;
      n++;
    }
    return n;
  }

  /**
   * A stored content's plaintext, blob by blob, `ahead` blobs fetched in parallel; each blob as
   * the frames it was sealed in (one buffer per 64 KiB, not joined). `checkIds` false: the
   * caller checks the whole content's SHA-256 (see openBlob). `held`: each blob opened in its
   * GET buffer (readBlobRunHeld), valid only until the caller asks for the next one (a caller
   * that writes each blob before it goes on: downloadChecked).
   */
  async *readContentParts(blobs: string[], ahead = 4, checkIds = true, held = false): AsyncGenerator<Buffer[]> {
    const pending: Array<Promise<{ blobs: Buffer[][]; release: () => void }>> = [];
    const pool: Buffer[] = []; // `ahead` (+ 1 held) GET buffers reused blob after blob
    let next = 0;
    const fill = () => {
      while (pending.length < ahead && next < blobs.length) {
        const p = this.openRun([blobs[next++]], checkIds, pool, held);
        p.catch(() => undefined); // awaited in order below
        pending.push(p);
      }
    };
    fill();
    try {
      while (pending.length) {
        const r = await pending.shift()!;
        fill();
        try {
          yield r.blobs[0]; // held: views of its GET buffer, which the caller is done with when it asks for the next
        } finally {
          r.release();
        }
      }
    } finally {
      // a caller that stopped early (or failed): the blobs still in flight give their buffers back
      for (const p of pending)
        void p.then(
          (r) => r.release(),
          () => undefined,
        );
    }
  }

  /** readContentParts, one buffer at a time. */
  async *readContent(blobs: string[], ahead = 4, checkIds = true): AsyncGenerator<Buffer> {
    for await (const parts of this.readContentParts(blobs, ahead, checkIds)) yield* parts;
  }

  async readContentWhole(c: ContentRef, what: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    try {
      for await (const b of this.readContent(c.blobs, 4, false)) parts.push(b); // its SHA-256 checked below
    } catch (err) {
      if (err instanceof BoxbackError && err.code === 'BOXBACK_ERR_STORE_TAMPERED')
        throw new BoxbackError('BOXBACK_ERR_STORE_TAMPERED', `${what}: ${err.message}`, { object: what }, { cause: err });
      throw err;
    }
    const all = Buffer.concat(parts);
    if (all.length !== c.size || createHash('sha256').update(all).digest('hex') !== c.sha256)
      throw tampered(what, 'SHA-256 does not match');
    return all;
  }

  snapshotName(host: string, timestamp: string): string {
    return `snapshots/${manifestName(this.keys, `${host}@${timestamp}`)}`;
  }

  async writeSnapshot(h: SnapshotHeader): Promise<void> {
    const name = this.snapshotName(h.host, h.timestamp);
    await this.client.put(name, seal(this.keys.enc, `snapshot:${name}`, Buffer.from(JSON.stringify(h))));
    this.snapshotCache.set(name, h);
  }

  /** One snapshot object, or null when it is not there. */
  async readSnapshot(name: string): Promise<SnapshotHeader | null> {
    const cached = this.snapshotCache.get(name);
    if (cached) return cached;
    const raw = await this.client.get(name);
    if (!raw) return null;
    const h = JSON.parse(open(this.keys.enc, `snapshot:${name}`, raw, 'snapshot').toString()) as SnapshotHeader;
    if (this.snapshotName(h.host, h.timestamp) !== name) throw tampered(name, "snapshot under another backup's name");
    this.snapshotCache.set(name, h);
    return h;
  }

  /** Every complete backup's snapshot header. */
  async listSnapshots(): Promise<Array<{ name: string; h: SnapshotHeader; lastModified: Date }>> {
    const listed = await this.client.list('snapshots/');
    const names = new Set(listed.map((o) => o.key));
    for (const k of [...this.snapshotCache.keys()]) if (!names.has(k)) this.snapshotCache.delete(k);
    const out = await mapLimit(listed, 8, async (o) => ({ name: o.key, h: await this.readSnapshot(o.key), lastModified: o.lastModified }));
    return out.filter((x): x is { name: string; h: SnapshotHeader; lastModified: Date } => x.h !== null);
  }

  async deleteSnapshot(name: string): Promise<void> {
    await this.client.delete([name]);
    this.snapshotCache.delete(name);
  }

  /** The file map {rel: blob ids} of a snapshot. */
  async readContents(h: SnapshotHeader): Promise<Record<string, string[]>> {
    return JSON.parse((await this.readContentWhole(h.contents, `contents of ${h.host}@${h.timestamp}`)).toString()) as Record<
      string,
      string[]
    >;
  }

  /** Take a lock (a running backup): its name. */
  async writeLock(body: LockBody, name = `locks/${randomBytes(16).toString('hex')}`): Promise<string> {
    await this.client.put(name, seal(this.keys.enc, 'lock', Buffer.from(JSON.stringify(body))));
    return name;
  }

  async listLocks(): Promise<Array<{ name: string; body: LockBody | null; lastModified: Date }>> {
    const listed = await this.client.list('locks/');
    return mapLimit(listed, 8, async (o) => {
      const raw = await this.client.get(o.key);
      let body: LockBody | null = null;
      try {
        body = raw ? (JSON.parse(open(this.keys.enc, 'lock', raw).toString()) as LockBody) : null;
      } catch {
        body = null; // unreadable: treated as a running backup until it is stale
      }
      return { name: o.key, body, lastModified: o.lastModified };
    });
  }
}

async function readKeyFile(client: ObjectClient, key: string): Promise<KeyFile | null> {
  const raw = await client.get(key);
  if (!raw) return null;
  try {
    return JSON.parse(raw.toString()) as KeyFile;
  } catch {
    return null;
  }
}

export { DEFAULT_CHUNKING, readKeyFile };
