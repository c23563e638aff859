// Reading a manifest a line at a time (scanManifest), as a restore does (agent/restore/outline.ts,
// the local store's verify and fetchTree): the same entries and head as a whole parse, for
// the layout the agent writes and for others; unsafe or cut manifests refused; and a restore's
// read of a 150k-entry manifest fits in a heap where a whole parse does not.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { MANIFEST_FORMAT, manifestChunks, scanManifest, textStream, type Manifest, type ManifestFile } from '@boxback/common';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'boxback-manifest-stream-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function manifestOf(files: ManifestFile[]): Manifest {
  const bytes = files.reduce((s, f) => s + (f.type === 'dir' ? 0 : f.size), 0);
  return {
    format: MANIFEST_FORMAT,
    id: 'box@20260401-000000',
    host: 'box',
    timestamp: '20260401-000000',
    createdAt: '2026-04-01T00:00:00Z',
    completedAt: '2026-04-01T00:01:00Z',
    origin: 'boxback',
    agentVersion: 'test',
    plan: { name: 'gocd', product: 'gocd' },
    product: { name: 'gocd', version: '24.1.0' },
    source: { hostname: 'box', addresses: ['10.0.0.1'] },
    consistency: 'quiesced',
    quiesce: { mode: 'stop', windowMs: 1000 },
    phases: [],
    datasets: [{ name: 'database', archive: 'db.zip', kind: 'zip', sources: ['/db'], target: '/db', entries: 1, bytes: 10 }],
    trees: [{ name: 'artifacts', dir: 'artifacts', source: '/a', files: files.length - 2, bytes, linkedFiles: 0, syncMode: 'full' }],
    files,
    totals: { files: files.filter((f) => f.type !== 'dir').length, bytes },
    warnings: ['one "quoted" warning'],
  };
}

function entries(n: number): ManifestFile[] {
  const sha = 'ab'.repeat(32);
  const out: ManifestFile[] = [
    { path: 'db.zip', type: 'file', size: 10, sha256: sha, mode: 0o644, uid: 0, gid: 0, mtimeMs: 1 },
    { path: 'artifacts', type: 'dir', size: 0, mode: 0o755, uid: 0, gid: 0, mtimeMs: 1 },
  ];
  for (let i = 0; i < n; i++) {
    const dir = `artifacts/pipelines/pipe-${i % 50}/${Math.floor(i / 1000)}/build/job-${i % 20}`;
    out.push({
      path: `${dir}/out-${i}.log`,
      type: 'file',
      size: 1000 + i,
      sha256: sha,
      mode: 0o644,
      uid: 1000,
      gid: 1000,
      mtimeMs: 1_700_000_000_000 + i,
      ino: 5_000_000 + i,
    });
  }
  out.push({ path: 'artifacts/a "quoted" \\ name', type: 'symlink', size: 0, target: 'x', mode: 0o777, uid: 0, gid: 0, mtimeMs: 1 });
  return out;
}

async function scanText(text: string): Promise<{ head: Manifest; files: ManifestFile[] }> {
  const files: ManifestFile[] = [];
  const head = await scanManifest(
    () => textStream(text),
    'the test manifest',
    (json) => void files.push(JSON.parse(json) as ManifestFile),
  );
  return { head, files };
}

describe('scanManifest', () => {
  const m = manifestOf(entries(300));

  it('gives every entry and the head of the layout the agent writes, and of others', async () => {
    for (const text of [[...manifestChunks(m)].join(''), JSON.stringify(m), JSON.stringify(m, null, 2)]) {
      const { head, files } = await scanText(text);
      expect(files).toEqual(m.files);
      expect(head).toEqual({ ...m, files: [] });
    }
  });

  it('refuses an unsafe path and a cut manifest, as a whole parse does', async () => {
    const bad = manifestOf([...entries(3), { path: '../etc/passwd', type: 'file', size: 1, mode: 0o644, uid: 0, gid: 0, mtimeMs: 1 }]);
    await expect(scanText([...manifestChunks(bad)].join(''))).rejects.toMatchObject({
      code: 'BOXBACK_ERR_MANIFEST_INVALID',
      message: expect.stringContaining('unsafe path "../etc/passwd"'),
    });
    const text = [...manifestChunks(m)].join('');
    await expect(scanText(text.slice(0, Math.floor(text.length / 2)))).rejects.toMatchObject({ code: 'BOXBACK_ERR_MANIFEST_INVALID' });
    await expect(scanText('{"format": "something else", "files": []}')).rejects.toMatchObject({ code: 'BOXBACK_ERR_MANIFEST_INVALID' });
  });
});

describe("a restore's manifest read", () => {
  it('reads a 150k-entry manifest within a 40 MB heap (a whole parse needs several times that)', () => {
    const m = manifestOf(entries(150_000));
    const dir = path.join(tmp, 'store', 'box', 'backup_20260401-000000');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'manifest.json'), [...manifestChunks(m)].join(''));
    writeFileSync(path.join(dir, 'db.zip'), '0123456789');
    const child = (script: string) =>
      spawnSync(process.execPath, ['--max-old-space-size=40', '--input-type=module', '-e', script], {
        cwd: repo,
        encoding: 'utf8',
        timeout: 120_000,
      });
    const common = JSON.stringify(path.join(repo, 'packages/common/dist/index.js'));
    const outline = JSON.stringify(path.join(repo, 'packages/agent/dist/restore/outline.js'));
    const store = JSON.stringify(path.join(tmp, 'store'));
    const streamed = child(
      `import { LocalBackupStore } from ${common}; import { readManifestOutline } from ${outline};
       const m = await readManifestOutline(new LocalBackupStore(${store}), { host: 'box', timestamp: '20260401-000000' });
       console.log(JSON.stringify({ files: m.files.map((f) => f.path), totals: m.totals, trees: m.trees.length }));`,
    );
    expect(streamed.stderr).toBe('');
    expect(JSON.parse(streamed.stdout)).toEqual({ files: ['db.zip', 'artifacts'], totals: m.totals, trees: 1 });
    // The same heap is too small for the whole manifest as objects: the bound above means something.
    const whole = child(
      `import { LocalBackupStore, parseManifestText } from ${common};
       const s = new LocalBackupStore(${store});
       const m = parseManifestText(await s.readManifestText({ host: 'box', timestamp: '20260401-000000' }), 'm');
       console.log(m.files.length);`,
    );
    expect(whole.status).not.toBe(0);
    expect(whole.stderr).toMatch(/heap out of memory|Allocation failed/);
    execFileSync('rm', ['-rf', path.join(tmp, 'store')]);
  }, 180_000);

  it("keeps paths read from a manifest's lines without its text (ownString: what fetchTree's list of a tree keeps)", () => {
    const file = path.join(tmp, 'own-string.json');
    writeFileSync(file, [...manifestChunks(manifestOf(entries(100_000)))].join(''));
    const common = JSON.stringify(path.join(repo, 'packages/common/dist/index.js'));
    // The live heap after a map of the 100k paths is built: paths as cut out of the lines, or as strings of their own.
    const heapWith = (own: boolean) => {
      const r = spawnSync(
        process.execPath,
        [
          '--expose-gc',
          '--input-type=module',
          '-e',
          `import { scanManifestFile, lineHead, ownString } from ${common};
           const paths = new Map();
           await scanManifestFile(${JSON.stringify(file)}, (json) => { const p = lineHead(json).path; paths.set(${own} ? ownString(p) : p, 1); });
           gc(); gc();
           console.log(JSON.stringify({ n: paths.size, heap: process.memoryUsage().heapUsed }));`,
        ],
        { cwd: repo, encoding: 'utf8', timeout: 120_000 },
      );
      expect(r.stderr).toBe('');
      return JSON.parse(r.stdout) as { n: number; heap: number };
    };
    const cut = heapWith(false);
    const own = heapWith(true);
    expect(own.n).toBe(100_003);
    expect(cut.n).toBe(100_003);
    // The manifest's text is ~22 MB: kept by the cut paths, not by their own strings.
    expect(cut.heap - own.heap).toBeGreaterThan(10e6);
  }, 180_000);
});
