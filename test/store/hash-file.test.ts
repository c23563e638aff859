// hashFile (manifest.ts): the SHA-256 of a file read through its pooled buffers, 256 KiB ones
// for a file hinted at up to 4 MiB and 1 MiB ones otherwise, is the file's own, at every size
// around the buffers' edges, with or without a hint, and when the hint is stale (the file grew
// past it since it was listed) or wrong; several at once share no buffer.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hashFile } from '../../packages/common/src/manifest.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'boxback-hash-file-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const KiB = 1024;
const sizes = [
  0,
  1,
  64 * KiB + 1,
  256 * KiB - 1,
  256 * KiB,
  256 * KiB + 1,
  1024 * KiB,
  1024 * KiB + 7,
  4096 * KiB,
  4096 * KiB + 1,
  5000 * KiB,
];

describe('hashFile', () => {
  const files = sizes.map((n, i) => {
    const bytes = randomBytes(n);
    const file = path.join(work, `f${i}`);
    writeFileSync(file, bytes);
    return { file, n, sha: createHash('sha256').update(bytes).digest('hex') };
  });

  it('gives each file its SHA-256, hinted, unhinted, or with a stale hint, several at once', async () => {
    for (const hint of [(n: number) => n, () => undefined, () => 1, (n: number) => Math.floor(n / 3)]) {
      const got = await Promise.all(files.map((f) => hashFile(f.file, undefined, hint(f.n))));
      expect(got).toEqual(files.map((f) => f.sha));
    }
  });

  it('reports every byte it read', async () => {
    for (const f of files) {
      let n = 0;
      await hashFile(f.file, (b) => (n += b), f.n);
      expect(n).toBe(f.n);
    }
  });
});
