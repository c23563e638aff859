// The object-store format's building blocks without a server: sealed framing (AES-256-GCM, one
// tag per 64 KiB frame), wrapped data keys, content-defined chunks, packs. Every kind of
// tampering a server could do (flip a byte, swap objects or frames, truncate) is refused.
import { createCipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { brotliCompressSync, deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { BoxbackError } from '../../packages/common/src/errors.js';
import { cutChunks, gearTable } from '../../packages/common/src/store/s3/chunker.js';
import {
  DEFAULT_SCRYPT_N,
  RANDOM_KEY_SCRYPT_N,
  blobId,
  deriveKeys,
  newDataKey,
  scryptCostFor,
  unwrapDataKey,
  wrapDataKey,
} from '../../packages/common/src/store/s3/keys.js';
import { BROTLI, DEFLATED, PackBuilder, openBlob, openBlobParts, readPackHeader } from '../../packages/common/src/store/s3/pack.js';
import { maybeCompress } from '../../packages/common/src/store/s3/compress.js';
import {
  OpenStream,
  open,
  openParts,
  seal,
  sealInto,
  sealedSize,
  subkey,
  useOpenInPlace,
  useSealInPlace,
} from '../../packages/common/src/store/s3/sealed.js';

const F = 64 * 1024;
const keys = deriveKeys(newDataKey());

function refused(fn: () => unknown): BoxbackError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BoxbackError);
    expect((err as BoxbackError).code).toBe('BOXBACK_ERR_STORE_TAMPERED');
    return err as BoxbackError;
  }
  throw new Error('was not refused');
}

async function openStreamed(sealed: Buffer, aad: string, piece: number): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < sealed.length; i += piece) pieces.push(sealed.subarray(i, i + piece));
  const out: Buffer[] = [];
  for await (const b of Readable.from(pieces).pipe(new OpenStream(keys.enc, aad))) out.push(b as Buffer);
  return Buffer.concat(out);
}

describe('sealed framing', () => {
  it('round-trips every size around the frame boundaries, in memory and streamed', async () => {
    for (const n of [0, 1, F - 1, F, F + 1, 2 * F, 3 * F + 7]) {
      const plain = randomBytes(n);
      const sealed = seal(keys.enc, 'x', plain);
      expect(sealed.length).toBe(sealedSize(n));
      expect(open(keys.enc, 'x', sealed).equals(plain)).toBe(true);
      const parts = openParts(keys.enc, 'x', sealed); // one per frame, in order, not joined
      expect(parts.map((p) => p.length)).toEqual(Array.from({ length: Math.floor(n / F) + 1 }, (_, i) => Math.min(F, n - i * F)));
      expect(Buffer.concat(parts).equals(plain)).toBe(true);
      for (const piece of [1000, F + 16, 7 * F]) expect((await openStreamed(sealed, 'x', piece)).equals(plain), `${n}/${piece}`).toBe(true);
    }
  });

  it("derives each object's subkey as HKDF-SHA256 does, and seals in place the bytes seal() gives", () => {
    for (const salt of [randomBytes(32), Buffer.alloc(32)]) {
      const want = Buffer.from(hkdfSync('sha256', keys.enc, salt, 'boxback sealed v1', 32));
      expect(subkey(keys.enc, salt).equals(want)).toBe(true);
    }
    const plain = randomBytes(3 * F + 5);
    const out = Buffer.alloc(sealedSize(plain.length) + 10, 0xaa);
    expect(sealInto(keys.enc, 'x', plain, out, 7)).toBe(sealedSize(plain.length));
    expect(open(keys.enc, 'x', out.subarray(7, 7 + sealedSize(plain.length))).equals(plain)).toBe(true);
    expect([out[6], out[7 + sealedSize(plain.length)]]).toEqual([0xaa, 0xaa]); // nothing written outside
    expect(() => sealInto(keys.enc, 'x', plain, out, 12)).toThrow(RangeError);
  });

  it("the agent's addon seals frames into the caller's buffer: the bytes Node's Cipher gives, nothing written outside", async () => {
    const { nativeAddon: a } = await import('../../packages/agent/src/native.js'); // registers both: undone below
    expect(a?.gcmSealAvailable?.()).toBe(true);
    const key = randomBytes(32);
    const aad = Buffer.from('blobb:abc');
    for (const log2 of [16, 10])
      for (const n of [0, 1, (1 << log2) - 1, 1 << log2, (1 << log2) + 1, 3 * (1 << log2) + 5]) {
        const plain = randomBytes(n);
        const frames = Math.floor(n / (1 << log2)) + 1;
        const want = Buffer.concat(
          Array.from({ length: frames }, (_, i) => {
            const nonce = Buffer.alloc(12);
            nonce.writeUInt32BE(i, 7);
            nonce[11] = i === frames - 1 ? 1 : 0;
            const c = createCipheriv('aes-256-gcm', key, nonce);
            c.setAAD(aad);
            return Buffer.concat([c.update(plain.subarray(i << log2, (i + 1) << log2)), c.final(), c.getAuthTag()]);
          }),
        );
        const out = Buffer.alloc(want.length + 10, 0xaa);
        expect(a!.gcmSealFrames!(key, aad, plain, out, 3, log2), `${n}/${log2}`).toBe(want.length);
        expect(out.subarray(3, 3 + want.length).equals(want), `${n}/${log2}`).toBe(true);
        expect([out[2], out[3 + want.length]]).toEqual([0xaa, 0xaa]);
        expect(() => a!.gcmSealFrames!(key, aad, plain, out, 11, log2)).toThrow(RangeError); // no room
      }
    // registered (as the daemon does): sealInto's objects open with Node's Decipher, a flipped byte is refused
    useSealInPlace(a!.gcmSealFrames!.bind(a));
    try {
      for (const n of [0, 5, F, 3 * F + 7]) {
        const plain = randomBytes(n);
        const sealed = seal(keys.enc, 'blob:n', plain);
        expect(sealed.length).toBe(sealedSize(n));
        expect(open(keys.enc, 'blob:n', sealed).equals(plain)).toBe(true);
        sealed[sealed.length - 20] ^= 1;
        refused(() => open(keys.enc, 'blob:n', sealed));
      }
    } finally {
      useSealInPlace(undefined); // the other tests here run as they did: Node's Cipher and Decipher
      useOpenInPlace(undefined);
    }
  });

  it('never reuses a nonce: the same plaintext seals differently each time', () => {
    const plain = Buffer.from('same');
    expect(seal(keys.enc, 'x', plain).equals(seal(keys.enc, 'x', plain))).toBe(false);
  });

  it('refuses a flipped byte anywhere, a wrong context, swapped frames and truncation', async () => {
    const plain = randomBytes(3 * F + 100);
    const sealed = seal(keys.enc, 'blob:a', plain);
    for (const at of [0, 5, 40, F, 2 * F + 50, sealed.length - 1]) {
      const bad = Buffer.from(sealed);
      bad[at] ^= 0x01;
      refused(() => open(keys.enc, 'blob:a', bad));
      await expect(openStreamed(bad, 'blob:a', 4096)).rejects.toMatchObject({ code: 'BOXBACK_ERR_STORE_TAMPERED' });
    }
    refused(() => open(keys.enc, 'blob:b', sealed));
    const step = F + 16;
    const h = 37;
    const swapped = Buffer.concat([
      sealed.subarray(0, h),
      sealed.subarray(h + step, h + 2 * step),
      sealed.subarray(h, h + step),
      sealed.subarray(h + 2 * step),
    ]);
    refused(() => open(keys.enc, 'blob:a', swapped));
    // cut exactly at a frame boundary: every remaining frame is intact, the final one is missing
    const atBoundary = sealed.subarray(0, h + 2 * step);
    expect(refused(() => open(keys.enc, 'blob:a', atBoundary)).message).toMatch(/truncated/);
    await expect(openStreamed(atBoundary, 'blob:a', 4096)).rejects.toThrow(/truncated|authentication/);
    refused(() => open(keys.enc, 'blob:a', sealed.subarray(0, sealed.length - 3)));
    const other = deriveKeys(newDataKey());
    refused(() => open(other.enc, 'blob:a', sealed));
  });
});

describe('store keys', () => {
  it('wraps the data key per secret; a wrong secret opens nothing', () => {
    const dk = newDataKey();
    const kf = wrapDataKey(dk, Buffer.from('correct horse'), 'ops', 2 ** 12);
    expect(JSON.stringify(kf)).not.toContain(dk.toString('base64'));
    expect(unwrapDataKey(kf, Buffer.from('correct horse'))?.equals(dk)).toBe(true);
    expect(unwrapDataKey(kf, Buffer.from('wrong horse'))).toBeNull();
    expect(unwrapDataKey({ ...kf, id: 'ffffffffffffffff' }, Buffer.from('correct horse'))).toBeNull();
  });

  it("stretches a passphrase with scrypt's full cost, a key file of 256 random bits with a small one", () => {
    expect(scryptCostFor(Buffer.from('correct horse battery staple'))).toBe(DEFAULT_SCRYPT_N);
    expect(scryptCostFor(Buffer.from('ab'.repeat(16)))).toBe(DEFAULT_SCRYPT_N); // 128 bits: not what store init writes
    const keyFile = Buffer.from(randomBytes(32).toString('hex'));
    expect(scryptCostFor(keyFile)).toBe(RANDOM_KEY_SCRYPT_N);
    const dk = newDataKey();
    const kf = wrapDataKey(dk, keyFile, 'ops');
    expect(kf.kdf.N).toBe(RANDOM_KEY_SCRYPT_N);
    expect(unwrapDataKey(kf, keyFile)?.equals(dk)).toBe(true);
    expect(unwrapDataKey(kf, Buffer.from(randomBytes(32).toString('hex')))).toBeNull();
  });
});

describe('content-defined chunks', () => {
  const gear = gearTable(keys.chunk);
  async function cut(data: Buffer, read = 64 * 1024): Promise<Buffer[]> {
    const pieces: Buffer[] = [];
    for (let i = 0; i < data.length; i += read) pieces.push(data.subarray(i, i + read));
    const out: Buffer[] = [];
    for await (const c of cutChunks(Readable.from(pieces), gear)) out.push(Buffer.from(c));
    return out;
  }
  /** The same cut with the source reading into one reused buffer and the chunker carrying over in `acc`. */
  async function cutReusing(data: Buffer, read: number): Promise<Buffer[]> {
    const buf = Buffer.alloc(read);
    const src = async function* () {
      for (let i = 0; i < data.length; i += read) {
        const n = data.copy(buf, 0, i, i + read);
        yield buf.subarray(0, n);
        buf.fill(0xee); // what the next read would do to a piece kept past its turn
      }
    };
    const out: Buffer[] = [];
    for await (const c of cutChunks(src(), gear, undefined, Buffer.alloc(4 * 1024 * 1024))) out.push(Buffer.from(c));
    return out;
  }
  const newBytes = (before: Buffer[], after: Buffer[]) => {
    const seen = new Set(before.map((c) => blobId(keys, c)));
    return after.filter((c) => !seen.has(blobId(keys, c))).reduce((n, c) => n + c.length, 0);
  };

  it('cuts the same wherever reads end, within min and max', async () => {
    const data = randomBytes(24 * 1024 * 1024);
    const a = await cut(data, 64 * 1024);
    const b = await cut(data, 1_000_003);
    expect(a.map((c) => c.length)).toEqual(b.map((c) => c.length));
    expect(Buffer.concat(a).equals(data)).toBe(true);
    for (const read of [64 * 1024, 1_000_003]) {
      const r = await cutReusing(data, read); // no allocation per chunk: same cuts, same bytes
      expect(r.map((c) => c.length)).toEqual(a.map((c) => c.length));
      expect(Buffer.concat(r).equals(data)).toBe(true);
    }
    for (const c of a.slice(0, -1)) expect(c.length).toBeGreaterThanOrEqual(256 * 1024);
    for (const c of a) expect(c.length).toBeLessThanOrEqual(4 * 1024 * 1024);
    expect(a.length).toBeGreaterThan(8);
  });

  it('a file that grew by 2% (or had bytes inserted) re-uses all but a chunk or two', async () => {
    const data = randomBytes(40 * 1024 * 1024);
    const before = await cut(data);
    const grown = Buffer.concat([data, randomBytes(data.length / 50)]);
    expect(newBytes(before, await cut(grown))).toBeLessThan(data.length * 0.02 + 4.5 * 1024 * 1024);
    const inserted = Buffer.concat([data.subarray(0, 10_000_000), randomBytes(100), data.subarray(10_000_000)]);
    expect(newBytes(before, await cut(inserted))).toBeLessThan(2 * 4 * 1024 * 1024);
  });
});

describe('packs', () => {
  it('hold blobs by id; a swapped blob or a changed pack is refused', () => {
    const b = new PackBuilder(keys);
    const blobs = [Buffer.from('report one'), Buffer.from('report two'), randomBytes(100_000)];
    for (const p of blobs) b.add(blobId(keys, p), p);
    const pack = b.finish();
    const entries = readPackHeader(keys, pack.id, pack.bytes);
    expect(entries.map((e) => e[0])).toEqual(blobs.map((p) => blobId(keys, p)));
    for (const [id, off, len] of entries)
      expect(blobs.some((p) => p.equals(openBlob(keys, id, pack.bytes.subarray(off, off + len))))).toBe(true);
    const [[id0, off0, len0], [, off1, len1]] = entries;
    refused(() => openBlob(keys, id0, pack.bytes.subarray(off1, off1 + len1)));
    const bad = Buffer.from(pack.bytes);
    bad[off0 + len0 - 1] ^= 1;
    refused(() => readPackHeader(keys, pack.id, bad));
  });

  it('are built in one buffer: a blob without room (its entry in the header included) does not fit', () => {
    const b = new PackBuilder(keys, Buffer.alloc(300_000));
    const blobs: Buffer[] = [];
    while (b.fits(50_000)) {
      const p = randomBytes(50_000);
      blobs.push(p);
      b.add(blobId(keys, p), p);
    }
    expect(blobs.length).toBe(5);
    const pack = b.finish();
    expect(pack.bytes.length).toBeLessThanOrEqual(300_000);
    const entries = readPackHeader(keys, pack.id, pack.bytes);
    entries.forEach(([id, off, len], i) => expect(openBlob(keys, id, pack.bytes.subarray(off, off + len)).equals(blobs[i])).toBe(true));
    // in frames, not joined: the same bytes, the same refusals
    const [id0, off0, len0] = entries[0];
    const parts = openBlobParts(keys, id0, pack.bytes.subarray(off0, off0 + len0));
    expect(parts.length).toBe(1);
    expect(Buffer.concat(parts).equals(blobs[0])).toBe(true);
    const [, off1, len1] = entries[1];
    refused(() => openBlobParts(keys, id0, pack.bytes.subarray(off1, off1 + len1))); // another blob's bytes under this id
    refused(() => openBlobParts(keys, id0, pack.bytes.subarray(off1, off1 + len1), false, undefined, false)); // GCM: its id is in the aad
  });

  it('a blob of several frames opens frame by frame, and its id is checked over all of them', () => {
    const plain = randomBytes(3 * F + 123);
    const id = blobId(keys, plain);
    const b = new PackBuilder(keys);
    b.add(id, plain);
    const pack = b.finish();
    const [[, off, len]] = readPackHeader(keys, pack.id, pack.bytes);
    const sealed = pack.bytes.subarray(off, off + len);
    const parts = openBlobParts(keys, id, sealed);
    expect(parts.map((p) => p.length)).toEqual([F, F, F, 123]);
    expect(Buffer.concat(parts).equals(plain)).toBe(true);
    const flipped = Buffer.from(sealed);
    flipped[flipped.length - 200] ^= 1; // in the last frame
    refused(() => openBlobParts(keys, id, flipped, false, undefined, false));
    refused(() => openBlobParts(keys, id, sealed.subarray(0, sealed.length - 123 - 16))); // the last frame cut off
  });

  it('a deflated blob (stores written before brotli) opens only as deflated, inflates to its length, and is checked against its id', () => {
    const plain = Buffer.from('INFO step finished\n'.repeat(2000));
    const id = blobId(keys, plain);
    const b = new PackBuilder(keys);
    b.add(id, plain, { bytes: deflateRawSync(plain), codec: DEFLATED });
    const pack = b.finish();
    const [[, off, len, size, flags]] = readPackHeader(keys, pack.id, pack.bytes);
    expect([size, flags]).toEqual([plain.length, DEFLATED]);
    const sealed = pack.bytes.subarray(off, off + len);
    expect(len).toBeLessThan(plain.length / 10);
    expect(openBlob(keys, id, sealed, true, size).equals(plain)).toBe(true);
    refused(() => openBlob(keys, id, sealed)); // the flag is in the associated data
    refused(() => openBlob(keys, id, sealed, true, size - 1)); // inflates past its entry's length
    const other = Buffer.from('WARN'.repeat(10));
    const b2 = new PackBuilder(keys);
    b2.add(id, plain, { bytes: deflateRawSync(other), codec: DEFLATED }); // a deflated body that is not the blob its id names
    const p2 = b2.finish();
    const [[, o2, l2]] = readPackHeader(keys, p2.id, p2.bytes);
    refused(() => openBlob(keys, id, p2.bytes.subarray(o2, o2 + l2), true, plain.length));
  });

  it('new blobs are stored brotli-compressed (flag 2): they open only as brotli, to their length, checked against their id', async () => {
    const plain = Buffer.from(Array.from({ length: 3000 }, (_, i) => `INFO step ${i % 17} finished in ${i % 1000} ms\n`).join(''));
    const packed = (await maybeCompress(plain))!;
    expect(packed.codec).toBe(BROTLI);
    expect(packed.bytes.length).toBeLessThan(deflateRawSync(plain, { level: 1 }).length);
    expect(await maybeCompress(randomBytes(100_000))).toBeUndefined(); // incompressible: stored as it is
    const id = blobId(keys, plain);
    const b = new PackBuilder(keys);
    b.add(id, plain, packed);
    const pack = b.finish();
    const [[, off, len, size, flags]] = readPackHeader(keys, pack.id, pack.bytes);
    expect([size, flags]).toEqual([plain.length, BROTLI]);
    const sealed = pack.bytes.subarray(off, off + len);
    expect(openBlob(keys, id, sealed, BROTLI, size).equals(plain)).toBe(true);
    expect(Buffer.concat(openBlobParts(keys, id, sealed, BROTLI, size, false)).equals(plain)).toBe(true);
    refused(() => openBlob(keys, id, sealed, DEFLATED, size)); // the codec is in the associated data
    refused(() => openBlob(keys, id, sealed)); // nor as plain
    refused(() => openBlob(keys, id, sealed, BROTLI, size - 1)); // decompresses past its entry's length
    expect(refused(() => openBlob(keys, id, sealed, 3, size)).message).toMatch(/unknown codec 3/); // a newer codec: said, not misread
    const b2 = new PackBuilder(keys);
    b2.add(id, plain, { bytes: brotliCompressSync(Buffer.from('WARN'.repeat(10))), codec: BROTLI }); // not the blob its id names
    const p2 = b2.finish();
    const [[, o2, l2]] = readPackHeader(keys, p2.id, p2.bytes);
    refused(() => openBlob(keys, id, p2.bytes.subarray(o2, o2 + l2), BROTLI, plain.length));
  });
});
