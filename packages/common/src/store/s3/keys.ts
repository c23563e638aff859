/**
 * Store keys. One random 256-bit data key per store encrypts and names everything in it; it is
 * stored only wrapped, once per key file or passphrase, as `keys/<id>` objects:
 *
 *   kek     = scrypt(secret, salt, N, r = 8, p = 1)            (secret: a passphrase or a key file's bytes)
 *   wrapped = nonce (12) | AES-256-GCM(kek, nonce, aad = "boxback key <id>", dataKey) | tag
 *
 * From the data key, HKDF-SHA256 derives the working keys: `enc` (sealed objects), `id` (HMAC
 * naming blobs by their content), `name` (HMAC naming manifests by backup ID) and `chunk` (the
 * content-defined chunker's gear table), so the server learns neither names, content, nor
 * chunk boundaries it could match against known files. Losing every key file and passphrase
 * loses the backups: nothing can unwrap the data key. See docs/design/store-s3-format.md.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, scryptSync } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { BoxbackError } from '../../errors.js';

export const KEY_FORMAT = 'boxback/s3-key@1';

export interface KeyFile {
  format: typeof KEY_FORMAT;
  id: string;
  label: string;
  createdAt: string;
  kdf: { name: 'scrypt'; N: number; r: number; p: number; salt: string };
  /** base64 of nonce | ciphertext | tag. */
  wrapped: string;
}

export interface StoreKeys {
  enc: Buffer;
  id: Buffer;
  name: Buffer;
  chunk: Buffer;
}

/** scrypt cost: 2^17 (128 MiB, ~0.5 s) by default; tests pass a smaller N. */
export const DEFAULT_SCRYPT_N = 2 ** 17;
/** scrypt cost for a key file of 256 random bits: 2^12 (4 MiB). */
export const RANDOM_KEY_SCRYPT_N = 2 ** 12;

/**
 * The scrypt cost to wrap with for `secret`: a key file of 64 or more hex digits (what
 * `store init` writes: 256 random bits) cannot be guessed however cheap each try is, so
 * stretching it buys nothing and cost every agent 128 MiB of peak RSS when it opened the
 * store; anything else (a passphrase, a key file a person wrote) gets the full cost. The N
 * used is in the key's keys/<id> object: unwrapping works with either.
 */
export function scryptCostFor(secret: Buffer): number {
  return /^[0-9a-f]{64,}$/i.test(secret.toString('latin1').trim()) ? RANDOM_KEY_SCRYPT_N : DEFAULT_SCRYPT_N;
}

export function newDataKey(): Buffer {
  return randomBytes(32);
}

function kek(secret: Buffer, kdf: KeyFile['kdf']): Buffer {
  const maxmem = 128 * kdf.N * kdf.r + 16 * 1024 * 1024;
  return scryptSync(secret, Buffer.from(kdf.salt, 'base64'), 32, { N: kdf.N, r: kdf.r, p: kdf.p, maxmem });
}

export function wrapDataKey(dataKey: Buffer, secret: Buffer, label: string, N = scryptCostFor(secret)): KeyFile {
  const id = randomBytes(8).toString('hex');
  const kdf = { name: 'scrypt' as const, N, r: 8, p: 1, salt: randomBytes(16).toString('base64') };
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', kek(secret, kdf), nonce);
  c.setAAD(Buffer.from(`boxback key ${id}`));
  const ct = Buffer.concat([c.update(dataKey), c.final(), c.getAuthTag()]);
  return {
    format: KEY_FORMAT,
    id,
    label,
    createdAt: new Date().toISOString(),
    kdf,
    wrapped: Buffer.concat([nonce, ct]).toString('base64'),
  };
}

/** The data key, or null when this secret does not open this key file. */
export function unwrapDataKey(kf: KeyFile, secret: Buffer): Buffer | null {
  if (kf.format !== KEY_FORMAT || kf.kdf?.name !== 'scrypt') return null;
  const raw = Buffer.from(kf.wrapped, 'base64');
  if (raw.length !== 12 + 32 + 16) return null;
  const d = createDecipheriv('aes-256-gcm', kek(secret, kf.kdf), raw.subarray(0, 12));
  d.setAAD(Buffer.from(`boxback key ${kf.id}`));
  d.setAuthTag(raw.subarray(44));
  const key = d.update(raw.subarray(12, 44));
  try {
    d.final();
  } catch {
    return null;
  }
  return key;
}

export function deriveKeys(dataKey: Buffer): StoreKeys {
  const k = (info: string) => Buffer.from(hkdfSync('sha256', dataKey, Buffer.alloc(0), `boxback ${info} v1`, 32));
  return { enc: k('enc'), id: k('blob-id'), name: k('name'), chunk: k('chunker') };
}

/** A blob's id: HMAC-SHA256 of its plaintext under the store's id key (hex). */
export function blobId(keys: StoreKeys, plain: Buffer): string {
  return blobIdOfParts(keys, [plain]);
}

/** blobId of a plaintext held in pieces (a blob's frames, opened one by one). */
export function blobIdOfParts(keys: StoreKeys, parts: Buffer[]): string {
  const h = createHmac('sha256', keys.id);
  for (const p of parts) h.update(p);
  return h.digest('hex');
}

/** A manifest object's name: HMAC-SHA256 of the backup ID under the name key (hex). */
export function manifestName(keys: StoreKeys, backupId: string): string {
  return createHmac('sha256', keys.name).update(backupId).digest('hex');
}

/**
 * Read a secret (store passphrase, key file, S3 credentials) from a file only its owner can
 * read: a secret that group or others could read is refused, never used.
 */
export function readSecretFile(file: string, what: string): Buffer {
  let st;
  try {
    st = statSync(file);
  } catch (err) {
    throw new BoxbackError(
      'BOXBACK_ERR_CONFIG_INVALID',
      `${what} ${file} cannot be read: ${(err as NodeJS.ErrnoException).code}`,
      {},
      { cause: err },
    );
  }
  if ((st.mode & 0o077) !== 0) {
    throw new BoxbackError(
      'BOXBACK_ERR_CONFIG_INVALID',
      `${what} ${file} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
    );
  }
  const text = readFileSync(file);
  // a trailing newline from an editor or `echo` is not part of the secret
  let end = text.length;
  while (end > 0 && (text[end - 1] === 0x0a || text[end - 1] === 0x0d)) end--;
  return text.subarray(0, end);
}
