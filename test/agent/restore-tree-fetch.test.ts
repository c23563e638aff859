// A restore's tree fetch from a local store (cp of a tree holding exactly its listed entries,
// else rsync --files-from the manifest) and the VERIFY beside it (contentOnly: the hashes, no
// walk for unlisted files), over real files, the real stand-in server, real cp and rsync:
//   - an untouched stored tree comes back whole and as stored; stored files that share an inode
//     (the store's dedup) come back as separate files, none linked into the store
//   - a file planted in a stored tree that the manifest does not list is never restored
//   - a flipped byte in a stored tree file (same size) is refused before STOP (VERIFY_FAILED,
//     naming it), the box unchanged: by the dry run's VERIFY, and by a real restore's check of
//     the staged copy (VERIFY only sizes the tree files), whether cp or rsync made the copy
//   - symlinks, modes and mtimes (to the nanosecond) come back as the backup has them
import {
  chmodSync,
  mkdirSync,
  cpSync,
  linkSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runRestore } from '../../packages/agent/src/restore/restore.js';
import { makeBackup, snapshot, type MadeBackup } from '../helpers/make-backup.js';
import { job, restoreBox, restoreReq, type RestoreBox } from '../helpers/restore-box.js';

let dir: string;
let store: string;
let b: RestoreBox;
let backup: MadeBackup;

/** The stored tree of the artifacts (its directory in the backup) and the box's. */
const artifacts = () => {
  const t = b.config.plan.trees.find((x) => x.source === b.box.artifacts)!;
  return { stored: (bk: MadeBackup) => path.join(bk.dir, t.dir ?? t.name), live: t.source };
};

function copyBackup(from: MadeBackup, ts: string): MadeBackup {
  const rel = `${path.dirname(from.rel)}/backup_${ts}`;
  const to = path.join(store, rel);
  cpSync(from.dir, to, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  return { dir: to, rel, id: from.id, manifest: from.manifest };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-restore-fetch-'));
  store = path.join(dir, 'store');
  b = await restoreBox({ root: path.join(dir, 'box'), name: 'gocd1', store, stateDir: path.join(dir, 'state'), seed: 7 });
  // Entries whose metadata a plain copy would lose: a symlink, odd modes, an old mtime.
  const live = b.box.artifacts;
  writeFileSync(path.join(live, 'private.log'), 'private\n');
  writeFileSync(path.join(live, 'same-a.log'), 'same content\n');
  writeFileSync(path.join(live, 'same-b.log'), 'same content\n');
  chmodSync(path.join(live, 'private.log'), 0o640);
  utimesSync(path.join(live, 'private.log'), new Date('2020-02-02T02:02:02.123Z'), new Date('2020-02-02T02:02:02.123Z'));
  symlinkSync('private.log', path.join(live, 'latest.log'));
  chmodSync(path.join(live, 'pipelines'), 0o750);
  backup = makeBackup({ plan: b.config.plan, store, host: 'gocd1', hostname: b.box.hostname, addresses: [b.box.address] });
});

afterAll(async () => {
  await b?.box.stop().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('restore: trees from a local store', () => {
  it('restores only the listed entries, with symlinks, modes and mtimes as stored', async () => {
    const bk = copyBackup(backup, '20261121-150000');
    const stored = artifacts().stored(bk);
    writeFileSync(path.join(stored, 'planted.sh'), '#!/bin/sh\nevil\n');
    writeFileSync(path.join(stored, 'pipelines', 'planted.txt'), 'evil');
    // Root-level names rsync would read as patterns: each must still be left out exactly.
    writeFileSync(path.join(stored, 'we*ird'), 'evil');
    mkdirSync(path.join(stored, 'st[a]r'));
    writeFileSync(path.join(stored, 'st[a]r', 'inside'), 'evil');
    writeFileSync(path.join(b.box.artifacts, 'drift.log'), 'after the backup');
    await b.box.start();
    const r = await runRestore(job(b.config, 'r-fetch').ctx, restoreReq(bk.rel));
    expect(r.errorMessage).toBe('');
    expect(r.status).toBe('Completed');
    await b.box.stop();

    const live = b.box.artifacts;
    const restored = snapshot(live);
    expect(restored['planted.sh']).toBeUndefined();
    expect(restored['pipelines/planted.txt']).toBeUndefined();
    expect(restored['drift.log']).toBeUndefined();
    expect(Object.keys(restored).filter((k) => k.startsWith('we') || k.startsWith('st['))).toEqual([]);
    // Everything else is the stored tree's (types, modes, owners, bytes, link targets).
    const planted = new Set(['planted.sh', 'pipelines/planted.txt', 'we*ird', 'st[a]r']);
    expect(restored).toEqual(snapshot(stored, (rel) => planted.has(rel)));
    expect(readlinkSync(path.join(live, 'latest.log'))).toBe('private.log');
    expect(lstatSync(path.join(live, 'private.log')).mode & 0o777).toBe(0o640);
    expect(lstatSync(path.join(live, 'pipelines')).mode & 0o777).toBe(0o750);
    // mtimes to the nanosecond, files and directories (the next backup's --link-dest compares them).
    for (const rel of [
      '.',
      'private.log',
      'pipelines',
      Object.keys(restored).find((k) => k.startsWith('pipelines/') && restored[k].startsWith('file'))!,
    ]) {
      const a = lstatSync(path.join(live, rel), { bigint: true });
      const s = lstatSync(path.join(stored, rel), { bigint: true });
      expect(`${rel} ${a.mtimeNs}`).toBe(`${rel} ${s.mtimeNs}`);
    }
  });

  it('copies an untouched stored tree whole: as stored, to the nanosecond, no hard links kept', async () => {
    const bk = copyBackup(backup, '20261121-140000');
    const stored = artifacts().stored(bk);
    // The store's dedup: two listed files with the same content share one inode.
    rmSync(path.join(stored, 'same-b.log'));
    linkSync(path.join(stored, 'same-a.log'), path.join(stored, 'same-b.log'));
    await b.box.start();
    const r = await runRestore(job(b.config, 'r-whole').ctx, restoreReq(bk.rel));
    expect(r.errorMessage).toBe('');
    expect(r.status).toBe('Completed');
    await b.box.stop();

    const live = b.box.artifacts;
    expect(snapshot(live)).toEqual(snapshot(stored));
    expect(readlinkSync(path.join(live, 'latest.log'))).toBe('private.log');
    for (const rel of ['.', 'private.log', 'pipelines', 'same-a.log']) {
      const a = lstatSync(path.join(live, rel), { bigint: true });
      const s = lstatSync(path.join(stored, rel), { bigint: true });
      expect(`${rel} ${a.mtimeNs}`).toBe(`${rel} ${s.mtimeNs}`);
    }
    const a = lstatSync(path.join(live, 'same-a.log'));
    const bb = lstatSync(path.join(live, 'same-b.log'));
    expect([a.nlink, bb.nlink, a.ino === bb.ino]).toEqual([1, 1, false]);
    expect(a.ino).not.toBe(lstatSync(path.join(stored, 'same-a.log')).ino);
  });

  // VERIFY only sizes the tree files a restore fetches; the local store hashes each staged
  // copy (read from disk once). Same size, other bytes: found there, still before STOP.
  for (const [name, ts, plant] of [
    ['copied whole (cp)', '20261121-160000', false],
    ['copied by rsync --files-from (a planted file beside it)', '20261121-170000', true],
  ] as const) {
    it(`refuses a flipped byte in a stored tree file before STOP and changes nothing: ${name}`, async () => {
      const bk = copyBackup(backup, ts);
      const stored = artifacts().stored(bk);
      if (plant) writeFileSync(path.join(stored, 'planted.sh'), 'evil');
      const victim = bk.manifest.files.find((f) => f.type === 'file' && f.size > 0 && f.path.startsWith(`${path.basename(stored)}/`))!;
      const file = path.join(bk.dir, victim.path);
      const buf = readFileSync(file);
      buf[Math.floor(buf.length / 2)] ^= 0x01;
      writeFileSync(file, buf);
      expect(lstatSync(file).size).toBe(victim.size);
      // A dry run copies nothing: its VERIFY reads every stored file.
      const dry = await runRestore(job(b.config, `r-flipped-dry-${ts}`).ctx, restoreReq(bk.rel, { dryRun: true }));
      expect([dry.status, dry.errorCode, dry.failedStep]).toEqual(['Failed', 'BOXBACK_ERR_VERIFY_FAILED', 'VERIFY']);
      expect(dry.errorMessage).toContain(`${victim.path}: SHA-256 mismatch`);
      await b.box.start();
      // What the running stand-in writes (its database, pid, log) moves on by itself.
      const db = path.relative(b.box.root, b.box.dbFile);
      const notLive = (rel: string) => rel === db || rel.startsWith('run') || rel.startsWith('var/log');
      const before = snapshot(b.box.root, notLive);
      const { ctx, events } = job(b.config, `r-flipped-${ts}`);
      const r = await runRestore(ctx, restoreReq(bk.rel));
      expect(r.status).toBe('Failed');
      expect(r.errorCode).toBe('BOXBACK_ERR_VERIFY_FAILED');
      expect(r.failedStep).toBe('VERIFY');
      expect(r.errorMessage).toContain(`${victim.path}: SHA-256 mismatch`);
      expect(r.errorMessage).toContain('nothing was changed');
      // Found in the staged copy (the tree was fetched), which is gone again.
      expect(events.some((e) => e.phase === 'SYNC_TREES' && e.state === 'started')).toBe(true);
      expect(events.some((e) => e.phase === 'VERIFY' && e.state === 'failed')).toBe(true);
      expect(events.some((e) => e.phase === 'STOP')).toBe(false);
      expect(await b.box.healthy()).toBe(true);
      expect(snapshot(b.box.root, notLive)).toEqual(before);
      await b.box.stop();
    });
  }
});
