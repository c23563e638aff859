/**
 * The one way boxback talks to an S3-compatible server: a thin wrapper over
 * `@aws-sdk/client-s3` that adds what a backup needs and the SDK leaves to its caller.
 *
 *   credentials  from a 0600 file (`credentialsFile`) or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
 *                (/ AWS_SESSION_TOKEN); never logged, never in an error message
 *   retries      our own, on an explicit set of retryable failures (5xx, 429 and throttling
 *                codes, timeouts, connection resets and refusals), with exponential backoff and
 *                jitter; the SDK's own retry is off (maxAttempts 1) so the set is ours alone
 *   errors       typed BoxbackErrors: STORE_ACCESS_DENIED (wrong key or secret), STORE_NO_BUCKET,
 *                STORE_QUOTA (DISK_FULL-like), STORE_UNREACHABLE (after the retries)
 *   checksums    every PUT and every multipart part is signed with its body's SHA-256
 *                (x-amz-content-sha256, SigV4): the server refuses a body that does not match.
 *                A pack's name is that SHA-256, so its caller passes it in and the body is hashed
 *                once, not three times (no Content-MD5, no second SHA-256 by the SDK's signer);
 *                reads are checked by the layer above (SHA-256 names, GCM)
 *   multipart    objects from `multipartThreshold` bytes on are sent in parts, in parallel; any
 *                failure aborts the upload, so no multipart upload is left open
 *   bandwidth    an optional bytes/second limit on uploads (a shared token bucket)
 *   concurrency  at most `concurrency` requests with a body in flight
 *   counters     requests, bytes PUT and bytes GET, for tests and the bench
 */
import { createHash } from 'node:crypto';
// The SDK is loaded at the first request, not at import: every `boxback` command imports
// @boxback/common, and loading the SDK cost each CLI start about 0.4 s of CPU.
import type * as S3Sdk from '@aws-sdk/client-s3';
import { BoxbackError } from '../../errors.js';
import { mapLimit } from '../../limit.js';
import type { S3StoreConfig } from '../config.js';
import { readSecretFile } from './keys.js';

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/**
 * Credentials from `file` (0600; lines `KEY=VALUE` or `key = value`, names as in the AWS
 * environment variables or the AWS credentials file) or, without a file, from the environment.
 */
export function loadS3Credentials(file: string | undefined, env: NodeJS.ProcessEnv = process.env): S3Credentials {
  const vars: Record<string, string> = {};
  if (file) {
    for (const line of readSecretFile(file, 'S3 credentials file').toString('utf8').split('\n')) {
      const m = /^\s*([A-Za-z_]+)\s*[=:]\s*(.*?)\s*$/.exec(line);
      if (m && !line.trimStart().startsWith('#')) vars[m[1].toUpperCase()] = m[2].replace(/^["']|["']$/g, '');
    }
  } else {
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN']) if (env[k]) vars[k] = env[k]!;
  }
  const accessKeyId = vars.AWS_ACCESS_KEY_ID ?? vars.ACCESS_KEY_ID;
  const secretAccessKey = vars.AWS_SECRET_ACCESS_KEY ?? vars.SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) {
    const where = file ? `S3 credentials file ${file}` : 'the environment';
    throw new BoxbackError(
      'BOXBACK_ERR_CONFIG_INVALID',
      `${where} has no AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (set credentialsFile to a 0600 file holding them)`,
    );
  }
  const token = vars.AWS_SESSION_TOKEN;
  return { accessKeyId, secretAccessKey, ...(token ? { sessionToken: token } : {}) };
}

export interface ObjectClientOptions {
  credentials?: S3Credentials;
  /** Attempts per request, the first included (default 6). */
  maxAttempts?: number;
  /** First backoff (default 200 ms), doubled per attempt, capped at 5 s, with jitter. */
  baseDelayMs?: number;
  /** Objects from this size on go multipart (default 16 MiB); parts of `partSize` (default 8 MiB, min 5 MiB). */
  multipartThreshold?: number;
  partSize?: number;
  /** Per-request socket timeout (default 60 s). */
  requestTimeoutMs?: number;
}

export interface ObjectInfo {
  key: string;
  size: number;
  lastModified: Date;
}

export interface ClientCounters {
  requests: number;
  retries: number;
  putBytes: number;
  getBytes: number;
}

const RETRYABLE_CODES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'RequestTimeout',
  'RequestTimeTooSkewed',
  'InternalError',
  'ServiceUnavailable',
  'TimeoutError',
  'RequestTimeoutException',
]);
const RETRYABLE_NET = /ECONNRESET|ECONNREFUSED|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN|socket hang up|aborted|timed? ?out/i;

interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

function statusOf(err: SdkError): number | undefined {
  return err.$metadata?.httpStatusCode;
}

/** Is this failure worth another attempt? 5xx, 429, throttling and timeouts, dropped connections. */
export function isRetryable(err: unknown): boolean {
  const e = err as SdkError;
  if (err instanceof BoxbackError) return false;
  const status = statusOf(e);
  if (status !== undefined && (status >= 500 || status === 429)) return !['QuotaExceeded'].includes(e.name ?? '');
  if (RETRYABLE_CODES.has(e.name ?? '') || RETRYABLE_CODES.has(e.code ?? '')) return true;
  if (status === undefined) return RETRYABLE_NET.test(`${e.code ?? ''} ${e.name ?? ''} ${e.message ?? ''}`);
  return false;
}

/** A typed error for what the server said (null: not one of ours, e.g. NoSuchKey). */
export function classify(err: unknown, where: string): BoxbackError | null {
  if (err instanceof BoxbackError) return err;
  const e = err as SdkError;
  const name = e.name ?? '';
  const status = statusOf(e);
  if (name === 'NoSuchBucket')
    return new BoxbackError(
      'BOXBACK_ERR_STORE_NO_BUCKET',
      `${where}: the bucket does not exist (create it, or fix bucket: in the store config)`,
    );
  if (name === 'QuotaExceeded' || name === 'EntityTooLarge' || name === 'InsufficientStorage' || status === 507)
    return new BoxbackError(
      'BOXBACK_ERR_STORE_QUOTA',
      `${where}: the bucket is at its quota (${name || status}); the partial backup is not Restorable`,
    );
  if (['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidToken', 'ExpiredToken'].includes(name) || status === 403)
    return new BoxbackError('BOXBACK_ERR_STORE_ACCESS_DENIED', `${where}: the server refused the credentials (${name || status})`);
  return null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A token bucket shared by every upload: reserve n bytes, wait until the limit allows them. */
class Bandwidth {
  private next = 0;
  constructor(private readonly bytesPerSecond: number) {}
  async take(n: number): Promise<void> {
    if (this.bytesPerSecond <= 0) return;
    const now = Date.now();
    const start = Math.max(now, this.next);
    this.next = start + (n / this.bytesPerSecond) * 1000;
    if (start > now) await sleep(start - now);
  }
}

/** A counting semaphore. */
class Slots {
  private waiting: Array<() => void> = [];
  constructor(private free: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((r) => this.waiting.push(r));
    try {
      return await fn();
    } finally {
      const w = this.waiting.shift();
      if (w) w();
      else this.free++;
    }
  }
}

/** A response body in one buffer: copied once into `into` (or one of its length) when its length is known. */
async function readBody(body: AsyncIterable<Uint8Array>, length: number | undefined, into?: Buffer): Promise<Buffer> {
  let out =
    length === undefined || length < 0 ? null : into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    const b = Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
    if (out && n + b.length <= out.length) {
      n += b.copy(out, n);
      continue;
    }
    if (out) parts.push(out.subarray(0, n)); // longer than it said: joined as it came from here on
    out = null;
    parts.push(b);
    n += b.length;
  }
  return out ? out.subarray(0, n) : Buffer.concat(parts, n);
}

const sha256Hex = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * A command whose payload hash is `hex` (the signer signs it as it is instead of hashing the
 * body again; the server hashes what it receives and refuses a mismatch).
 */
function withPayloadHash<C extends S3Sdk.PutObjectCommand | S3Sdk.UploadPartCommand>(cmd: C, hex: string): C {
  // both commands' stacks take the same middleware; typed through one of them
  (cmd as S3Sdk.PutObjectCommand).middlewareStack.add(
    (next) => (args) => {
      const req = args.request as { headers?: Record<string, string> };
      if (req.headers) req.headers['x-amz-content-sha256'] = hex;
      return next(args);
    },
    { step: 'build', name: 'boxbackPayloadSha256' },
  );
  return cmd;
}

export class ObjectClient {
  readonly counters: ClientCounters = { requests: 0, retries: 0, putBytes: 0, getBytes: 0 };
  private readonly pendingAborts: Array<{ Key: string; UploadId: string }> = [];
  private s3!: S3Sdk.S3Client;
  /** The SDK's command classes (loaded with the client). */
  private c!: typeof S3Sdk;
  /** Resolves once the SDK is loaded and the client made; every request awaits it. */
  private readonly ready: Promise<void>;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly slots: Slots;
  private readonly bw: Bandwidth;
  private readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  readonly multipartThreshold: number;
  private readonly partSize: number;

  constructor(
    readonly config: S3StoreConfig,
    o: ObjectClientOptions = {},
  ) {
    const credentials = o.credentials ?? loadS3Credentials(config.credentialsFile);
    // The SDK warns on every process start that its releases after January 2027 need Node 22;
    // boxback pins this release (ECOSYSTEM.md), so the warning only adds a stderr line to every CLI run.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.ready = import('@aws-sdk/client-s3').then((sdk) => {
      this.c = sdk;
      this.s3 = new sdk.S3Client({
        endpoint: config.endpoint,
        region: config.region,
        forcePathStyle: config.pathStyle,
        credentials,
        maxAttempts: 1,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        requestHandler: { requestTimeout: o.requestTimeoutMs ?? 60_000, connectionTimeout: 10_000 },
      });
    });
    this.ready.catch(() => undefined); // reported by the first request
    this.bucket = config.bucket;
    this.prefix = config.prefix;
    this.slots = new Slots(config.concurrency);
    this.bw = new Bandwidth(config.bandwidthLimit);
    this.maxAttempts = o.maxAttempts ?? 6;
    this.baseDelayMs = o.baseDelayMs ?? 200;
    this.multipartThreshold = o.multipartThreshold ?? 16 * 1024 * 1024;
    this.partSize = Math.max(5 * 1024 * 1024, o.partSize ?? 8 * 1024 * 1024);
  }

  /** Where this client writes, for messages (no credentials). */
  get location(): string {
    return `s3 ${this.config.endpoint}/${this.bucket}/${this.prefix}`;
  }

  /** Run one request with retries; `notFound` answers a 404 for the object itself. */
  private async call<T>(what: string, fn: () => Promise<T>, notFound?: () => T, outOfRange?: () => T): Promise<T> {
    await this.ready;
    for (let attempt = 1; ; attempt++) {
      this.counters.requests++;
      try {
        return await fn();
      } catch (err) {
        const e = err as SdkError;
        if (notFound && (e.name === 'NoSuchKey' || e.name === 'NotFound' || (statusOf(e) === 404 && e.name !== 'NoSuchBucket')))
          return notFound();
        if (outOfRange && (e.name === 'InvalidRange' || statusOf(e) === 416)) return outOfRange();
        const typed = classify(err, `${this.location}: ${what}`);
        if (typed) throw typed;
        if (!isRetryable(err)) {
          throw new BoxbackError(
            'BOXBACK_ERR_STORE_UNREACHABLE',
            `${this.location}: ${what} failed: ${e.name ?? ''} ${e.message ?? ''}`.trim(),
            {},
            {
              cause: err,
            },
          );
        }
        if (attempt >= this.maxAttempts) {
          throw new BoxbackError(
            'BOXBACK_ERR_STORE_UNREACHABLE',
            `${this.location}: ${what} failed ${attempt} times (last: ${statusOf(e) ?? e.code ?? e.name}: ${e.message ?? ''})`,
            {},
            { cause: err },
          );
        }
        this.counters.retries++;
        const delay = Math.min(5000, this.baseDelayMs * 2 ** (attempt - 1));
        await sleep(delay / 2 + Math.random() * (delay / 2));
      }
    }
  }

  private k(key: string): string {
    return this.prefix + key;
  }

  /** Is the bucket there and are the credentials good? Throws the typed error. */
  async check(): Promise<void> {
    await this.call(
      'open the bucket',
      () => this.s3.send(new this.c.HeadBucketCommand({ Bucket: this.bucket })),
      () => {
        throw new BoxbackError('BOXBACK_ERR_STORE_NO_BUCKET', `${this.location}: the bucket does not exist`);
      },
    );
  }

  /**
   * PUT a whole object (multipart from the threshold on), checksummed; resolves once stored.
   * `sha256`: the body's SHA-256 in hex when the caller has it already (a pack's name).
   */
  async put(key: string, body: Buffer, sha256?: string): Promise<void> {
    if (body.length >= this.multipartThreshold) return this.putMultipart(key, body);
    await this.slots.run(async () => {
      await this.bw.take(body.length);
      const hash = sha256 ?? sha256Hex(body);
      await this.call(`PUT ${key}`, () =>
        this.s3.send(withPayloadHash(new this.c.PutObjectCommand({ Bucket: this.bucket, Key: this.k(key), Body: body }), hash)),
      );
      this.counters.putBytes += body.length;
    });
  }

  private async putMultipart(key: string, body: Buffer): Promise<void> {
    const Key = this.k(key);
    const created = await this.call(`start multipart ${key}`, () =>
      this.s3.send(new this.c.CreateMultipartUploadCommand({ Bucket: this.bucket, Key })),
    );
    const UploadId = created.UploadId!;
    try {
      const n = Math.ceil(body.length / this.partSize);
      const parts = await mapLimit(
        Array.from({ length: n }, (_, i) => i),
        n,
        (i) =>
          this.slots.run(async () => {
            const part = body.subarray(i * this.partSize, (i + 1) * this.partSize);
            await this.bw.take(part.length);
            const hash = sha256Hex(part);
            const r = await this.call(`PUT ${key} part ${i + 1}`, () =>
              this.s3.send(
                withPayloadHash(new this.c.UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber: i + 1, Body: part }), hash),
              ),
            );
            this.counters.putBytes += part.length;
            return { ETag: r.ETag, PartNumber: i + 1 };
          }),
      );
      await this.call(`complete multipart ${key}`, () =>
        this.s3.send(new this.c.CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts: parts } })),
      );
    } catch (err) {
      await this.abortUpload(Key, UploadId);
      throw err;
    }
  }

  private async abortUpload(Key: string, UploadId: string): Promise<boolean> {
    try {
      await this.call(
        `abort multipart ${Key}`,
        () => this.s3.send(new this.c.AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })),
        () => undefined,
      );
      return true;
    } catch {
      // the server is out of reach: tried again by settleAborts (next begin), or by a prune
      this.pendingAborts.push({ Key, UploadId });
      return false;
    }
  }

  /** Abort again the multipart uploads whose abort failed (the server was out of reach). */
  async settleAborts(): Promise<number> {
    const pending = this.pendingAborts.splice(0);
    let left = 0;
    for (const p of pending) if (!(await this.abortUpload(p.Key, p.UploadId))) left++;
    return left;
  }

  /**
   * GET a whole object or a byte range [start, end] (inclusive); null when absent, empty when
   * the range lies past its end. `into`: a buffer to read the body into when it fits (the
   * result is then a view of it: a restore reuses a few buffers instead of a fresh one per GET).
   */
  async get(key: string, range?: { start: number; end: number }, into?: Buffer): Promise<Buffer | null> {
    return this.slots.run(() =>
      this.call(
        `GET ${key}`,
        async () => {
          const r = await this.s3.send(
            new this.c.GetObjectCommand({
              Bucket: this.bucket,
              Key: this.k(key),
              ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}),
            }),
          );
          const b = await readBody(r.Body as AsyncIterable<Uint8Array>, r.ContentLength, into);
          this.counters.getBytes += b.length;
          return b;
        },
        () => null,
        () => Buffer.alloc(0),
      ),
    );
  }

  /** Size and time of an object; null when absent. */
  async head(key: string): Promise<{ size: number; lastModified: Date } | null> {
    return this.call(
      `HEAD ${key}`,
      async () => {
        const r = await this.s3.send(new this.c.HeadObjectCommand({ Bucket: this.bucket, Key: this.k(key) }));
        return { size: r.ContentLength ?? 0, lastModified: r.LastModified ?? new Date(0) };
      },
      () => null,
    );
  }

  /** Every object under `sub` (keys relative to the store's prefix). */
  async list(sub: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let ContinuationToken: string | undefined;
    do {
      const r = await this.call(`LIST ${sub}`, () =>
        this.s3.send(new this.c.ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.k(sub), ContinuationToken })),
      );
      for (const o of r.Contents ?? [])
        out.push({ key: o.Key!.slice(this.prefix.length), size: o.Size ?? 0, lastModified: o.LastModified ?? new Date(0) });
      ContinuationToken = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (ContinuationToken);
    return out;
  }

  /** Delete objects (absent ones are fine). */
  async delete(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const r = await this.call(`DELETE ${batch.length} objects`, () =>
        this.s3.send(
          new this.c.DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: { Objects: batch.map((k) => ({ Key: this.k(k) })), Quiet: true },
          }),
        ),
      );
      const bad = (r.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (bad.length) {
        const typed = classify({ name: bad[0].Code, message: bad[0].Message }, `${this.location}: DELETE ${bad[0].Key}`);
        throw (
          typed ??
          new BoxbackError(
            'BOXBACK_ERR_STORE_UNREACHABLE',
            `${this.location}: DELETE ${bad[0].Key}: ${bad[0].Code} ${bad[0].Message ?? ''}`,
          )
        );
      }
    }
  }

  /** Multipart uploads still open under the store's prefix. */
  async openUploads(): Promise<Array<{ key: string; uploadId: string; initiated: Date }>> {
    const r = await this.call('list multipart uploads', () =>
      this.s3.send(new this.c.ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: this.prefix })),
    );
    return (r.Uploads ?? []).map((u) => ({
      key: u.Key!.slice(this.prefix.length),
      uploadId: u.UploadId!,
      initiated: u.Initiated ?? new Date(0),
    }));
  }

  /** Abort an open multipart upload (prune: one an interrupted process left). */
  async abortOpenUpload(key: string, uploadId: string): Promise<void> {
    await this.abortUpload(this.k(key), uploadId);
  }

  destroy(): void {
    void this.ready.then(
      () => this.s3.destroy(),
      () => undefined,
    );
  }
}
