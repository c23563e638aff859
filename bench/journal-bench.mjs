#!/usr/bin/env node
// Change-journal bench (issue 7): a tree of N small files (GoCD-like artifacts), rounds of
// 0.1% of them changed, and each round's backup of the tree made two ways on the same data:
//
//   journal  what the agent does for a trusted journal: snapshot (cut) + the link farm
//            prepared after the previous backup (renamed into place) + rsync of the changed
//            paths (journal/incremental-sync.ts); also timed with the farm built inline
//            (`cp -al` during the backup: the fallback when no prepared farm is there)
//   rsync    the engine's full pass: `rsync` with exactly backup/tree-sync.ts's rsyncArgs
//            (-a --delete --numeric-ids --modify-window=-1 --no-inc-recursive --link-dest)
//
// Same filesystem, warm page cache for both (everything fits in RAM; a cold cache only makes
// the full pass slower), `sync` before each timed step. Per round the full pass runs twice
// (before and after the journaled one) and the journaled one once (plus once inline); the
// figures are medians over the rounds. Each round's journaled tree is compared with the full
// pass's tree and with the source: entries, types, modes, owners, sizes, nanosecond mtimes
// (directories too), symlink targets, and the bytes of every file whose inode differs.
//
// The watcher (start time, RSS, inotify watches) is measured in a child process (with the
// agent's V8 flags) that only runs the agent's journals on the tree: baseline RSS after loading the code, peak (VmHWM)
// during the first scan, RSS when ready and steady state (after GCs, once it stops dropping). chokidar's
// default (a watch per file) is measured the same way on a small sample for comparison.
//
//   node bench/journal-bench.mjs [--files 200000] [--per-dir 100] [--rounds 3] [--json] [--keep] [--dir DIR]
//
// Also `import { run } from './journal-bench.mjs'`:
//   run({ files, dir, log }) -> Promise<Record<string, number>>   (see run() for the names)
// Needs `npm run build` first (imports packages/agent/dist).
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createJournals } from '../packages/agent/dist/journal/index.js';
import { syncTreeIncremental } from '../packages/common/dist/index.js';
import { inotifyWatchesInUse } from '../packages/agent/dist/journal/watcher.js';
import { rsyncArgs } from '../packages/common/dist/index.js';
import { AGENT_NODE_FLAGS } from '../packages/agent/dist/node-flags.js';
import { guard, onCleanup, run as runProcess, spawnTracked } from './lib/procs.mjs';
import { benchArgs } from './lib/cli-args.mjs';

const thisFile = fileURLToPath(import.meta.url);
const secs = (t0) => Number(((performance.now() - t0) / 1000).toFixed(3));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : Number(((s[m - 1] + s[m]) / 2).toFixed(3));
};
const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;

/** GoCD-like layout: pipelines/p<i>/run<j>/job<k>/f<n>.log, `perDir` files per leaf directory. */
export function generate(root, n, perDir, seed = 1) {
  let s = seed;
  const rnd = () => (s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const blob = Buffer.alloc(8192);
  for (let i = 0; i < blob.length; i++) blob[i] = Math.floor(rnd() * 256);
  const leaves = Math.ceil(n / perDir);
  let made = 0;
  for (let l = 0; l < leaves; l++) {
    const dir = path.join(root, 'pipelines', `p${l % 50}`, `run${Math.floor(l / 50) % 40}`, `job${Math.floor(l / 2000)}`);
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < perDir && made < n; f++, made++) {
      const size = 200 + Math.floor(rnd() * 3800);
      const off = Math.floor(rnd() * (blob.length - size));
      writeFileSync(path.join(dir, `f${f}.log`), blob.subarray(off, off + size));
    }
  }
  return leaves;
}

/** 0.1% of the files: 60% appended, 15% new files, 10% deleted, 10% renamed, 5% chmod; plus a new run directory. */
function change(root, n, round) {
  const leaves = [];
  const walk = (d) => {
    let sub = false;
    for (const e of readdirSync(d, { withFileTypes: true }))
      if (e.isDirectory()) {
        sub = true;
        walk(path.join(d, e.name));
      }
    if (!sub) leaves.push(d);
  };
  walk(root);
  const k = Math.max(1, Math.round(n / 1000));
  let s = 7 + round * 7919;
  const rnd = () => (s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const pickFile = () => {
    for (;;) {
      const d = leaves[Math.floor(rnd() * leaves.length)];
      const fs = readdirSync(d);
      if (fs.length) return path.join(d, fs[Math.floor(rnd() * fs.length)]);
    }
  };
  for (let i = 0; i < k; i++) {
    const r = rnd();
    const f = pickFile();
    const dir = path.dirname(f);
    if (r < 0.6) appendFileSync(f, `more output ${round}.${i}\n`);
    else if (r < 0.75) writeFileSync(path.join(dir, `new${round}-${i}.log`), `new file ${i}\n`.repeat(20));
    else if (r < 0.85) unlinkSync(f);
    else if (r < 0.95) renameSync(f, path.join(dir, `renamed${round}-${i}.log`));
    else chmodSync(f, 0o600);
  }
  // A new pipeline run lands as a new subtree.
  const nd = path.join(root, 'pipelines', 'p0', `run-new${round}`, 'job0');
  mkdirSync(nd, { recursive: true });
  for (let i = 0; i < 5; i++) writeFileSync(path.join(nd, `f${i}.log`), `run output ${i}\n`);
  return k + 5;
}

/** Run a command without blocking the event loop (the watcher keeps working meanwhile, as in the agent). */
const sh = (cmd, argv) =>
  runProcess(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C' } }).then(() => undefined);
const syncDisk = () => sh('sync', []);
const rmTree = (p) => sh('rm', ['-rf', '--', p]);

/** The engine's full pass: rsync with backup/tree-sync.ts's arguments. */
async function rsyncFull(from, to, linkDest) {
  mkdirSync(to, { recursive: true });
  await sh('rsync', rsyncArgs({ source: from, dest: to, linkDest }, !!linkDest));
}

/** Compare two trees: entries, types, modes, owners, sizes, ns mtimes (dirs too), link targets, bytes. */
function compareTrees(a, b) {
  const diffs = [];
  let files = 0;
  const kind = (s) => (s.isDirectory() ? 'd' : s.isSymbolicLink() ? 'l' : 'f');
  const hash = (p) => createHash('sha256').update(readFileSync(p)).digest('hex');
  const walk = (rel) => {
    const na = new Set(readdirSync(path.join(a, rel)));
    const nb = new Set(readdirSync(path.join(b, rel)));
    for (const n of new Set([...na, ...nb])) {
      if (diffs.length > 20) return;
      const r = path.join(rel, n);
      if (!na.has(n) || !nb.has(n)) {
        diffs.push(`${r}: only in ${na.has(n) ? a : b}`);
        continue;
      }
      const x = lstatSync(path.join(a, r), { bigint: true });
      const y = lstatSync(path.join(b, r), { bigint: true });
      if (kind(x) !== kind(y) || x.mode !== y.mode || x.uid !== y.uid || x.gid !== y.gid) diffs.push(`${r}: type/mode/owner`);
      else if (x.isDirectory()) {
        if (x.mtimeNs !== y.mtimeNs) diffs.push(`${r}: dir mtime`);
        walk(r);
      } else if (x.isSymbolicLink()) {
        if (readlinkSync(path.join(a, r)) !== readlinkSync(path.join(b, r))) diffs.push(`${r}: link target`);
      } else {
        files++;
        if (x.size !== y.size || x.mtimeNs !== y.mtimeNs) diffs.push(`${r}: size/mtime`);
        else if ((x.ino !== y.ino || x.dev !== y.dev) && hash(path.join(a, r)) !== hash(path.join(b, r))) diffs.push(`${r}: content`);
      }
    }
  };
  const ra = lstatSync(a, { bigint: true });
  const rb = lstatSync(b, { bigint: true });
  if (ra.mode !== rb.mode || ra.mtimeNs !== rb.mtimeNs) diffs.push('.: root mode/mtime');
  walk('');
  return { diffs, files };
}

/** Until the watcher has seen no event for `quietMs` (chokidar re-reads changed directories meanwhile). */
async function settle(j, quietMs = 1000, maxMs = 60000) {
  let last = -1;
  let since = performance.now();
  const t0 = performance.now();
  while (performance.now() - t0 < maxMs) {
    const n = j.status().reduce((s, w) => s + w.events, 0);
    if (n !== last) {
      last = n;
      since = performance.now();
    } else if (performance.now() - since >= quietMs) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const quietLog = (say, onInfo, onWarn) => {
  const log = {
    info(o, m) {
      onInfo?.(o, m);
    },
    warn(o, m) {
      onWarn?.(o, m);
      say(`  warn: ${m ?? JSON.stringify(o)}`);
    },
    error(o, m) {
      say(`  error: ${m ?? JSON.stringify(o)}`);
    },
    debug() {},
    trace() {},
    fatal() {},
    child() {
      return log;
    },
  };
  return log;
};

const procStatus = (field) => {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
};

/**
 * Child process: the agent's journals alone on `src` (what an agent adds for the tree).
 * Prints one JSON line with start time, RSS (baseline, peak, ready, steady) and watches.
 */
async function watcherChild({ src, stateDir, mode, steadyMs = 60000 }) {
  const gc = () => globalThis.gc?.();
  const { watch } = await import('chokidar');
  gc();
  await new Promise((r) => setTimeout(r, 200));
  gc();
  const baseline = process.memoryUsage();
  const w0 = inotifyWatchesInUse();
  // Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
  writeFileSync('/proc/self/clear_refs', '5');
  const t0 = performance.now();
  let journals;
  let chok;
  if (mode === 'journal') {
    const plan = { trees: [{ name: 'artifacts', source: src, excludes: [] }] };
    journals = await createJournals(
      { stateDir, plan },
      quietLog((m) => process.stderr.write(`${m}\n`)),
      { prepareFarms: false },
    );
    await journals.ready();
  } else {
    chok = watch(src, { ignoreInitial: true, alwaysStat: false, atomic: false });
    await new Promise((r) => chok.once('ready', r));
  }
  const startS = secs(t0);
  const ready = process.memoryUsage().rss;
  const peak = procStatus('VmHWM'); // the highest RSS since the reset: the first scan
  const watches = inotifyWatchesInUse() - w0;
  const st = journals?.status()[0];
  // Steady state: V8 returns freed pages some seconds after a GC. A GC a second until the
  // RSS has not dropped for 15 s (at most `steadyMs`).
  let steady = process.memoryUsage();
  for (let t = 0, low = steady.rss, since = 0; t < steadyMs / 1000 && since < 15; t++, since++) {
    await new Promise((r) => setTimeout(r, 1000));
    gc();
    steady = process.memoryUsage();
    if (steady.rss < low - 1048576) {
      low = steady.rss;
      since = 0;
    }
  }
  const out = {
    state: st?.state ?? 'watching',
    directories: st?.directories ?? 0,
    watchLimit: st?.watchLimit ?? 0,
    startS,
    watches,
    rssBaseline: baseline.rss,
    rssPeak: peak,
    rssReady: ready,
    rssSteady: steady.rss,
    heapBaseline: baseline.heapUsed,
    heapSteady: steady.heapUsed,
  };
  await journals?.close();
  await chok?.close();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

function runChild(arg) {
  return new Promise((resolve, reject) => {
    const p = spawnTracked(process.execPath, [...AGENT_NODE_FLAGS, '--expose-gc', thisFile, '--child', JSON.stringify(arg)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`watcher child exited with ${code}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()));
      } catch (err) {
        reject(err);
      }
    });
  });
}

/**
 * The bench. `log` takes one line of progress (a string). Returns figures under stable names:
 *   journal_files, journal_directories, journal_rounds, journal_changed_ops, journal_changed_paths (median per round)
 *   journal_incremental_s       journaled backup of the tree, median: snapshot + prepared farm + rsync of the changed paths
 *   journal_incremental_max_s   its slowest round
 *   journal_snapshot_s          the journal cut alone (median)
 *   journal_full_rsync_s        the engine's full rsync pass, median of 2 per round
 *   journal_full_rsync_min_s    its fastest run
 *   journal_vs_rsync_ratio      journal_incremental_s / journal_full_rsync_s (below 1 is better)
 *   journal_speedup             journal_full_rsync_s / journal_incremental_s (target >= 5)
 *   journal_speedup_worst       journal_full_rsync_min_s / journal_incremental_max_s
 *   journal_inline_farm_s       the journaled sync with the farm built during the backup (cp -al), median
 *   journal_inline_farm_speedup journal_full_rsync_s / journal_inline_farm_s
 *   journal_link_farm_s         the cp -al part of it (median)
 *   journal_farm_prepare_s      preparing the farm in the background after a backup (ionice idle), median
 *   journal_trees_identical     1 when every round's journaled tree equals the full pass's and the source
 *   journal_compared_files      files compared in the last round
 *   journal_watcher_start_s     watcher start: walk + chokidar's first scan until every directory is watched
 *   journal_inotify_watches     inotify watches the watcher holds
 *   journal_watch_limit         fs.inotify.max_user_watches on this box
 *   journal_max_user_watches_needed  the smallest limit the watcher accepts for this tree (it keeps 10% / 1024 spare)
 *   journal_watcher_rss_baseline_bytes, _peak_bytes, _ready_bytes, _steady_bytes   the watcher process's RSS
 *   journal_watcher_rss_added_bytes   steady - baseline; journal_watcher_heap_added_bytes (V8 heap, after GC)
 *   journal_chokidar_default_files, _watches, _rss_peak_bytes, _rss_steady_bytes, _start_s   chokidar's own default on a sample
 *   journal_first_full_s, journal_generate_s, journal_total_s
 */
export async function run({ files = 200000, dir, log = () => {}, perDir = 100, rounds = 3, sampleFiles = 20000, keep = false } = {}) {
  const say = typeof log === 'function' ? log : (m) => log.info?.(m);
  const T0 = performance.now();
  const N = Number(files);
  if (dir) mkdirSync(dir, { recursive: true });
  const base = mkdtempSync(path.join(dir ?? os.tmpdir(), 'boxback-jbench-'));
  // Killed (signal, timeout): the watcher child is stopped first, then the tree removed.
  const undo = onCleanup(() => !keep && rmSync(base, { recursive: true, force: true }));
  const src = path.join(base, 'src');
  const store = path.join(base, 'store');
  const tree = (b) => path.join(store, 'h', b, 'artifacts');
  const out = { journal_files: N, journal_files_per_dir: perDir, journal_rounds: rounds };
  let journals;
  try {
    say(`journal bench: ${N} files (${perDir} per directory), ${rounds} rounds of 0.1% changes, in ${base}`);
    let t0 = performance.now();
    const leaves = generate(src, N, perDir);
    out.journal_generate_s = secs(t0);
    say(`  generated ${N} files in ${leaves} leaf directories: ${out.journal_generate_s} s`);
    await syncDisk();

    // The watcher alone, in a child process: start time, memory, watches.
    const wc = await runChild({ src, stateDir: path.join(base, 'state-child'), mode: 'journal' });
    if (wc.state !== 'watching') throw new Error(`watcher state ${wc.state}`);
    Object.assign(out, {
      journal_directories: wc.directories,
      journal_watcher_start_s: wc.startS,
      journal_inotify_watches: wc.watches,
      journal_watch_limit: wc.watchLimit,
      // The watcher wants directories <= limit - in use - max(1024, limit / 10).
      journal_max_user_watches_needed: Math.max(wc.directories + 1024, Math.ceil(wc.directories / 0.9)),
      journal_watcher_rss_baseline_bytes: wc.rssBaseline,
      journal_watcher_rss_peak_bytes: wc.rssPeak,
      journal_watcher_rss_ready_bytes: wc.rssReady,
      journal_watcher_rss_steady_bytes: wc.rssSteady,
      journal_watcher_rss_added_bytes: wc.rssSteady - wc.rssBaseline,
      journal_watcher_heap_added_bytes: wc.heapSteady - wc.heapBaseline,
    });
    say(
      `  watcher: ${wc.watches} inotify watches for ${wc.directories} directories, ready in ${wc.startS} s; ` +
        `RSS ${mib(wc.rssBaseline)} baseline, ${mib(wc.rssPeak)} peak, ${mib(wc.rssReady)} at ready, ${mib(wc.rssSteady)} steady`,
    );

    // Backup 0: a full pass (the first backup after an agent start always is).
    t0 = performance.now();
    await rsyncFull(src, tree('b0'));
    out.journal_first_full_s = secs(t0);
    say(`  first backup (full pass, nothing to link): ${out.journal_first_full_s} s`);

    // The agent's journals, as in the agent (farms prepared after each seal).
    let farmWaiter = null;
    const farmTimes = [];
    const agentLog = quietLog(
      say,
      (o) => {
        if (o && typeof o === 'object' && 'ms' in o && 'from' in o) {
          farmTimes.push(o.ms / 1000);
          farmWaiter?.(true);
        }
      },
      (o, m) => {
        if (/link farm/.test(String(m))) farmWaiter?.(false);
      },
    );
    const plan = { trees: [{ name: 'artifacts', source: src, excludes: [] }] };
    journals = await createJournals({ stateDir: path.join(base, 'state'), plan, store, name: 'h' }, agentLog, { prepareFarms: true });
    await journals.ready();
    if (journals.status()[0].state !== 'watching') throw new Error(`watcher state ${journals.status()[0].state}`);
    let farmReady = new Promise((r) => (farmWaiter = r));
    const snap0 = await journals.snapshot('artifacts', undefined);
    if (snap0.trusted) throw new Error('the first backup must be a full pass');
    await journals.sealed('artifacts', 'h/b0');

    const J = [];
    const S = [];
    const R = [];
    const L = [];
    const LF = [];
    const paths = [];
    let identical = true;
    for (let round = 1; round <= rounds; round++) {
      const prev = `b${round - 1}`;
      // The time between backups: the next farm is prepared in the background meanwhile.
      let timer;
      const ok = await Promise.race([farmReady, new Promise((r) => (timer = setTimeout(() => r(false), 30 * 60_000)))]);
      clearTimeout(timer);
      if (!ok) throw new Error('the link farm was not prepared');
      out.journal_changed_ops = change(src, N, round);
      await settle(journals);
      await syncDisk();

      // Full pass (1 of 2).
      t0 = performance.now();
      await rsyncFull(src, tree(`b${round}-full-a`), tree(prev));
      R.push(secs(t0));
      await syncDisk();

      // Journaled backup, as backup.ts does it: snapshot, take the prepared farm, sync.
      t0 = performance.now();
      const snap = await journals.snapshot('artifacts', `h/${prev}`);
      S.push(secs(t0));
      if (!snap.trusted) throw new Error(`journal untrusted: ${snap.reason}`);
      const farm = await journals.takeLinkFarm('artifacts', `h/${prev}`);
      if (!farm) throw new Error('no prepared link farm');
      const inc = await syncTreeIncremental({ source: src, dest: tree(`b${round}`), prevTree: tree(prev), changed: snap.changed, farm });
      J.push(secs(t0));
      if (!inc.preparedFarm) throw new Error('the prepared farm was not used');
      if (inc.warnings.length) say(`  warnings: ${inc.warnings.join('; ')}`);
      paths.push(snap.changed.length);
      await syncDisk();

      // The same with the farm built during the backup (no prepared farm).
      t0 = performance.now();
      const inl = await syncTreeIncremental({ source: src, dest: tree(`b${round}-inline`), prevTree: tree(prev), changed: snap.changed });
      L.push(secs(t0));
      LF.push(inl.linkMs / 1000);
      await syncDisk();

      // Full pass (2 of 2).
      t0 = performance.now();
      await rsyncFull(src, tree(`b${round}-full-b`), tree(prev));
      R.push(secs(t0));

      const c1 = compareTrees(tree(`b${round}-full-a`), tree(`b${round}`));
      const c2 = compareTrees(src, tree(`b${round}`));
      const c3 = compareTrees(tree(`b${round}-full-b`), tree(`b${round}-inline`));
      const diffs = [...c1.diffs, ...c2.diffs, ...c3.diffs];
      if (diffs.length) {
        identical = false;
        say(`  round ${round} DIFFERENCES: ${diffs.slice(0, 20).join('; ')}`);
      }
      out.journal_compared_files = c1.files;
      say(
        `  round ${round}: ${snap.changed.length} changed paths; journal ${J.at(-1)} s (snapshot ${S.at(-1)} s), ` +
          `inline farm ${L.at(-1)} s (cp -al ${LF.at(-1)} s), full rsync ${R.at(-2)} s / ${R.at(-1)} s; ` +
          `trees ${diffs.length ? 'DIFFER' : 'identical'} (${c1.files} files)`,
      );
      for (const x of ['full-a', 'full-b', 'inline']) await rmTree(path.join(store, 'h', `b${round}-${x}`));
      if (round > 1) await rmTree(path.join(store, 'h', prev));
      farmReady = new Promise((r) => (farmWaiter = r));
      await journals.sealed('artifacts', `h/b${round}`);
    }
    await journals.close();
    journals = undefined;

    Object.assign(out, {
      journal_changed_paths: median(paths),
      journal_incremental_s: median(J),
      journal_incremental_max_s: Math.max(...J),
      journal_snapshot_s: median(S),
      journal_full_rsync_s: median(R),
      journal_full_rsync_min_s: Math.min(...R),
      journal_inline_farm_s: median(L),
      journal_link_farm_s: median(LF),
      journal_farm_prepare_s: median(farmTimes),
      journal_trees_identical: identical ? 1 : 0,
    });
    out.journal_vs_rsync_ratio = Number((out.journal_incremental_s / out.journal_full_rsync_s).toFixed(4));
    out.journal_speedup = Number((out.journal_full_rsync_s / out.journal_incremental_s).toFixed(2));
    out.journal_speedup_worst = Number((out.journal_full_rsync_min_s / out.journal_incremental_max_s).toFixed(2));
    out.journal_inline_farm_speedup = Number((out.journal_full_rsync_s / out.journal_inline_farm_s).toFixed(2));

    // chokidar's default (a watch per file) on a sample, for comparison.
    if (sampleFiles > 0) {
      const sdir = path.join(base, 'sample');
      generate(sdir, sampleFiles, perDir, 3);
      const c = await runChild({ src: sdir, mode: 'chokidar', steadyMs: 10000 });
      Object.assign(out, {
        journal_chokidar_default_files: sampleFiles,
        journal_chokidar_default_watches: c.watches,
        journal_chokidar_default_rss_peak_bytes: c.rssPeak,
        journal_chokidar_default_rss_steady_bytes: c.rssSteady,
        journal_chokidar_default_start_s: c.startS,
      });
      await rmTree(sdir);
    }
    out.journal_total_s = secs(T0);
    return out;
  } finally {
    await journals?.close().catch(() => undefined);
    if (!keep) await rmTree(base);
    undo();
  }
}

function table(o) {
  const rows = [
    ['files', `${o.journal_files} in ${o.journal_directories} directories (${o.journal_files_per_dir} per leaf)`],
    ['changed per round (0.1%)', `${o.journal_changed_ops} operations -> ${o.journal_changed_paths} journaled paths (median)`],
    ['full pass (engine rsync args)', `${o.journal_full_rsync_s} s median, ${o.journal_full_rsync_min_s} s fastest`],
    [
      'journaled backup (prepared farm)',
      `${o.journal_incremental_s} s median, ${o.journal_incremental_max_s} s slowest (snapshot ${o.journal_snapshot_s} s)`,
    ],
    [
      '  speed-up vs full pass (target 5x)',
      `${o.journal_speedup}x median, ${o.journal_speedup_worst}x worst; ratio ${o.journal_vs_rsync_ratio}`,
    ],
    ['  farm prepared after the previous backup', `${o.journal_farm_prepare_s} s in the background (ionice idle)`],
    ['journaled, farm built inline', `${o.journal_inline_farm_s} s (cp -al ${o.journal_link_farm_s} s): ${o.journal_inline_farm_speedup}x`],
    ['trees identical (vs full pass, vs source)', `${o.journal_trees_identical ? 'yes' : 'NO'} (${o.journal_compared_files} files)`],
    ['watcher start (walk + first scan)', `${o.journal_watcher_start_s} s`],
    [
      'inotify watches (directories only)',
      `${o.journal_inotify_watches}; limit here ${o.journal_watch_limit}, needed >= ${o.journal_max_user_watches_needed}`,
    ],
    [
      'watcher process RSS',
      `baseline ${mib(o.journal_watcher_rss_baseline_bytes)}, peak ${mib(o.journal_watcher_rss_peak_bytes)}, ready ${mib(o.journal_watcher_rss_ready_bytes)}, steady ${mib(o.journal_watcher_rss_steady_bytes)} (heap +${mib(o.journal_watcher_heap_added_bytes)})`,
    ],
  ];
  if (o.journal_chokidar_default_files)
    rows.push([
      `chokidar default, ${o.journal_chokidar_default_files} files`,
      `${o.journal_chokidar_default_watches} watches, RSS peak ${mib(o.journal_chokidar_default_rss_peak_bytes)}, steady ${mib(o.journal_chokidar_default_rss_steady_bytes)}, start ${o.journal_chokidar_default_start_s} s`,
    ]);
  rows.push(['bench wall time', `${o.journal_total_s} s`]);
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === thisFile) {
  const i = process.argv.indexOf('--child');
  if (i >= 0) {
    watcherChild(JSON.parse(process.argv[i + 1])).then(
      () => process.exit(0),
      (err) => {
        console.error(err);
        process.exit(1);
      },
    );
  } else {
    const { values: args } = benchArgs(import.meta.url, {
      options: {
        files: { type: 'string', default: '200000' },
        'per-dir': { type: 'string', default: '100' },
        rounds: { type: 'string', default: '3' },
        'sample-files': { type: 'string', default: '20000' },
        json: { type: 'boolean', default: false },
        keep: { type: 'boolean', default: false },
        dir: { type: 'string' },
      },
    });
    guard();
    run({
      files: Number(args.files),
      perDir: Number(args['per-dir']),
      rounds: Number(args.rounds),
      sampleFiles: Number(args['sample-files']),
      dir: args.dir,
      keep: args.keep,
      log: (m) => console.error(m),
    }).then(
      (o) => {
        console.log(args.json ? JSON.stringify(o) : table(o));
        if (!o.journal_trees_identical) process.exitCode = 1;
      },
      (err) => {
        console.error(`journal bench failed: ${err.stack ?? err}`);
        process.exit(1);
      },
    );
  }
}
