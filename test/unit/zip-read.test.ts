// Reading zip entries (common/zip-read.ts) the same way whether the archive is read whole into
// memory (up to 1 MiB, small deflated entries inflated in one call) or from the file: the same
// bytes back, and a damaged entry (cut short, longer than it says, a wrong CRC-32) refused
// with the same VERIFY_FAILED message.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { checkZipArchive, readEntryChecked, zipEntries } from '../../packages/common/src/zip-read.js';
import { craftZip, type CraftEntry } from '../helpers/craft-zip.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'boxback-zip-read-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const text = (n: number) => Buffer.from('a config line, repeated; '.repeat(Math.ceil(n / 25)).slice(0, n));
const SMALL = text(3000);
const MID = text(200_000);
let n = 0;

/** The archive with `entries`, read whole (in memory) or, padded past 1 MiB by a stored random entry, from the file. */
function archive(kind: 'memory' | 'file', entries: CraftEntry[]): string {
  const file = path.join(work, `${kind}-${n++}.zip`);
  const pad: CraftEntry[] = kind === 'file' ? [{ name: 'pad.bin', data: randomBytes((1 << 20) + 1000) }] : [];
  craftZip(file, [...pad, ...entries]);
  return file;
}

async function contents(file: string): Promise<Record<string, Buffer>> {
  const out: Record<string, Buffer> = {};
  for await (const e of zipEntries(file)) {
    const parts: Buffer[] = [];
    await readEntryChecked(e, 'x.zip', (c) => {
      parts.push(Buffer.from(c));
    });
    out[e.name] = Buffer.concat(parts);
  }
  return out;
}

describe.each(['memory', 'file'] as const)('a zip read from %s', (kind) => {
  it('gives back every entry as written: stored, deflated small and large, empty', async () => {
    const file = archive(kind, [
      { name: 'stored.txt', data: SMALL },
      { name: 'small.txt', data: SMALL, deflated: true },
      { name: 'mid.txt', data: MID, deflated: true },
      { name: 'empty.txt', data: '', deflated: true },
    ]);
    const got = await contents(file);
    expect(got['stored.txt'].equals(SMALL)).toBe(true);
    expect(got['small.txt'].equals(SMALL)).toBe(true);
    expect(got['mid.txt'].equals(MID)).toBe(true);
    expect(got['empty.txt'].length).toBe(0);
  });

  it('gives back entries read after a damaged one right: the read buffers and inflaters kept for the next entries start clean', async () => {
    const other = (i: number) => Buffer.from(`entry ${i}: `.repeat(30_000)); // ~300 KB each, inflated through inflateRange
    const midCut = zlib.deflateRawSync(MID);
    const file = archive(kind, [
      { name: 'a.txt', data: other(1), deflated: true },
      { name: 'cut.txt', data: MID, deflated: true, raw: midCut.subarray(0, midCut.length >> 1) },
      { name: 'b.txt', data: other(2), deflated: true },
      { name: 'junk.txt', data: MID, deflated: true, raw: Buffer.alloc(300, 0xff) },
      { name: 'c.txt', data: other(3), deflated: true },
      { name: 'd.txt', data: other(4), deflated: true },
    ]);
    const got: Record<string, Buffer | string> = {};
    for await (const e of zipEntries(file)) {
      const parts: Buffer[] = [];
      got[e.name] = await readEntryChecked(e, 'x.zip', (c) => {
        parts.push(Buffer.from(c));
      }).then(
        () => Buffer.concat(parts),
        (err: Error) => err.message,
      );
    }
    for (const [name, i] of [
      ['a.txt', 1],
      ['b.txt', 2],
      ['c.txt', 3],
      ['d.txt', 4],
    ] as const)
      expect((got[name] as Buffer).equals(other(i)), name).toBe(true);
    expect(got['cut.txt']).toMatch(/cut\.txt/);
    expect(typeof got['junk.txt']).toBe('string');
  });

  const cut = zlib.deflateRawSync(SMALL);
  const damaged: Array<[string, CraftEntry, RegExp]> = [
    [
      'cut short',
      { name: 'cut.txt', data: SMALL, deflated: true, raw: cut.subarray(0, cut.length >> 1) },
      /cut\.txt: \d+ bytes, the archive says 3000/,
    ],
    ['longer than it says', { name: 'long.txt', data: SMALL, deflated: true, size: 1000 }, /long\.txt: \d+ bytes, the archive says 1000/],
    ['a wrong CRC-32', { name: 'crc.txt', data: SMALL, deflated: true, crc: 12345 }, /crc\.txt: CRC-32 mismatch/],
    ['not deflate data', { name: 'junk.txt', data: SMALL, deflated: true, raw: Buffer.alloc(300, 0xff) }, /junk\.txt|invalid|unreadable/],
  ];
  it.each(damaged)('refuses an entry %s', async (_what, entry, why) => {
    const file = archive(kind, [{ name: 'ok.txt', data: SMALL, deflated: true }, entry]);
    const err = await checkZipArchive(file, 'x.zip').catch((e: unknown) => e as Error & { code?: string });
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: string }).code).toBe('BOXBACK_ERR_VERIFY_FAILED');
    expect((err as Error).message).toMatch(why);
  });
});
