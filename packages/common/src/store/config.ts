/**
 * The `store:` key of agent.yaml and controller.yaml, compiled once: raw YAML -> zod
 * (defaults, clear errors naming the bad key) -> paths resolved against the config file ->
 * frozen `StoreConfig`. Two forms:
 *
 *   store: /srv/boxback/store                   # the old plain path: a local store
 *   store: { kind: local, path: /srv/boxback/store }
 *   store:
 *     kind: s3
 *     endpoint: https://s3.example.net          # any S3-compatible server
 *     region: us-east-1
 *     bucket: boxback
 *     prefix: fleet1/                           # optional
 *     pathStyle: true                           # bucket in the path, not the host name
 *     credentialsFile: /etc/boxback/s3.cred     # 0600; else AWS_ACCESS_KEY_ID/... from the env
 *     keyFile: /etc/boxback/store.key           # 0600: unwraps the store's data key
 *
 * Secrets are never in this file: only the names of 0600 files that hold them.
 * A new backend adds its schema to `storeConfigSchema` and its constructor to registry.ts.
 */
import { z } from 'zod';
import { resolveFrom } from '../config-file.js';

const localSchema = z
  .object({
    kind: z.literal('local'),
    /** The store directory (local disk or an NFS mount). */
    path: z.string().min(1, 'want the store directory'),
  })
  .strict();

const s3Schema = z
  .object({
    kind: z.literal('s3'),
    /** http(s)://host[:port] of the S3 API. */
    endpoint: z.string().regex(/^https?:\/\/[^\s/]+\/?$/, 'want http(s)://host[:port]'),
    region: z.string().min(1).default('us-east-1'),
    bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'want an S3 bucket name (3-63 lower-case letters, digits, . or -)'),
    /** Key prefix inside the bucket ("" or "a/b/"). */
    prefix: z
      .string()
      .regex(/^([A-Za-z0-9._-]+\/)*$/, 'want "" or path segments each ended by "/", such as fleet1/')
      .default(''),
    /** Bucket in the URL path (radosgw, MinIO) rather than in the host name. */
    pathStyle: z.boolean().default(false),
    /** A 0600 file with the access key (see docs/operating.md); absent: the usual AWS_* environment variables. */
    credentialsFile: z.string().min(1).optional(),
    /** A 0600 key file that unwraps the store's data key. */
    keyFile: z.string().min(1).optional(),
    /** Uploads and downloads in flight. */
    concurrency: z.number().int().min(1).max(256).default(8),
    /** Bytes per second for uploads (0: unlimited). */
    bandwidthLimit: z.number().int().nonnegative().default(0),
    /** Prune never deletes an object younger than this (protects a backup that is still uploading). */
    pruneGraceSeconds: z.number().int().nonnegative().default(3600),
  })
  .strict();

const objectForm = z.discriminatedUnion('kind', [localSchema, s3Schema], {
  error: (i) => (i.code === 'invalid_union' ? 'want a directory, { kind: local, path } or { kind: s3, endpoint, bucket, ... }' : undefined),
});

/** The schema of `store:` (a plain path is the local form). */
export const storeConfigSchema = z.preprocess((v) => (typeof v === 'string' && v !== '' ? { kind: 'local', path: v } : v), objectForm);

export type LocalStoreConfig = Readonly<z.output<typeof localSchema>>;
export type S3StoreConfig = Readonly<z.output<typeof s3Schema>>;
export type StoreConfig = LocalStoreConfig | S3StoreConfig;
export type StoreKind = StoreConfig['kind'];

/** The validated `store:` value with its paths resolved against `configFile`'s directory, frozen. */
export function compileStoreConfig(raw: z.output<typeof storeConfigSchema>, configFile: string): StoreConfig {
  const r = (p: string) => resolveFrom(configFile, p);
  if (raw.kind === 'local') return Object.freeze({ ...raw, path: r(raw.path) });
  return Object.freeze({
    ...raw,
    endpoint: raw.endpoint.replace(/\/$/, ''),
    ...(raw.credentialsFile ? { credentialsFile: r(raw.credentialsFile) } : {}),
    ...(raw.keyFile ? { keyFile: r(raw.keyFile) } : {}),
  });
}

/** A local store config for a directory (tests, tools). */
export function localStoreConfig(dir: string): LocalStoreConfig {
  return Object.freeze({ kind: 'local', path: dir });
}

/** For messages: `/srv/store` or `s3 https://host/bucket/prefix` (never secrets). */
export function storeLocation(c: StoreConfig): string {
  return c.kind === 'local' ? c.path : `s3 ${c.endpoint}/${c.bucket}/${c.prefix}`;
}
