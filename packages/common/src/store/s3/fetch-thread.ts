/**
 * A tree fetch's CPU work on a thread of its own (restore.ts `readByPack`): the JS thread GETs a
 * pack's span into a buffer and hands it over (transferred, not copied); this thread opens every
 * blob in it (GCM per frame, decompression, the HMAC id where no SHA-256 is compared), checks
 * each target file's size and SHA-256 against its manifest entry, writes the file (mode 0600,
 * then owner, mode and mtime on the open descriptor) and hands the buffer back.
 *
 * Why: a restore extracts the zips (db.zip, from the bucket) and fetches the trees side by side,
 * and both were on the one JS thread, which the profile showed busy throughout (blob opening,
 * 5000+ file writes and their metadata calls, GC), with the second core idle when the machine
 * is quiet; restic restores on as many threads as there are cores. One round trip per span (up
 * to 4 MiB, hundreds of small files), not per file: libuv's pool per small item cost more CPU
 * than it saved (store-s3-performance.md, the 17:00 session).
 *
 * The code is inline (eval), so the bundled agent (one file) carries it, as hash-thread.ts does.
 * It repeats sealed.ts's `openParts` and pack.ts's `openBlobParts` for a blob read from a pack
 * (the format: store-s3-format.md); test/s3/s3-tamper.test.ts and s3-store.test.ts fetch trees
 * through it (tampered packs refused, blobs of one and several frames, each codec).
 */
import { Worker } from 'node:worker_threads';
import { BoxbackError } from '../../errors.js';
import type { StoreKeys } from './keys.js';
import { tampered } from './sealed.js';

const CODE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createDecipheriv, createHash, createHmac } = require('node:crypto');
const { brotliDecompressSync, inflateRawSync } = require('node:zlib');
const fs = require('node:fs');
const buf = (u) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
const enc = buf(workerData.enc);
const idKey = buf(workerData.id);
const root = workerData.root;
const MAGIC = Buffer.from('BBS1');
const HEADER = 37;
const TAG = 16;
const INFO = Buffer.from('boxback sealed v1\\x01');
const AAD = ['blob', 'blobz', 'blobb'];
const OUT_MAX = 8 << 20;
class Tampered extends Error {
  constructor(what, detail) { super(detail); this.what = what; this.detail = detail; }
}
function nonce(i, last) {
  const n = Buffer.alloc(12);
  n.writeUInt32BE(i, 7);
  n[11] = last ? 1 : 0;
  return n;
}
function openParts(aad, sealed, what) {
  if (sealed.length < HEADER || !sealed.subarray(0, 4).equals(MAGIC)) throw new Tampered(what, 'not a sealed boxback object');
  const log2 = sealed[4];
  if (log2 < 10 || log2 > 24) throw new Tampered(what, 'bad frame size');
  const prk = createHmac('sha256', sealed.subarray(5, HEADER)).update(enc).digest();
  const key = createHmac('sha256', prk).update(INFO).digest();
  const a = Buffer.from(aad);
  const step = 2 ** log2 + TAG;
  const body = sealed.subarray(HEADER);
  const frames = Math.floor(body.length / step) + 1;
  if (body.length % step === 0 && body.length > 0) throw new Tampered(what, 'truncated (no final frame)');
  const out = [];
  for (let i = 0; i < frames; i++) {
    const last = i === frames - 1;
    const frame = body.subarray(i * step, (i + 1) * step);
    if (frame.length < TAG) throw new Tampered(what, 'truncated frame');
    const d = createDecipheriv('aes-256-gcm', key, nonce(i, last));
    d.setAAD(a);
    d.setAuthTag(frame.subarray(frame.length - TAG));
    const p = d.update(frame.subarray(0, frame.length - TAG));
    try { d.final(); } catch { throw new Tampered(what, last ? 'authentication failed (changed, swapped or truncated)' : 'authentication failed'); }
    out.push(p);
  }
  return out;
}
function openBlob(id, sealed, codec, plain, checkId) {
  const what = 'blob ' + id.slice(0, 12);
  if (codec !== 0 && codec !== 1 && codec !== 2) throw new Tampered(what, 'unknown codec ' + codec + ' (written by a newer boxback?)');
  let parts = openParts(AAD[codec] + ':' + id, sealed, what);
  if (codec !== 0) {
    try {
      const z = parts.length === 1 ? parts[0] : Buffer.concat(parts);
      const o = { maxOutputLength: Math.max(1, plain), chunkSize: Math.max(64, Math.min(plain, OUT_MAX) + 1) };
      parts = [codec === 2 ? brotliDecompressSync(z, o) : inflateRawSync(z, o)];
    } catch {
      throw new Tampered(what, 'does not decompress to its length');
    }
  }
  if (checkId) {
    const h = createHmac('sha256', idKey);
    for (const p of parts) h.update(p);
    if (h.digest('hex') !== id) throw new Tampered(what, 'content does not match its id');
  }
  return parts;
}
function writeFile(abs, parts, size, t) {
  const fd = fs.openSync(abs, 'w', 0o600);
  try {
    let left = size;
    while (left > 0) {
      const n = parts.length === 1 ? fs.writeSync(fd, parts[0]) : fs.writevSync(fd, parts.length > 512 ? parts.slice(0, 512) : parts);
      left -= n;
      let k = n;
      let i = 0;
      while (i < parts.length && k >= parts[i].length) k -= parts[i++].length;
      parts = i < parts.length && k > 0 ? [parts[i].subarray(k), ...parts.slice(i + 1)] : parts.slice(i);
    }
    // owner first (a chown clears setuid and setgid bits), then the mode, then the mtime
    if (root) fs.fchownSync(fd, t[4], t[5]);
    fs.fchmodSync(fd, t[3]);
    const s = (Math.floor(t[6]) + 0.5) / 1000;
    fs.futimesSync(fd, s, s);
  } finally {
    fs.closeSync(fd);
  }
}
parentPort.on('message', (m) => {
  const raw = Buffer.from(m.buf, m.offset, m.length);
  const sizes = [];
  try {
    for (const [id, offset, length, codec, plain, checkId, targets] of m.blobs) {
      const where = 'blob ' + id.slice(0, 12) + ' in pack ' + m.pack.slice(0, 12);
      const parts = openBlob(id, raw.subarray(offset, offset + length), codec, plain, checkId);
      let size = 0;
      for (const p of parts) size += p.length;
      if (size !== plain) throw new Tampered(where, 'wrong length');
      const h = createHash('sha256');
      for (const p of parts) h.update(p);
      const sha = h.digest('hex');
      for (const t of targets) {
        if (size !== t[1]) throw new Tampered(t[7], 'size ' + size + ', the manifest says ' + t[1]);
        if (t[2] && sha !== t[2]) throw new Tampered(t[7], 'SHA-256 does not match the manifest');
        writeFile(t[0], parts, size, t);
        sizes.push(size);
      }
    }
    parentPort.postMessage({ n: m.n, sizes, buf: m.buf }, [m.buf]);
  } catch (err) {
    const e = err instanceof Tampered
      ? { tampered: [err.what, err.detail] }
      : { message: String((err && err.message) || err), code: err && err.code, errno: err && err.errno, syscall: err && err.syscall, path: err && err.path };
    parentPort.postMessage({ n: m.n, sizes, buf: m.buf, error: e }, [m.buf]);
  }
});
`;

/** A file a blob is written to: its absolute path, size, SHA-256 ('' when none), mode, uid, gid, mtime (ms), manifest path. */
export type FetchTarget = [string, number, string, number, number, number, number, string];

/** A blob of a span: id, offset in the span, sealed length, codec, plaintext length, check its id, its files. */
export type FetchBlob = [string, number, number, number, number, boolean, FetchTarget[]];

interface Reply {
  n: number;
  sizes: number[];
  buf: ArrayBuffer;
  error?: { tampered?: [string, string]; message?: string; code?: string; errno?: number; syscall?: string; path?: string };
}

interface Waiter {
  resolve(r: Reply): void;
  reject(err: Error): void;
}

/** One fetch thread (one per tree fetch); requests answered in order. */
export class FetchThread {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, Waiter>();
  private next = 0;
  private failed?: Error;

  constructor(keys: StoreKeys) {
    this.worker = new Worker(CODE, {
      eval: true,
      workerData: { enc: keys.enc, id: keys.id, root: process.getuid?.() === 0 },
      // it holds one span and its blobs at a time: a small heap
      resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 32 },
    });
    this.worker.on('message', (m: Reply) => {
      const w = this.waiting.get(m.n);
      this.waiting.delete(m.n);
      w?.resolve(m);
    });
    const fail = (err: Error) => {
      this.failed ??= err;
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new BoxbackError('BOXBACK_ERR_INTERNAL', `the tree fetch thread exited (code ${code})`)));
  }

  /**
   * Open, check and write the blobs of one span read into `raw` (`pack`'s bytes; `raw`'s
   * ArrayBuffer is transferred to the thread and back when it is a buffer of its own, else
   * copied): `raw`'s whole buffer handed back when it was transferred (for the next GET), and
   * each written file's size.
   */
  async write(pack: string, raw: Buffer, blobs: FetchBlob[]): Promise<{ buf: Buffer | null; sizes: number[] }> {
    if (this.failed) throw this.failed;
    const n = this.next++;
    // a buffer of its own (a GET buffer of readByPack's pool) goes over as it is; a view of
    // shared or pooled memory (a body longer than announced, joined) as a copy
    const own = raw.buffer instanceof ArrayBuffer && raw.byteOffset === 0 && raw.buffer.byteLength > 64 << 10;
    const ab = own ? (raw.buffer as ArrayBuffer) : (raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length) as ArrayBuffer);
    const r = await new Promise<Reply>((resolve, reject) => {
      this.waiting.set(n, { resolve, reject });
      this.worker.postMessage(
        { n, pack, buf: ab, offset: 0, length: raw.length, blobs: blobs.map((b) => [...b.slice(0, 5), b[5] ? 1 : 0, b[6]]) },
        [ab],
      );
    });
    if (r.error) {
      const e = r.error;
      if (e.tampered) throw tampered(e.tampered[0], e.tampered[1]);
      throw Object.assign(new Error(e.message), { code: e.code, errno: e.errno, syscall: e.syscall, path: e.path });
    }
    return { buf: own ? Buffer.from(r.buf) : null, sizes: r.sizes };
  }

  async close(): Promise<void> {
    this.failed ??= new BoxbackError('BOXBACK_ERR_INTERNAL', 'the tree fetch thread was closed');
    await this.worker.terminate();
  }
}
