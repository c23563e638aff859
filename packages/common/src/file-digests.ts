/**
 * Many files' sizes and SHA-256 digests checked in batches off the JS thread: the agent's native
 * addon reads and hashes a batch of files in one request on libuv's pool (packages/agent/native/
 * digest-files.c, registered with useFileDigests). A restore's check of a fresh tree copy
 * (store/local/tree-index.ts CopyCheck) read and hashed each file on the JS thread (an open,
 * fstat, read, hash and close: ~5 s for the default box's 120k files), while the same thread
 * extracts db.zip and VERIFY's hashing waits on it: there the JS thread builds a batch's paths
 * and compares its digests, nothing more.
 *
 * Optional: without a registered function (no addon built, another process using the store), or
 * with BOXBACK_NATIVE_DIGESTS=off, `digestBatcher` gives undefined and the caller hashes on the
 * JS thread as before.
 */
import { getSystemErrorName } from 'node:util';

/**
 * Hash `count` files named in `paths` (NUL-terminated, back to back): `sizes[i]` in, the size
 * file i must have; out, unchanged when it has it (its digest at `digests[32 i]`), else the
 * size found, or -errno.
 */
export type DigestFiles = (paths: Buffer, count: number, sizes: Float64Array, digests: Buffer) => Promise<void>;

let native: DigestFiles | undefined;

/** Register (or drop, with undefined) what hashes a batch: the agent's native addon. */
export function useFileDigests(fn: DigestFiles | undefined): void {
  native = fn;
}

/** A file's outcome: `digests.subarray(at, at + 32)` is its SHA-256 when `problem` is undefined. */
export type DigestOutcome = (entry: number, problem: string | undefined, digests: Buffer, at: number) => void;

/** A batch closes at this many files or this many bytes, whichever comes first. */
const BATCH_FILES = 256;
const BATCH_BYTES = 16 << 20;

interface Batch {
  paths: Buffer;
  used: number;
  count: number;
  bytes: number;
  sizes: Float64Array;
  wanted: Float64Array;
  entries: Uint32Array;
  digests: Buffer;
}

function newBatch(): Batch {
  return {
    paths: Buffer.allocUnsafe(64 * 1024),
    used: 0,
    count: 0,
    bytes: 0,
    sizes: new Float64Array(BATCH_FILES),
    wanted: new Float64Array(BATCH_FILES),
    entries: new Uint32Array(BATCH_FILES),
    digests: Buffer.allocUnsafe(BATCH_FILES * 32),
  };
}

/**
 * Files added one by one (`add`), hashed a batch at a time with at most `inFlight` batches on
 * the pool (default one: the rest of the pool, and the CPU, stay free for the inflating beside it); `onFile`
 * is called once per file as its batch comes back; `drain` sends the open batch and waits for
 * all. The batches' buffers are reused.
 */
export class DigestBatcher {
  private open = newBatch();
  private readonly free: Batch[] = [];
  private readonly running = new Set<Promise<void>>();
  private failure: Error | undefined;

  constructor(
    private readonly fn: DigestFiles,
    private readonly onFile: DigestOutcome,
    private readonly inFlight = 1,
  ) {}

  /** File `abs` of `size` bytes, the caller's entry number `entry`. */
  async add(abs: string, size: number, entry: number): Promise<void> {
    const b = this.open;
    const need = b.used + abs.length * 3 + 1;
    if (need > b.paths.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, b.paths.length * 2));
      b.paths.copy(grown, 0, 0, b.used);
      b.paths = grown;
    }
    b.used += b.paths.write(abs, b.used, 'utf8');
    b.paths[b.used++] = 0;
    b.sizes[b.count] = size;
    b.wanted[b.count] = size;
    b.entries[b.count] = entry;
    b.count++;
    b.bytes += size;
    if (b.count === BATCH_FILES || b.bytes >= BATCH_BYTES) await this.send();
  }

  /** Send the open batch (if it holds any file) and wait until every batch has come back. */
  async drain(): Promise<void> {
    await this.flush();
    await Promise.all(this.running);
    if (this.failure) throw this.failure;
  }

  /** Send the open batch now if it holds any file (a caller that waits on one of its files). */
  async flush(): Promise<void> {
    if (this.open.count) await this.send();
  }

  /** Whether entry `entry` waits in the open batch (entries added in increasing order). */
  isOpen(entry: number): boolean {
    return this.open.count > 0 && entry >= this.open.entries[0];
  }

  private async send(): Promise<void> {
    // The open batch taken at once: files added meanwhile (a caller that does not await add) go
    // into the next one.
    const b = this.open;
    this.open = this.free.pop() ?? newBatch();
    while (this.running.size >= this.inFlight) await Promise.race(this.running);
    if (this.failure) throw this.failure;
    const p: Promise<void> = this.fn(b.paths, b.count, b.sizes, b.digests).then(
      () => {
        this.running.delete(p);
        for (let k = 0; k < b.count; k++) {
          const found = b.sizes[k];
          const want = b.wanted[k];
          const problem = found === want ? undefined : found < 0 ? getSystemErrorName(found) : `size ${found}, manifest says ${want}`;
          this.onFile(b.entries[k], problem, b.digests, k * 32);
        }
        b.used = b.count = b.bytes = 0;
        this.free.push(b);
      },
      (err: Error) => {
        this.running.delete(p);
        this.failure ??= err;
        // Each of its files told (no digest), so no caller waits on one forever.
        for (let k = 0; k < b.count; k++) this.onFile(b.entries[k], err.message, b.digests, k * 32);
      },
    );
    this.running.add(p);
  }
}

/** A batcher on the registered native function, or undefined (none, or BOXBACK_NATIVE_DIGESTS=off). */
export function digestBatcher(onFile: DigestOutcome, inFlight?: number): DigestBatcher | undefined {
  if (!native || process.env.BOXBACK_NATIVE_DIGESTS === 'off') return undefined;
  return new DigestBatcher(native, onFile, inFlight);
}

/**
 * One file of `size` bytes read and hashed in one request on the pool (a backup's archives in a
 * restore's VERIFY: db.zip's 600 MB no longer hashed on the JS thread beside its extraction):
 * its SHA-256 (hex), or the problem (`size N, manifest says M`, an errno's name); undefined
 * when no native function is registered (the caller hashes as before).
 */
export async function digestFile(abs: string, size: number): Promise<{ sha256: string } | { problem: string } | undefined> {
  if (!native || process.env.BOXBACK_NATIVE_DIGESTS === 'off') return undefined;
  const sizes = Float64Array.of(size);
  const digest = Buffer.allocUnsafe(32);
  await native(Buffer.from(`${abs}\0`), 1, sizes, digest);
  const found = sizes[0];
  if (found === size) return { sha256: digest.toString('hex') };
  return { problem: found < 0 ? getSystemErrorName(found) : `size ${found}, manifest says ${size}` };
}
