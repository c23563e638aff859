/**
 * The BackupStore conformance suite: what every backend must do, driven through the
 * interface only (packages/common/src/store/backup-store.ts), on real files and real tools.
 * A backend's test file calls
 *
 *   describeBackupStoreConformance('local', async () => ({ store, flipByte, cleanup }))
 *
 * `flipByte(ref, rel)` damages one stored byte of a file behind the store's back (the only
 * backend-specific part: where the bytes are).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BoxbackError,
  buildManifest,
  createLogger,
  manifestToJson,
  refId,
  type BackupRef,
  type BackupStaging,
  type BackupStore,
  type ManifestFile,
} from '@boxback/common';

export interface StoreFixture {
  store: BackupStore;
  flipByte(ref: BackupRef, rel: string): Promise<void>;
  cleanup(): Promise<void>;
}

const log = createLogger('store-test', 'silent');
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** A source tree declared as data: path -> content (a string ending in '@' is a symlink target). */
type TreeSpec = Record<string, string>;

/** Make `dir` hold exactly `spec`, touching only what differs (unchanged files keep their mtimes). */
function writeTree(dir: string, spec: TreeSpec): void {
  mkdirSync(dir, { recursive: true });
  const now = readTree(dir);
  for (const rel of Object.keys(now)) if (!(rel in spec)) rmSync(path.join(dir, rel));
  for (const [rel, content] of Object.entries(spec)) {
    if (now[rel] === content) continue;
    const p = path.join(dir, rel);
    mkdirSync(path.dirname(p), { recursive: true });
    rmSync(p, { force: true });
    if (content.endsWith('@')) symlinkSync(content.slice(0, -1), p);
    else writeFileSync(p, content);
  }
}

/** Every file and symlink under `dir`, as path -> content (symlinks as target + '@'). */
function readTree(dir: string): TreeSpec {
  const out: TreeSpec = {};
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(p, r);
      else if (e.isSymbolicLink()) out[r] = `${readlinkSync(p)}@`;
      else out[r] = readFileSync(p, 'utf8');
    }
  };
  walk(dir, '');
  return out;
}

/** Collects a tree's manifest entries. */
class Entries {
  list: ManifestFile[] = [];
  add(e: ManifestFile): void {
    this.list.push(e);
  }
}

function manifestText(ref: BackupRef, files: ManifestFile[]): string {
  return manifestToJson(
    buildManifest({
      id: refId(ref),
      host: ref.host,
      timestamp: ref.timestamp,
      createdAt: new Date().toISOString(),
      completedAt: new Date().toISOString(),
      origin: 'boxback',
      plan: { name: 'test', product: 'gocd' },
      product: { name: 'gocd', version: '24.1.0' },
      source: { hostname: ref.host, addresses: [] },
      consistency: 'live',
      quiesce: { mode: 'none', windowMs: 0 },
      phases: [],
      datasets: [],
      trees: [],
      files,
      warnings: [],
    }),
  );
}

export function describeBackupStoreConformance(name: string, makeStore: () => Promise<StoreFixture>): void {
  describe(`BackupStore conformance: ${name}`, () => {
    let fx: StoreFixture;
    let store: BackupStore;
    let work: string;
    const host = 'box1';
    const source = () => path.join(work, 'source');
    const treeV1: TreeSpec = {
      'a.txt': 'alpha\n',
      'big.bin': 'x'.repeat(200_000),
      'sub/b.txt': 'bravo\n',
      'sub/deep/c.txt': 'charlie\n',
      'link-to-a': 'a.txt@',
    };

    beforeAll(async () => {
      fx = await makeStore();
      store = fx.store;
      work = mkdtempSync(path.join(os.tmpdir(), 'boxback-store-conf-'));
    });
    afterAll(async () => {
      await store.close?.();
      await fx.cleanup();
      rmSync(work, { recursive: true, force: true });
    });

    /** One backup: an "archive", version.txt, the source tree as artifacts/. */
    async function backup(o: { at: string; archive: string; previous?: BackupRef; changed?: string[] }) {
      const s = await store.begin({ host, startedAt: new Date(o.at), jobId: `job-${o.at}`, log });
      const files: ManifestFile[] = [];
      for (const [rel, content] of [
        ['db.zip', o.archive],
        ['version.txt', '24.1.0'],
      ] as const) {
        writeFileSync(s.pathFor(rel), content);
        await s.addFile(rel, sha(content));
        files.push({
          path: rel,
          type: 'file',
          size: Buffer.byteLength(content),
          sha256: sha(content),
          mode: 0o644,
          uid: 0,
          gid: 0,
          mtimeMs: 0,
        });
      }
      writeFileSync(path.join(s.dir, 'scratch-not-stored.tmp'), 'scratch');
      const out = new Entries();
      const res = await s.syncTree({ dir: 'artifacts', source: source(), previous: o.previous, changed: o.changed, out });
      const committed = await s.commit(manifestText(s.ref, [...files, ...out.list]));
      return { ref: committed.ref, res, entries: out.list };
    }

    let first: BackupRef;
    let second: BackupRef;

    it('stores a backup: begin, files, a tree, commit; then lists and reads it', async () => {
      writeTree(source(), treeV1);
      const b = await backup({ at: '2026-03-01T10:00:00Z', archive: 'ZIP-ONE' });
      first = b.ref;
      expect(first).toEqual({ host, timestamp: '20260301-100000' });
      expect(b.res.files).toBe(5);
      expect(
        b.entries
          .filter((e) => e.type !== 'dir')
          .map((e) => e.path)
          .sort(),
      ).toEqual(['artifacts/a.txt', 'artifacts/big.bin', 'artifacts/link-to-a', 'artifacts/sub/b.txt', 'artifacts/sub/deep/c.txt'].sort());
      expect(await store.listHosts()).toEqual([host]);
      expect(await store.listBackups(host)).toEqual([first]);
      expect(await store.has(first)).toBe(true);
      const m = JSON.parse(await store.readManifestText(first)) as { files: ManifestFile[] };
      expect(m.files.find((f) => f.path === 'artifacts/big.bin')?.sha256).toBe(sha(treeV1['big.bin']));
      expect(await text(await store.openFile(first, 'db.zip'))).toBe('ZIP-ONE');
      expect(await text(await store.openFile(first, 'artifacts/big.bin', { start: 10, end: 19 }))).toBe('x'.repeat(10));
      const ra = await store.openRandomAccess(first, 'version.txt');
      const buf = Buffer.alloc(4);
      expect(ra.size).toBe(6);
      expect((await ra.read(buf, 0, 4, 2)).bytesRead).toBe(4);
      expect(buf.toString()).toBe('.1.0');
      await ra.close();
      const scratch = path.join(work, 'scratch');
      mkdirSync(scratch, { recursive: true });
      const lf = await store.localFile(first, 'db.zip', { scratchDir: scratch, sha256: sha('ZIP-ONE') });
      expect(readFileSync(lf.path, 'utf8')).toBe('ZIP-ONE');
      await lf.release();
      const dest = path.join(work, 'restored1');
      await store.fetchTree(first, 'artifacts', dest);
      expect(readTree(dest)).toEqual(treeV1);
      // Only what was added or synced is stored.
      await expect(store.openFile(first, 'scratch-not-stored.tmp')).rejects.toMatchObject({ code: 'BOXBACK_ERR_NOT_FOUND' });
      expect((await store.verify(first)).ok).toBe(true);
    });

    it('an aborted and an interrupted backup are never listed; removeInterrupted clears what is left', async () => {
      const aborted = await store.begin({ host, startedAt: new Date('2026-03-01T11:00:00Z'), jobId: 'aborted', log });
      writeFileSync(aborted.pathFor('db.zip'), 'half');
      await aborted.abort();
      await aborted.abort(); // idempotent
      const interrupted: BackupStaging = await store.begin({ host, startedAt: new Date('2026-03-01T11:30:00Z'), jobId: 'killed', log });
      writeFileSync(interrupted.pathFor('db.zip'), 'half');
      // (never committed nor aborted: as after a SIGKILL)
      expect(await store.listBackups(host)).toEqual([first]);
      expect(await store.has(interrupted.ref)).toBe(false);
      await expect(store.readManifestText(interrupted.ref)).rejects.toBeInstanceOf(BoxbackError);
      expect(await store.removeInterrupted(host, log)).toBeGreaterThanOrEqual(1);
      expect(await store.listBackups(host)).toEqual([first]);
    });

    it('an incremental backup: unchanged content is shared, and a delete never frees what another backup holds', async () => {
      const treeV2 = { ...treeV1, 'a.txt': 'alpha changed\n', 'new.txt': 'new\n' };
      writeTree(source(), treeV2);
      const b = await backup({ at: '2026-03-01T12:00:00Z', archive: 'ZIP-TWO', previous: first });
      second = b.ref;
      expect(b.res.linkedFiles).toBeGreaterThanOrEqual(3); // big.bin, sub/b.txt, sub/deep/c.txt
      expect(await store.listBackups(host)).toEqual([first, second]);
      // big.bin is held by both: deleting the first frees less than its own size.
      expect(await store.uniqueBytes(first)).toBeLessThan(200_000);
      const del = await store.delete(first);
      expect(del.deleted).toBe(true);
      expect(del.freedBytes).toBeLessThan(200_000);
      expect(await store.listBackups(host)).toEqual([second]);
      expect(await store.has(first)).toBe(false);
      await expect(store.readManifestText(first)).rejects.toMatchObject({ code: 'BOXBACK_ERR_NOT_FOUND' });
      expect(await store.delete(first)).toEqual({ deleted: false, freedBytes: 0 });
      // The second backup is whole.
      expect((await store.verify(second)).ok).toBe(true);
      const dest = path.join(work, 'restored2');
      await store.fetchTree(second, 'artifacts', dest);
      expect(readTree(dest)).toEqual(treeV2);
    });

    it('a journaled incremental (only the changed paths named) stores the same tree', async () => {
      const treeV3 = { ...treeV1, 'a.txt': 'alpha changed\n', 'new.txt': 'new\n', 'sub/b.txt': 'bravo 3\n', 'sub/e.txt': 'echo\n' };
      writeTree(source(), treeV3);
      store.prepareNext?.(host, second, 'artifacts', 'artifacts');
      const b = await backup({ at: '2026-03-01T13:00:00Z', archive: 'ZIP-3', previous: second, changed: ['sub/b.txt', 'sub/e.txt'] });
      const dest = path.join(work, 'restored3');
      await store.fetchTree(b.ref, 'artifacts', dest);
      expect(readTree(dest)).toEqual(treeV3);
      expect((await store.verify(b.ref)).ok).toBe(true);
      const m = JSON.parse(await store.readManifestText(b.ref)) as { files: ManifestFile[] };
      expect(m.files.find((f) => f.path === 'artifacts/sub/e.txt')?.sha256).toBe(sha('echo\n'));
    });

    it('verify finds a flipped byte; quick verify looks only at presence and sizes', async () => {
      expect((await store.verify(second)).ok).toBe(true);
      await fx.flipByte(second, 'artifacts/big.bin');
      const v = await store.verify(second);
      expect(v.ok).toBe(false);
      expect(v.problems.join('\n')).toMatch(/artifacts\/big\.bin: SHA-256 mismatch/);
      expect((await store.verify(second, { quick: true })).ok).toBe(true);
      // A restore's verify leaves the tree files it fetches next to fetchTree, which checks
      // every file it writes (local: its copy hashed; s3: each download) and refuses the tree.
      const restoreVerify = await store.verify(second, { contentOnly: true, checkedOnRead: (rel) => rel.startsWith('artifacts/') });
      expect(restoreVerify.ok).toBe(true);
      await expect(store.fetchTree(second, 'artifacts', path.join(work, 'flipped'))).rejects.toMatchObject({
        code: expect.stringMatching(/^BOXBACK_ERR_(VERIFY_FAILED|STORE_TAMPERED)$/),
      });
    });

    it('refuses bad names, exact timestamps taken, and says NOT_FOUND for what is not there', async () => {
      await expect(store.openFile(second, '../../etc/passwd')).rejects.toMatchObject({ code: 'BOXBACK_ERR_INVALID_ARGUMENT' });
      await expect(store.openFile({ host: '../x', timestamp: second.timestamp }, 'db.zip')).rejects.toMatchObject({
        code: 'BOXBACK_ERR_INVALID_ARGUMENT',
      });
      await expect(store.openFile(second, 'nope.zip')).rejects.toMatchObject({ code: 'BOXBACK_ERR_NOT_FOUND' });
      await expect(store.readManifestText({ host, timestamp: '20200101-000000' })).rejects.toMatchObject({ code: 'BOXBACK_ERR_NOT_FOUND' });
      await expect(store.begin({ host, startedAt: new Date(), timestamp: second.timestamp, jobId: 'import', log })).rejects.toMatchObject({
        code: 'BOXBACK_ERR_ALREADY_EXISTS',
      });
      const imp = await store.begin({ host, startedAt: new Date(), timestamp: '20250101-000000', jobId: 'import', log });
      expect(imp.ref.timestamp).toBe('20250101-000000');
      await imp.abort();
      expect((await store.listBackups(host)).map((r) => r.timestamp)).not.toContain('20250101-000000');
    });
  });
}
