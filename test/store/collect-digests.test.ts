// A full pass's description of a tree (collectFiles) gives the same manifest lines whether its
// files are hashed on the JS thread or in the agent's addon's batches on the pool
// (file-digests.ts: 256 files a request, two at once, lines written in walk order as their
// batch comes back): 3000 files of every size class in 300 directories (more than a window of
// entries and many batches), symlinks and an empty file; every line's SHA-256 is the file's own.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PartWriter, collectFiles, useFileDigests, type DigestFiles } from '@boxback/common';
import { nativeAddon } from '../../packages/agent/src/native.js';

const addonDigests = nativeAddon?.digestFiles?.bind(nativeAddon) as DigestFiles | undefined;
const root = mkdtempSync(path.join(os.tmpdir(), 'boxback-collect-digests-'));
afterAll(() => {
  useFileDigests(addonDigests);
  delete process.env.BOXBACK_DESCRIBE_ON_POOL;
  rmSync(root, { recursive: true, force: true });
});

const SIZES = [0, 1, 700, 4096, 65_536, 65_537, 200_000, (1 << 20) + 3];

async function describeWith(digests: DigestFiles | undefined, tag: string): Promise<string> {
  useFileDigests(digests);
  process.env.BOXBACK_DESCRIBE_ON_POOL = digests ? 'on' : ''; // off by default (manifest-writer.ts)
  const out = await PartWriter.create(path.join(root, 'parts', `${tag}.jsonl`));
  await collectFiles({ dir: path.join(root, 'box'), subdir: 'artifacts', known: new Map(), treeDirs: ['artifacts'], out });
  await out.close();
  return readFileSync(out.file, 'utf8');
}

describe('collectFiles with the addon hashing on the pool', () => {
  it('writes the same lines as on the JS thread, each SHA-256 the file’s own', async () => {
    expect(addonDigests).toBeTypeOf('function');
    const tree = path.join(root, 'box', 'artifacts');
    const sums = new Map<string, string>();
    for (let d = 0; d < 300; d++) {
      const dir = path.join(tree, `p${d % 7}`, `run-${d}`);
      mkdirSync(dir, { recursive: true });
      for (let i = 0; i < 10; i++) {
        const size = SIZES[(d + i) % SIZES.length] >> (i % 3 === 0 && d % 5 ? 4 : 0);
        const data = Buffer.alloc(size, `${d}:${i}:`);
        writeFileSync(path.join(dir, `f${i}.log`), data);
        sums.set(`artifacts/p${d % 7}/run-${d}/f${i}.log`, createHash('sha256').update(data).digest('hex'));
      }
      if (d % 50 === 0) symlinkSync('f1.log', path.join(dir, 'latest'));
    }
    const js = await describeWith(undefined, 'js');
    let requests = 0;
    const pool = await describeWith((...a) => (requests++, addonDigests!(...a)), 'pool');
    expect(pool).toBe(js);
    expect(requests).toBeGreaterThanOrEqual(3000 / 256);
    const files = pool
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { path: string; type: string; sha256?: string })
      .filter((e) => e.type === 'file');
    expect(files).toHaveLength(3000);
    for (const f of files) expect(f.sha256, f.path).toBe(sums.get(f.path));
  });
});
