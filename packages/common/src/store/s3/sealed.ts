/**
 * Sealed objects: every byte boxback writes to an object store is AES-256-GCM encrypted in
 * chunked framing (see docs/design/store-s3-format.md):
 *
 *   header  = "BBS1" | frameLog2 (u8) | salt (32 random bytes)               37 bytes
 *   frame i = GCM(subkey, nonce_i, aad, plaintext[i*F .. (i+1)*F]) | tag     F + 16 bytes
 *   subkey  = HKDF-SHA256(encKey, salt, "boxback sealed v1")
 *   nonce_i = 7 zero bytes | i (u32 BE) | last (u8: 1 on the final frame, else 0)
 *
 * A plaintext of n bytes has floor(n / F) + 1 frames (the last one holds the remainder, possibly
 * nothing), so the framing is unambiguous. A fresh random salt per object gives a fresh subkey,
 * so a (subkey, nonce) pair is never used twice; the frame counter and the last flag in the
 * nonce make reordered, dropped or truncated frames fail authentication. `aad` binds a sealed
 * object to what it is (a blob's id, "index", "manifest"), so a swapped object fails too.
 * Decryption never releases a frame's plaintext before its tag is checked.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { BoxbackError } from '../../errors.js';

const MAGIC = Buffer.from('BBS1');
export const SEALED_HEADER_BYTES = 4 + 1 + 32;
export const TAG_BYTES = 16;
export const DEFAULT_FRAME_LOG2 = 16; // 64 KiB frames

const INFO_1 = Buffer.from('boxback sealed v1\x01');

/**
 * HKDF-SHA256(encKey, salt, "boxback sealed v1", 32 bytes), written out (RFC 5869: one output
 * block is extract, then expand with counter 1): the same bytes as crypto.hkdfSync, which costs
 * about 10x more per call (a key object and a thread-pool job), once per sealed blob.
 */
export function subkey(encKey: Buffer, salt: Buffer): Buffer {
  const prk = createHmac('sha256', salt).update(encKey).digest();
  return createHmac('sha256', prk).update(INFO_1).digest();
}

function nonce(i: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.writeUInt32BE(i, 7);
  n[11] = last ? 1 : 0;
  return n;
}

export function sealedSize(plainBytes: number, frameLog2 = DEFAULT_FRAME_LOG2): number {
  return SEALED_HEADER_BYTES + plainBytes + TAG_BYTES * (Math.floor(plainBytes / 2 ** frameLog2) + 1);
}

export function tampered(what: string, detail: string): BoxbackError {
  return new BoxbackError('BOXBACK_ERR_STORE_TAMPERED', `${what}: ${detail}; refusing it`, { object: what });
}

/** Seal one frame into out[at..]; the bytes written (plaintext + tag). */
function sealFrameInto(key: Buffer, i: number, last: boolean, aad: Buffer, plain: Buffer, out: Buffer, at: number): number {
  const c = createCipheriv('aes-256-gcm', key, nonce(i, last));
  c.setAAD(aad);
  let n = c.update(plain).copy(out, at);
  n += c.final().copy(out, at + n);
  return n + c.getAuthTag().copy(out, at + n);
}

function openFrame(key: Buffer, i: number, last: boolean, aad: Buffer, frame: Buffer, what: string): Buffer {
  if (frame.length < TAG_BYTES) throw tampered(what, 'truncated frame');
  const d = createDecipheriv('aes-256-gcm', key, nonce(i, last));
  d.setAAD(aad);
  d.setAuthTag(frame.subarray(frame.length - TAG_BYTES));
  const out = d.update(frame.subarray(0, frame.length - TAG_BYTES));
  try {
    d.final();
  } catch {
    throw tampered(what, last ? 'authentication failed (changed, swapped or truncated)' : 'authentication failed');
  }
  return out;
}

function readHeader(buf: Buffer, what: string): { frameLog2: number; salt: Buffer } {
  if (buf.length < SEALED_HEADER_BYTES || !buf.subarray(0, 4).equals(MAGIC)) throw tampered(what, 'not a sealed boxback object');
  const frameLog2 = buf[4];
  if (frameLog2 < 10 || frameLog2 > 24) throw tampered(what, 'bad frame size');
  return { frameLog2, salt: buf.subarray(5, SEALED_HEADER_BYTES) };
}

/** Seal a buffer held in memory (blobs, manifests, index objects). */
export function seal(encKey: Buffer, aad: string, plain: Buffer, frameLog2 = DEFAULT_FRAME_LOG2): Buffer {
  const out = Buffer.allocUnsafe(sealedSize(plain.length, frameLog2));
  sealInto(encKey, aad, plain, out, 0, frameLog2);
  return out;
}

/**
 * `plain`'s frames sealed into out[at..] (each frame's ciphertext, then its tag; the nonces and
 * aad as sealFrameInto's): the bytes written, or -1. The agent's native addon
 * (packages/agent/native/gcm.c) registers it: Node's Cipher makes a new buffer per frame (and
 * per final and tag), which sealInto then copied into the pack, and a Cipher (its key schedule)
 * per frame; in a first backup to S3 that was every stored byte (store-s3-performance.md).
 */
export type SealFramesInto = (key: Buffer, aad: Buffer, plain: Buffer, out: Buffer, at: number, frameLog2: number) => number;

let sealFrames: SealFramesInto | undefined;

/** Register (or drop, with undefined) what seals frames into a caller's buffer: the agent's native addon. */
export function useSealInPlace(fn: SealFramesInto | undefined): void {
  sealFrames = fn;
}

/**
 * Seal `plain` straight into out[at .. at + sealedSize(plain.length)) (a pack being built: no
 * intermediate copies); the bytes written.
 */
export function sealInto(encKey: Buffer, aad: string, plain: Buffer, out: Buffer, at: number, frameLog2 = DEFAULT_FRAME_LOG2): number {
  if (out.length - at < sealedSize(plain.length, frameLog2)) throw new RangeError('sealInto: no room');
  const salt = randomBytes(32);
  const key = subkey(encKey, salt);
  const a = Buffer.from(aad);
  const F = 2 ** frameLog2;
  const frames = Math.floor(plain.length / F) + 1;
  let pos = at + MAGIC.copy(out, at);
  out[pos++] = frameLog2;
  pos += salt.copy(out, pos);
  if (sealFrames) {
    const n = sealFrames(key, a, plain, out, pos, frameLog2);
    if (n !== plain.length + frames * TAG_BYTES) throw new BoxbackError('BOXBACK_ERR_INTERNAL', `sealing ${aad} failed`);
    return pos + n - at;
  }
  for (let i = 0; i < frames; i++) pos += sealFrameInto(key, i, i === frames - 1, a, plain.subarray(i * F, (i + 1) * F), out, pos);
  return pos - at;
}

/** Open a sealed buffer; throws BOXBACK_ERR_STORE_TAMPERED on any change. */
export function open(encKey: Buffer, aad: string, sealed: Buffer, what = aad): Buffer {
  const parts = openParts(encKey, aad, sealed, what);
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

/**
 * Open a sealed buffer into its frames' plaintexts, in order (one per 64 KiB frame; each its
 * own buffer): a caller that hashes and writes them need not join them (a copy of every byte
 * into a fresh buffer). Every frame is authenticated before this returns.
 */
export function openParts(encKey: Buffer, aad: string, sealed: Buffer, what = aad): Buffer[] {
  const { frameLog2, salt } = readHeader(sealed, what);
  const key = subkey(encKey, salt);
  const a = Buffer.from(aad);
  const step = 2 ** frameLog2 + TAG_BYTES;
  const body = sealed.subarray(SEALED_HEADER_BYTES);
  const frames = Math.floor(body.length / step) + 1;
  if (body.length % step === 0 && body.length > 0) {
    // a whole number of full frames means the final (short) frame is missing: truncated
    throw tampered(what, 'truncated (no final frame)');
  }
  const out: Buffer[] = [];
  for (let i = 0; i < frames; i++) out.push(openFrame(key, i, i === frames - 1, a, body.subarray(i * step, (i + 1) * step), what));
  return out;
}

/**
 * Frames opened in place (AES-256-GCM over the buffer's own bytes, each frame's plaintext over
 * its ciphertext): -1 when every frame of sealed-body range [start, end) authenticated, else the
 * index of the first that did not. The agent's native addon (packages/agent/native/gcm.c)
 * registers it; Node's Decipher has no such call, and returns a new buffer per frame.
 */
export type OpenFramesInPlace = (key: Buffer, aad: Buffer, buf: Buffer, start: number, end: number, frameLog2: number) => number;

let inPlace: OpenFramesInPlace | undefined;

/** Register (or drop, with undefined) what opens frames in place: the agent's native addon. */
export function useOpenInPlace(fn: OpenFramesInPlace | undefined): void {
  inPlace = fn;
}

/** Whether openPartsInPlace decrypts in place (an opener is registered), not into new buffers. */
export const opensInPlace = () => inPlace !== undefined;

/**
 * openParts over the sealed bytes' own memory when an opener is registered: the frames'
 * plaintexts are views of `sealed` (its bytes overwritten: the caller's to lend), each
 * authenticated before this returns, none handed out when one fails. A restore's GET buffer
 * then holds the plaintext it already had room for: no new buffer per 64 KiB frame (in a
 * restore from S3, every restored byte was one: store-s3-performance.md). Without one,
 * openParts (new buffers; `sealed` untouched).
 */
export function openPartsInPlace(encKey: Buffer, aad: string, sealed: Buffer, what = aad): Buffer[] {
  if (!inPlace) return openParts(encKey, aad, sealed, what);
  const { frameLog2, salt } = readHeader(sealed, what);
  const key = subkey(encKey, salt);
  const F = 2 ** frameLog2;
  const step = F + TAG_BYTES;
  const len = sealed.length - SEALED_HEADER_BYTES;
  const frames = Math.floor(len / step) + 1;
  if (len % step === 0 && len > 0) throw tampered(what, 'truncated (no final frame)');
  if (len - (frames - 1) * step < TAG_BYTES) throw tampered(what, 'truncated frame');
  const failed = inPlace(key, Buffer.from(aad), sealed, SEALED_HEADER_BYTES, sealed.length, frameLog2);
  if (failed >= 0)
    throw tampered(what, failed === frames - 1 ? 'authentication failed (changed, swapped or truncated)' : 'authentication failed');
  const out: Buffer[] = [];
  for (let i = 0, at = SEALED_HEADER_BYTES; i < frames; i++, at += step)
    out.push(sealed.subarray(at, Math.min(at + F, sealed.length - TAG_BYTES)));
  return out;
}

/**
 * Streaming open: a Transform from sealed bytes to plaintext. A frame is released only after
 * its tag checks; the end of the stream must come right after a frame flagged last.
 */
export class OpenStream extends Transform {
  private buf: Buffer = Buffer.alloc(0);
  private key: Buffer | null = null;
  private step = 0;
  private i = 0;
  private readonly aad: Buffer;
  constructor(
    private readonly encKey: Buffer,
    aad: string,
    private readonly what = aad,
  ) {
    super();
    this.aad = Buffer.from(aad);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
      if (!this.key) {
        if (this.buf.length < SEALED_HEADER_BYTES) return cb();
        const { frameLog2, salt } = readHeader(this.buf, this.what);
        this.key = subkey(this.encKey, Buffer.from(salt));
        this.step = 2 ** frameLog2 + TAG_BYTES;
        this.buf = this.buf.subarray(SEALED_HEADER_BYTES);
      }
      // keep at least one frame's worth back: it may be the last one
      while (this.buf.length > this.step) {
        this.push(openFrame(this.key, this.i++, false, this.aad, this.buf.subarray(0, this.step), this.what));
        this.buf = this.buf.subarray(this.step);
      }
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      if (!this.key) throw tampered(this.what, 'truncated header');
      if (this.buf.length === this.step) throw tampered(this.what, 'truncated (no final frame)');
      this.push(openFrame(this.key, this.i++, true, this.aad, this.buf, this.what));
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }
}
