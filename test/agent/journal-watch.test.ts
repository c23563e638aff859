// The change journal end to end with the real chokidar watcher on real temp dirs: random
// change sequences (some made while the sync runs), each backup of the tree built from the
// journal (trusted) or by a full pass (untrusted), and every incremental tree compared with
// a full `rsync -a --link-dest` pass of the same source. Plus the trust rules: agent
// restart, the watch-limit fallback, invalidateAll after a restore, a failed backup, the
// periodic full pass, and what the journal file holds.
import { spawnSync } from 'node:child_process';
import { promises as fsp, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Logger } from '@boxback/common';
import { createJournals, type Journals } from '../../packages/agent/src/journal/index.js';
import { compileExcludes } from '@boxback/common';
import { syncTreeIncremental } from '@boxback/common';
import { journalFile, readJournal } from '../../packages/agent/src/journal/journal.js';
import { Mutator, diffTrees, fullRsync, prng, snapshotTree } from '../helpers/journal-trees.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'boxback-jwatch-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const EXCLUDES = ['*.tmp', '/cache/'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function testLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const put = (a: unknown, b?: unknown) => lines.push(typeof a === 'string' ? a : String(b ?? JSON.stringify(a)));
  const log = { lines, info: put, warn: put, error: put, debug: () => undefined, child: () => log };
  return log as unknown as Logger & { lines: string[] };
}

interface Box {
  dir: string;
  src: string;
  stateDir: string;
  config: {
    stateDir: string;
    store: string;
    name: string;
    plan: { trees: Array<{ name: string; source: string; excludes: string[] }>; journal?: unknown };
  };
  backups: string[];
}

async function makeBox(name: string, journal?: unknown): Promise<Box> {
  const dir = path.join(tmp, name);
  const src = path.join(dir, 'src');
  const stateDir = path.join(dir, 'state');
  await fsp.mkdir(src, { recursive: true });
  await fsp.mkdir(path.join(dir, 'store', 'h'), { recursive: true });
  const store = path.join(dir, 'store');
  return {
    dir,
    src,
    stateDir,
    config: { stateDir, store, name: 'h', plan: { trees: [{ name: 'artifacts', source: src, excludes: EXCLUDES }], journal } },
    backups: [],
  };
}

const open = (b: Box, log = testLog(), o: Parameters<typeof createJournals>[2] = {}) =>
  createJournals(b.config as unknown as Parameters<typeof createJournals>[0], log, { flushMs: 50, prepareFarms: true, ...o });

/** Wait until the watcher has been quiet for 150 ms (bounded: 5 s). */
async function settle(j: Journals): Promise<void> {
  let last = -1;
  let quietSince = Date.now();
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const n = j.status().reduce((s, w) => s + w.events, 0);
    if (n !== last) {
      last = n;
      quietSince = Date.now();
    } else if (Date.now() - quietSince >= 150) return;
    await sleep(25);
  }
}

/** One backup of the tree as the backup engine will run it. Returns the snapshot and the tree dir. */
async function backup(b: Box, j: Journals, during?: () => Promise<void>) {
  const prevRel = b.backups[b.backups.length - 1];
  const rel = `h/backup_${String(b.backups.length).padStart(4, '0')}`;
  const dest = path.join(b.dir, 'store', rel, 'artifacts');
  const snap = await j.snapshot('artifacts', prevRel);
  const prevTree = prevRel ? path.join(b.dir, 'store', prevRel, 'artifacts') : undefined;
  let preparedFarm = false;
  const work = (async () => {
    if (snap.trusted && prevTree) {
      const farm = await j.takeLinkFarm('artifacts', prevRel);
      const r = await syncTreeIncremental({ source: b.src, dest, prevTree, changed: snap.changed, excludes: EXCLUDES, farm });
      preparedFarm = r.preparedFarm;
    } else {
      await fsp.mkdir(dest, { recursive: true });
      fullRsync(b.src, dest, prevTree, EXCLUDES);
    }
  })();
  await Promise.all([work, during?.()]);
  await j.sealed('artifacts', rel);
  b.backups.push(rel);
  return { snap, dest, prevTree, preparedFarm };
}

describe('change journal with the real watcher', () => {
  for (const seed of [11, 12, 13]) {
    it(`journaled backups equal full rsync passes over random changes, seed ${seed}`, async () => {
      const b = await makeBox(`w${seed}`);
      const rnd = prng(seed);
      const m = new Mutator(b.src, rnd);
      await m.populate(15, 120);
      // Small chunks: the first scan admits the tree to chokidar piece by piece.
      const j = await open(b, testLog(), { chunkEntries: seed === 11 ? 1_000_000 : seed === 12 ? 40 : 10 });
      try {
        await j.ready();
        expect(j.status()[0].state).toBe('watching');
        if (seed === 13) expect(j.status()[0].chunks).toBeGreaterThan(1);
        const first = await backup(b, j);
        expect(first.snap.trusted).toBe(false);
        expect(first.snap.reason).toMatch(/agent|first/);
        const ex = compileExcludes(EXCLUDES);
        for (let round = 1; round <= 5; round++) {
          const touched: string[] = [];
          const ops: string[] = [];
          for (let i = 0, n = 1 + Math.floor(rnd() * 10); i < n; i++) {
            const s = await m.step();
            ops.push(s.op);
            if (!s.op.startsWith('failed')) touched.push(...s.touched.filter((p) => !ex.excludedOrUnder(p, undefined)));
          }
          await settle(j);
          // Changes while the sync runs, in every other round: they must reach the next backup.
          const during =
            round % 2 === 0
              ? async () => {
                  for (let i = 0; i < 5; i++) await m.step();
                }
              : undefined;
          const before = await snapshotTree(b.src);
          const { snap, dest, prevTree, preparedFarm } = await backup(b, j, during);
          expect(snap.trusted, snap.reason).toBe(true);
          // The link farm was prepared in the background after the previous backup was sealed.
          expect(preparedFarm).toBe(true);
          const covered = (p: string) => snap.changed.some((c) => p === c || p.startsWith(`${c}/`));
          expect(
            touched.filter((p) => !covered(p)),
            `round ${round}: ${ops.join('; ')}`,
          ).toEqual([]);
          if (!during) {
            const full = path.join(b.dir, `full${round}`);
            fullRsync(b.src, full, prevTree, EXCLUDES);
            expect(diffTrees(await snapshotTree(full), await snapshotTree(dest), 20, before), `round ${round}: ${ops.join('; ')}`).toEqual(
              [],
            );
          }
        }
        // After the last during-round: one more quiet backup must equal a full pass.
        await settle(j);
        const last = await backup(b, j);
        expect(last.snap.trusted).toBe(true);
        const full = path.join(b.dir, 'full-last');
        fullRsync(b.src, full, last.prevTree, EXCLUDES);
        expect(diffTrees(await snapshotTree(full), await snapshotTree(last.dest), 20, await snapshotTree(b.src))).toEqual([]);
      } finally {
        await j.close();
      }
    });
  }

  it('an agent restart makes the next backup a full pass, and says why', async () => {
    const b = await makeBox('restart');
    await fsp.writeFile(path.join(b.src, 'a'), 'a');
    const j1 = await open(b, testLog(), { epoch: 'run-1' });
    await j1.ready();
    await backup(b, j1);
    await j1.close();
    await fsp.writeFile(path.join(b.src, 'changed-while-down'), 'x');
    const log = testLog();
    const j2 = await open(b, log, { epoch: 'run-2' });
    try {
      await j2.ready();
      const { snap } = await backup(b, j2);
      expect(snap.trusted).toBe(false);
      expect(snap.reason).toMatch(/agent was restarted \(journal epoch run-1, now run-2\)/);
      expect(log.lines.join('\n')).toMatch(/full pass/);
      // The full pass seals the journal: the one after is trusted.
      await fsp.writeFile(path.join(b.src, 'b'), 'b');
      await settle(j2);
      const next = await backup(b, j2);
      expect(next.snap.trusted).toBe(true);
      expect(next.snap.changed).toEqual(['b']);
    } finally {
      await j2.close();
    }
  });

  it('a tree too large for the watch limit falls back to full passes with one clear log line', async () => {
    const b = await makeBox('limit');
    for (let i = 0; i < 10; i++) await fsp.mkdir(path.join(b.src, `d${i}`, 'sub'), { recursive: true });
    const log = testLog();
    const j = await open(b, log, { maxWatches: 8, reserveWatches: 0 });
    try {
      await j.ready();
      expect(j.status()[0].state).toBe('too-large');
      const lines = log.lines.filter((l) => /max_user_watches/.test(l));
      expect(lines[0]).toMatch(/has more than 8 directories.*fs\.inotify\.max_user_watches=8.*sysctl -w fs\.inotify\.max_user_watches=\d+/);
      await backup(b, j);
      const { snap } = await backup(b, j);
      expect(snap.trusted).toBe(false);
      expect(snap.reason).toMatch(/max_user_watches/);
    } finally {
      await j.close();
    }
  });

  it('invalidateAll after a restore, a failed backup and the periodic full pass', async () => {
    const b = await makeBox('rules', { fullPassEvery: { backups: 4 } });
    await fsp.writeFile(path.join(b.src, 'a'), 'a');
    // No carry-over of the last seconds' paths into the next segment: exact lists below.
    const j = await open(b, testLog(), { carryMs: 0 });
    try {
      await j.ready();
      await backup(b, j); // first: full
      await fsp.writeFile(path.join(b.src, 'b'), 'b');
      await settle(j);
      expect((await backup(b, j)).snap.trusted).toBe(true);
      j.invalidateAll('restore of h@20261121-120000 replaced the trees');
      await j.ready(); // the trees are watched again (a restore swaps their directories)
      const r = await backup(b, j);
      expect(r.snap).toMatchObject({ trusted: false, reason: 'restore of h@20261121-120000 replaced the trees' });
      // A backup that fails after its snapshot: its changes stay for the next one.
      await fsp.writeFile(path.join(b.src, 'c'), 'c');
      await settle(j);
      const failed = await j.snapshot('artifacts', b.backups[b.backups.length - 1]);
      expect(failed.changed).toEqual(['c']);
      j.abandoned('artifacts');
      await fsp.writeFile(path.join(b.src, 'd'), 'd');
      await settle(j);
      const ok = await backup(b, j);
      expect(ok.snap.trusted).toBe(true);
      expect(ok.snap.changed).toEqual(['c', 'd']);
      // Every 4th backup is a full pass: full (the restore), 3 journaled, then full again.
      expect((await backup(b, j)).snap.trusted).toBe(true);
      expect((await backup(b, j)).snap.trusted).toBe(true);
      const periodic = await backup(b, j);
      expect(periodic.snap.reason).toMatch(/periodic full pass: every 4 backups/);
      // The journal file: a header that follows the last sealed backup.
      const jf = await readJournal(journalFile(b.stateDir, 'artifacts'));
      expect(jf && jf !== 'unreadable' && jf.header.follows).toBe(b.backups[b.backups.length - 1]);
    } finally {
      await j.close();
    }
  });

  it('held while a restore swaps the tree: no watches and no re-scan until invalidateAll, then watched again', async () => {
    const b = await makeBox('held');
    await fsp.mkdir(path.join(b.src, 'd'), { recursive: true });
    await fsp.writeFile(path.join(b.src, 'd', 'f'), 'x');
    const log = testLog();
    const j = await open(b, log, { carryMs: 0 });
    try {
      await j.ready();
      await backup(b, j);
      j.hold('restore of h@20261121-120000 is replacing the trees');
      expect(j.status()[0]).toMatchObject({ state: 'starting' });
      // The swap: the tree renamed aside, a new one in its place.
      const aside = path.join(b.dir, 'aside');
      await fsp.rename(b.src, aside);
      await fsp.mkdir(path.join(b.src, 'd'), { recursive: true });
      await fsp.writeFile(path.join(b.src, 'd', 'g'), 'y');
      await sleep(300);
      // Nothing re-scanned the new tree meanwhile: still held, no watch added back.
      expect(j.status()[0].state).toBe('starting');
      expect(log.lines.filter((l) => /^watching artifacts/.test(l))).toHaveLength(1);
      j.invalidateAll('restore of h@20261121-120000 replaced the trees');
      await j.ready();
      expect(j.status()[0].state).toBe('watching');
      expect(log.lines.filter((l) => /^watching artifacts/.test(l))).toHaveLength(2);
      const r = await backup(b, j);
      expect(r.snap).toMatchObject({ trusted: false, reason: 'restore of h@20261121-120000 replaced the trees' });
      // The new tree's watches follow it: a change after is journaled.
      await fsp.writeFile(path.join(b.src, 'd', 'later'), 'z');
      await settle(j);
      const next = await backup(b, j);
      expect(next.snap.trusted, next.snap.reason).toBe(true);
      expect(next.snap.changed).toEqual(['d/later']);
    } finally {
      await j.close();
    }
  });

  it('a directory replaced under its watch is noticed: untrusted, and watched again', async () => {
    const b = await makeBox('replaced');
    await fsp.mkdir(path.join(b.src, 'd', 'sub'), { recursive: true });
    await fsp.writeFile(path.join(b.src, 'd', 'sub', 'f'), 'x');
    const j = await open(b);
    try {
      await j.ready();
      await backup(b, j);
      // Deleted and recreated at once: chokidar keeps the dead watch (the inode number is even reused).
      // (In one event-loop turn, so chokidar sees neither the unlinkDir nor the addDir.)
      rmSync(path.join(b.src, 'd'), { recursive: true });
      mkdirSync(path.join(b.src, 'd'));
      await settle(j);
      for (let i = 0; i < 100 && j.status()[0].state !== 'watching'; i++) await sleep(20);
      const r = await backup(b, j);
      expect(r.snap.trusted).toBe(false);
      expect(r.snap.reason).toMatch(/directory d of artifacts was replaced/);
      await fsp.writeFile(path.join(b.src, 'd', 'later'), 'y');
      await settle(j);
      const next = await backup(b, j);
      expect(next.snap.trusted, next.snap.reason).toBe(true);
      expect(next.snap.changed).toContain('d/later');
    } finally {
      await j.close();
    }
  });

  it('an inotify queue overflow is detected (IN_Q_OVERFLOW from our addon): untrusted, and re-scanned', async () => {
    const b = await makeBox('overflow');
    await fsp.mkdir(path.join(b.src, 'many'));
    const j = await open(b);
    try {
      await j.ready();
      await backup(b, j);
      // 20k files created while this process's event loop is blocked: the kernel queue
      // (max_queued_events, 16384 here) overflows before the watcher reads a single event.
      const r = spawnSync('sh', ['-c', 'cd "$1" && seq 1 20000 | sed "s/^/f/" | xargs touch', 'sh', path.join(b.src, 'many')]);
      expect(r.status).toBe(0);
      await settle(j);
      for (let i = 0; i < 100 && j.status()[0].state !== 'watching'; i++) await sleep(50);
      const snap = (await backup(b, j)).snap;
      expect(snap.trusted).toBe(false);
      // Our addon passes the kernel's IN_Q_OVERFLOW on (Node's handles, the fallback, drop it
      // and the watcher counts events per turn instead: "possible inotify queue overflow").
      expect(snap.reason).toMatch(/inotify queue overflow \(IN_Q_OVERFLOW/);
    } finally {
      await j.close();
    }
  });

  it('writes recorded paths to disk within the flush interval', async () => {
    const b = await makeBox('durable');
    const j = await open(b);
    try {
      await j.ready();
      await backup(b, j);
      await fsp.writeFile(path.join(b.src, 'new-file'), 'x');
      let text = '';
      for (let i = 0; i < 40 && !text.includes('new-file'); i++) {
        await sleep(50);
        text = await fsp.readFile(journalFile(b.stateDir, 'artifacts'), 'utf8');
      }
      expect(text).toContain('"new-file"');
    } finally {
      await j.close();
    }
  });
});
