/**
 * Key management of an S3 store (`boxback store init`, `boxback store key add|list|remove`):
 *
 *   init    refuse a store that has keys already; a new random data key; keys/<id> wrapped by
 *           the first secret (a key file's bytes or a passphrase); the sealed config object
 *   add     open the data key with a secret that works, wrap it again with a new secret
 *   list    id, label and creation time of every key (nothing secret)
 *   remove  drop one keys/<id>, never the last one (that would lose every backup)
 *
 * The data key itself never leaves this process in clear: not to the store, not into logs.
 */
import { BoxbackError } from '../../errors.js';
import type { S3StoreConfig } from '../config.js';
import { DEFAULT_CHUNKING, type ChunkParams } from './chunker.js';
import { ObjectClient, type ObjectClientOptions } from './client.js';
import { KEY_FORMAT, newDataKey, unwrapDataKey, wrapDataKey, deriveKeys } from './keys.js';
import { keyError, readKeyFile, STORE_FORMAT, type RepoConfig } from './repo.js';
import { seal } from './sealed.js';

/** What `store init` prints: a lost key is lost backups, and how to keep a copy. */
export const LOST_KEY_WARNING =
  'The store is encrypted with a key that exists only wrapped by your key file(s) or passphrase(s). ' +
  'If you lose every one of them, every backup in this store is lost: nobody, not even with access to the bucket, can decrypt it. ' +
  'Keep a copy of the key file somewhere else than the boxes and the bucket (a password manager or a safe), ' +
  'and add a second key for a second person: boxback store key add.';

export interface StoreKeyInfo {
  id: string;
  label: string;
  createdAt: string;
}

interface KeyOptions extends ObjectClientOptions {
  /** scrypt cost (default: keys.ts scryptCostFor the secret; tests pass a small one). */
  scryptN?: number;
}

async function withClient<T>(config: S3StoreConfig, o: KeyOptions, fn: (c: ObjectClient) => Promise<T>): Promise<T> {
  const c = new ObjectClient(config, o);
  try {
    await c.check();
    return await fn(c);
  } finally {
    c.destroy();
  }
}

/** Initialise an empty store with its first key. Returns the key's id and LOST_KEY_WARNING. */
export async function initS3Store(
  config: S3StoreConfig,
  secret: Buffer,
  o: KeyOptions & { label?: string; chunking?: ChunkParams } = {},
): Promise<{ keyId: string; warning: string }> {
  return withClient(config, o, async (c) => {
    if ((await c.list('keys/')).length > 0 || (await c.head('config')))
      throw new BoxbackError(
        'BOXBACK_ERR_ALREADY_EXISTS',
        `${c.location} is already a boxback store: add a key with boxback store key add`,
      );
    const dataKey = newDataKey();
    const kf = wrapDataKey(dataKey, secret, o.label ?? 'first key', o.scryptN);
    const cfg: RepoConfig = { format: STORE_FORMAT, chunking: o.chunking ?? DEFAULT_CHUNKING, createdAt: new Date().toISOString() };
    await c.put('config', seal(deriveKeys(dataKey).enc, 'config', Buffer.from(JSON.stringify(cfg))));
    await c.put(`keys/${kf.id}`, Buffer.from(JSON.stringify(kf)));
    dataKey.fill(0);
    return { keyId: kf.id, warning: LOST_KEY_WARNING };
  });
}

async function unlock(c: ObjectClient, secret: Buffer): Promise<Buffer> {
  for (const f of await c.list('keys/')) {
    const kf = await readKeyFile(c, f.key);
    const k = kf ? unwrapDataKey(kf, secret) : null;
    if (k) return k;
  }
  throw keyError(`${c.location}: the key given opens none of the store's keys`);
}

/** Wrap the store's data key with `newSecret` too (opened by `secret`). Returns the new key's id. */
export async function addStoreKey(
  config: S3StoreConfig,
  secret: Buffer,
  newSecret: Buffer,
  o: KeyOptions & { label?: string } = {},
): Promise<string> {
  return withClient(config, o, async (c) => {
    const dataKey = await unlock(c, secret);
    const kf = wrapDataKey(dataKey, newSecret, o.label ?? 'added key', o.scryptN);
    dataKey.fill(0);
    await c.put(`keys/${kf.id}`, Buffer.from(JSON.stringify(kf)));
    return kf.id;
  });
}

export async function listStoreKeys(config: S3StoreConfig, o: KeyOptions = {}): Promise<StoreKeyInfo[]> {
  return withClient(config, o, async (c) => {
    const out: StoreKeyInfo[] = [];
    for (const f of await c.list('keys/')) {
      const kf = await readKeyFile(c, f.key);
      if (kf?.format === KEY_FORMAT) out.push({ id: kf.id, label: kf.label, createdAt: kf.createdAt });
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  });
}

/** Remove key `id`; `secret` must open the store (and keeps opening it: the last key is never removed). */
export async function removeStoreKey(config: S3StoreConfig, secret: Buffer, id: string, o: KeyOptions = {}): Promise<void> {
  return withClient(config, o, async (c) => {
    const dataKey = await unlock(c, secret);
    dataKey.fill(0);
    const keys = await c.list('keys/');
    if (!keys.some((k) => k.key === `keys/${id}`)) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `${c.location} has no key ${id}`);
    if (keys.length <= 1) throw keyError(`key ${id} is the store's last key: removing it would lose every backup (add another first)`);
    const mine = await readKeyFile(c, `keys/${id}`);
    if (mine && unwrapDataKey(mine, secret) && keys.length === 1) throw keyError('refusing to remove the only key that opens the store');
    await c.delete([`keys/${id}`]);
  });
}
