// A backup's files over 64 KiB (its archives) are hashed for VERIFY in one request each on the
// pool when the agent's addon is there (file-digests.ts digestFile), else on the JS thread: the
// same problems named either way, for a flipped byte, a file one byte short, a missing file and a
// directory where a file was; an intact file passes, and its bytes count in the progress.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { useFileDigests, type DigestFiles } from '../../packages/common/src/file-digests.js';
import { verifyBackupDir, type Manifest, type ManifestFile } from '../../packages/common/src/manifest.js';
import { nativeAddon } from '../../packages/agent/src/native.js';

const addonDigests = nativeAddon?.digestFiles?.bind(nativeAddon) as DigestFiles | undefined;
const work = mkdtempSync(path.join(os.tmpdir(), 'boxback-verify-digests-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

for (const m of [
  { mode: 'js', name: 'on the JS thread', digests: undefined },
  { mode: 'pool', name: "in one request each on the addon's pool", digests: addonDigests },
])
  describe(`VERIFY of a backup's large files, ${m.name}`, () => {
    beforeEach(() => useFileDigests(m.digests));
    afterEach(() => useFileDigests(addonDigests));

    it('names each damaged file and passes the intact one', async () => {
      expect(addonDigests).toBeTypeOf('function');
      const dir = path.join(work, m.mode);
      mkdirSync(dir);
      const files: ManifestFile[] = [];
      for (const name of ['db.zip', 'flipped.zip', 'short.zip', 'gone.zip', 'dir.zip']) {
        const data = randomBytes(300_000 + files.length);
        writeFileSync(path.join(dir, name), data);
        files.push({
          path: name,
          type: 'file',
          size: data.length,
          sha256: createHash('sha256').update(data).digest('hex'),
        } as ManifestFile);
      }
      const flipped = readFileSync(path.join(dir, 'flipped.zip'));
      flipped[150_000] ^= 1;
      writeFileSync(path.join(dir, 'flipped.zip'), flipped);
      truncateSync(path.join(dir, 'short.zip'), files[2].size - 1);
      rmSync(path.join(dir, 'gone.zip'));
      rmSync(path.join(dir, 'dir.zip'));
      mkdirSync(path.join(dir, 'dir.zip'));
      const r = await verifyBackupDir(dir, { files } as Manifest);
      expect(r.problems).toEqual([
        'dir.zip: expected a regular file',
        'flipped.zip: SHA-256 mismatch',
        'gone.zip: missing',
        `short.zip: size ${files[2].size - 1}, manifest says ${files[2].size}`,
      ]);
      expect(r.ok).toBe(false);
      // The intact one and the flipped one were read whole.
      expect(r.bytesChecked).toBe(files[0].size + files[1].size);
    });
  });
