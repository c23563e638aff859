/**
 * SHA-256 off the JS thread, with no copy of the bytes: one worker thread hashing buffers
 * that live in shared memory (SharedArrayBuffer), for the zip writer of an archive holding a
 * large file (a database).
 *
 *   digest(buf)          the SHA-256 of one buffer (a raw 1 MiB block: how an unchanged block
 *                        is found, zip-blocks.ts)
 *   update(buf), final() one running SHA-256 (the archive's, over its bytes as they read back)
 *
 * Requests are answered in order; a buffer must not change until its request is answered.
 * Why: at 1 GiB of database the writer hashes 1 GiB of raw blocks and the ~0.6 GB archive.
 * `subtle.digest` hashes on libuv's pool but first copies each block on the JS thread (0.7-1 ms
 * per MiB on this VM, as long as hashing it), and `createHash` hashes on the JS thread: either
 * way the JS thread, which the trees' manifests also need during an incremental, spent 1-2 s
 * per GiB on it. The worker is started per archive (~15 MB while it runs) and ended with it.
 * The worker's code is inline (eval), so the bundled agent (one file) carries it.
 *
 * With the agent's native addon (native.ts) the same requests go to libuv's thread pool
 * instead (`startHasher` -> NativeHasher): OpenSSL's SHA-256 over the buffer's own bytes, no
 * thread of our own. The worker's ~16 MB of RSS (its isolate, heap and glibc arena, measured
 * in a bare process) were on the database archive's path at the peak of a deployed
 * incremental (docs/design/agent-memory.md). The worker stays for a host without the addon.
 */
import { Worker } from 'node:worker_threads';
import { nativeAddon } from '../native.js';

const CODE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
let running = createHash('sha256');
parentPort.on('message', (m) => {
  try {
    const bytes = new Uint8Array(m.sab, m.offset, m.length);
    if (m.op === 'digest') parentPort.postMessage({ id: m.id, hex: createHash('sha256').update(bytes).digest('hex') });
    else if (m.op === 'update') { running.update(bytes); parentPort.postMessage({ id: m.id }); }
    else { parentPort.postMessage({ id: m.id, hex: running.digest('hex') }); running = createHash('sha256'); }
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String(err && err.message || err) });
  }
});
`;

/** Whether `buf` lies in shared memory. */
export const isShared = (buf: Buffer): boolean => buf.buffer instanceof SharedArrayBuffer;

/**
 * Shared buffers given back (releaseShared), by size, kept for the next archive: a
 * SharedArrayBuffer is zero-filled when made, on the JS thread, and on this project's test VM
 * each new page costs ~5 ms per MiB to fault in (a database archive's 17 MiB of them took
 * 0.15 s of the JS thread as an incremental's trees and archives started, measured in a CPU
 * profile at load 9). At most SHARED_KEEP bytes are kept, between jobs too: the daemon holds
 * them while idle (what one large archive uses), instead of paying for them each backup.
 */
const sharedFree = new Map<number, Buffer[]>();
let sharedKept = 0;
export const SHARED_KEEP = 20 << 20;

/** A Buffer in shared memory (what HashThread can read without a copy): a kept one when there is one of this size. */
export function sharedBuffer(size: number): Buffer {
  const kept = sharedFree.get(size)?.pop();
  if (kept) {
    sharedKept -= size;
    return kept;
  }
  return Buffer.from(new SharedArrayBuffer(size));
}

/**
 * Give back a whole buffer from sharedBuffer for a later one (kept up to SHARED_KEEP). Only
 * once nothing reads or writes it any more: no hash request, read or write of it in flight.
 */
export function releaseShared(buf: Buffer): void {
  if (!isShared(buf) || buf.byteOffset !== 0 || buf.length !== buf.buffer.byteLength) return;
  if (sharedKept + buf.length > SHARED_KEEP) return;
  let list = sharedFree.get(buf.length);
  if (!list) sharedFree.set(buf.length, (list = []));
  if (list.includes(buf)) return;
  list.push(buf);
  sharedKept += buf.length;
}

/** Bytes of shared buffers kept for reuse (tests, memory reports). */
export const sharedKeptBytes = (): number => sharedKept;

/**
 * Let the kept buffers go (a restore, which writes no archive: their ~17-20 MiB would sit under
 * its peak). They are freed by the next GC. Returns the bytes let go.
 */
export function dropSharedBuffers(): number {
  const n = sharedKept;
  sharedFree.clear();
  sharedKept = 0;
  return n;
}

/** A database archive's SHA-256s, off the JS thread (HashThread or NativeHasher). */
export interface Hasher {
  /** The SHA-256 (hex) of `buf` (shared memory, unchanged until this resolves). */
  digest(buf: Buffer): Promise<string>;
  /** Add `buf` (shared memory, unchanged until this resolves) to the running SHA-256. */
  update(buf: Buffer): Promise<void>;
  /** The running SHA-256 (hex) of everything updated so far; it starts again empty. */
  final(): Promise<string>;
  /** End it (pending requests are rejected or settle). */
  close(): Promise<void>;
  /**
   * With the native addon (NativeHasher), block I/O in one trip through the pool each:
   * `readHash` reads `buf` full from `fd` at `position` (or to the end of the file) and
   * resolves [bytes read, their SHA-256 hex ('' for none)]; `writeCheck` writes `buf` at
   * `position`, reads it back into `scratch` piece by piece, compares it byte for byte and
   * adds the bytes as they read back to the running SHA-256 (in order with `update`), resolving
   * -1 or the offset of the first piece that read back different or short.
   */
  readHash?(fd: number, buf: Buffer, position: number): Promise<[number, string]>;
  writeCheck?(fd: number, buf: Buffer, position: number, scratch: Buffer): Promise<number>;
}

/** The native addon's hash functions, when its build has them (an older build does not). */
interface NativeHash {
  hashAvailable(): boolean;
  sha256(buf: Buffer): Promise<string>;
  hashStart(): object;
  hashUpdate(ctx: object, buf: Buffer): Promise<void>;
  hashFinal(ctx: object): string;
  /** Absent from builds before them (the zip writer then reads, writes and hashes in separate trips). */
  readHash?(fd: number, buf: Buffer, position: number): Promise<[number, string]>;
  writeCheck?(ctx: object, fd: number, buf: Buffer, position: number, scratch: Buffer): Promise<number>;
}

function nativeHash(): NativeHash | undefined {
  const a = nativeAddon as (typeof nativeAddon & Partial<NativeHash>) | undefined;
  if (process.env.BOXBACK_NATIVE_HASH === 'off' || typeof a?.hashAvailable !== 'function') return undefined;
  return a.hashAvailable() ? (a as NativeHash) : undefined;
}

/**
 * SHA-256 on libuv's thread pool through the native addon: `digest`s run side by side (each
 * over its own buffer), `update`s one after the other in the order they were asked (each waits
 * for the one before: the running hash is one context).
 */
export class NativeHasher implements Hasher {
  private readonly ctx: object;
  private tail: Promise<void> = Promise.resolve();
  private failed?: Error;

  readonly readHash?: (fd: number, buf: Buffer, position: number) => Promise<[number, string]>;
  readonly writeCheck?: (fd: number, buf: Buffer, position: number, scratch: Buffer) => Promise<number>;

  constructor(private readonly n: NativeHash) {
    this.ctx = n.hashStart();
    if (process.env.BOXBACK_NATIVE_BLOCK_IO === 'off') return;
    const { readHash, writeCheck } = n;
    if (typeof readHash === 'function') this.readHash = (fd, buf, position) => readHash.call(n, fd, buf, position);
    if (typeof writeCheck === 'function')
      this.writeCheck = (fd, buf, position, scratch) => this.chain(() => writeCheck.call(n, this.ctx, fd, buf, position, scratch));
  }

  /** `run` after every earlier update of the running hash; a failure fails every later one and final. */
  private chain<T>(run: () => Promise<T>): Promise<T> {
    if (this.failed) return Promise.reject(this.failed);
    const next = this.tail.then(run);
    this.tail = next.then(
      () => undefined,
      (err: Error) => void (this.failed ??= err),
    );
    return next;
  }

  digest(buf: Buffer): Promise<string> {
    return this.failed ? Promise.reject(this.failed) : this.n.sha256(buf);
  }

  update(buf: Buffer): Promise<void> {
    // A failed update fails every later one and final: the running hash is lost.
    return this.chain(() => this.n.hashUpdate(this.ctx, buf));
  }

  async final(): Promise<string> {
    await this.tail;
    if (this.failed) throw this.failed;
    return this.n.hashFinal(this.ctx);
  }

  async close(): Promise<void> {
    await this.tail;
    this.failed ??= new Error('the hasher was closed');
  }
}

/** The hasher for one archive: on the pool through the native addon, else a worker thread. */
export function startHasher(): Hasher {
  const n = nativeHash();
  return n ? new NativeHasher(n) : new HashThread();
}

interface Waiter {
  resolve(hex: string): void;
  reject(err: Error): void;
}

export class HashThread implements Hasher {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, Waiter>();
  private nextId = 0;
  private failed?: Error;

  constructor() {
    this.worker = new Worker(CODE, {
      eval: true,
      // It holds no data of its own: a small heap.
      resourceLimits: { maxYoungGenerationSizeMb: 1, maxOldGenerationSizeMb: 16 },
    });
    this.worker.on('message', (m: { id: number; hex?: string; error?: string }) => {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (m.error) w?.reject(new Error(`hashing failed: ${m.error}`));
      else w?.resolve(m.hex ?? '');
    });
    const fail = (err: Error) => {
      this.failed ??= err;
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the hash thread exited (code ${code})`)));
  }

  private ask(op: 'digest' | 'update' | 'final', buf?: Buffer): Promise<string> {
    if (this.failed) return Promise.reject(this.failed);
    if (buf && !isShared(buf)) return Promise.reject(new Error('HashThread: the buffer is not in shared memory'));
    const id = this.nextId++;
    return new Promise<string>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, sab: buf?.buffer, offset: buf?.byteOffset ?? 0, length: buf?.length ?? 0 });
    });
  }

  /** The SHA-256 (hex) of `buf` (shared memory, unchanged until this resolves). */
  digest(buf: Buffer): Promise<string> {
    return this.ask('digest', buf);
  }

  /** Add `buf` (shared memory, unchanged until this resolves) to the running SHA-256. */
  async update(buf: Buffer): Promise<void> {
    await this.ask('update', buf);
  }

  /** The running SHA-256 (hex) of everything updated so far; it starts again empty. */
  final(): Promise<string> {
    return this.ask('final');
  }

  /** End the thread (pending requests are rejected). */
  async close(): Promise<void> {
    this.failed ??= new Error('the hash thread was closed');
    await this.worker.terminate();
  }
}
