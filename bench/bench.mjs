#!/usr/bin/env node
// boxback bench: our backup and restore, run the way the agent runs as deployed, against the
// plain tools and restic, on the same generated box, in one run (each timed run starts with
// nothing dirty and, as root, the page cache dropped: bench/lib/settle.mjs; everything
// on one filesystem).
//
//   npm run bench -- [--size small|default|large] [--seed N] [--json] [--dir DIR] [--keep] [--no-restic]
//                    [--journal-files N] [--no-journal] [--daemon-files N] [--no-daemon-rss] [--timeout S]
//                    [--cpu-prof DIR] [--job-prof DIR] [--no-s3] [--only incremental|s3] [--rounds N]
//
// --only incremental: steps 1, 2 (ours), 4 (restic), 5 and 6 (ours and restic) only: the deployed
// incremental's row, its phases and fixed costs, in a few minutes. --job-prof DIR also keeps the
// daemon's log lines there (daemon.log). --only s3: step 7b alone (its own box, radosgw and
// daemons), under this script's signal and timeout handling (test/bench/bench-cleanup.test.ts).
//
// Steps, in order:
//   1. generate the box (bench/lib/gen-box.mjs), start its stand-in server and the real
//      `boxback-agent` daemon (journals on) on it; wait until it watches both trees
//   2. full:   ours, a Backup RPC to the daemon (stop mode: the stand-in really stopped and
//              started) vs `zip -r -1` of each dataset + `rsync -a` of the trees + `sync`
//              (ours and restic's are on disk when they report done: both fsync)
//   3. window: ours from the manifest (the services' own stop and start apart from our part:
//              the copy and our overhead) vs `cp -a` of the window's datasets
//   4. restic full backup of the same paths; `rsync -a` of the whole box (base for 6)
//   5. a simulated CI day (new artifacts and reports, database growth, config commits), the
//      daemon watching; then, as between two scheduled backups, its link farms are prepared
//   6. incremental as deployed: a Backup RPC to the same daemon (its journals follow the full
//      backup) vs restic and `rsync -a --link-dest` + `sync`. The fallback case, a full rsync
//      pass (a one-shot process without journals: bench/run-backup.mjs, against a hard-linked
//      copy of the full backup in a second store), is measured beside it, in the first round.
//      Then --rounds N (3; 1 at --size large): another CI day, ours and restic's incrementals,
//      N-1 times; the row is the median of the rounds (deployed_incremental_rounds; the phases
//      and steps printed are the first round's)
//   7. restore: a Restore RPC of the last incremental to the daemon; its data path (the job minus
//      the service's stop, start and health check) vs `unzip` + `rsync -a` + `sync` of the same
//      backup and `restic restore` + `sync -f` of the same box (both on disk when timed; restic's
//      time without the sync is reported apart: restic_restore_nosync_s)
//   7b. S3 store (bench/lib/s3-section.mjs; on when radosgw is installed, --no-s3 skips it):
//      radosgw started once; ours (the daemon, store kind s3, journals on) vs restic writing
//      to the same radosgw: full, incremental after a CI day, restore onto an empty box,
//      bytes stored on the server, the agent's peak RSS
//   8. change journal: bench/journal-bench.mjs's run() on its own tree of small files (100k
//      small, 200k default, 1M large; --journal-files N), 0.1% changed
//   9. the daemon's RSS while it watches a tree of --daemon-files (200k) small files
//      (bench/lib/daemon-rss.mjs): first-scan peak and steady state
//  10. a table, or with --json one object: seconds (`*_s`), bytes (`*_bytes`), MB (`*_mb`) and
//      ratios (`*_ratio`, ours / theirs: below 1.0 is better), under stable names.
// Progress goes to stderr (also with --json). SIGINT, SIGTERM or --timeout (seconds; default by
// size) stop every process the bench started (the daemon, the stand-in, radosgw, rsync...) and remove
// its temp dir (made under --dir or the system's), unless --keep.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_NODE_FLAGS } from '../packages/agent/dist/node-flags.js';
import { run as journalBench } from './journal-bench.mjs';
import { daemonWatchRss } from './lib/daemon-rss.mjs';
import { startDaemon } from './lib/deployed.mjs';
import { generateBox, simulateCiDay } from './lib/gen-box.mjs';
import { guard, onCleanup, run, spawnTracked, stopEverything } from './lib/procs.mjs';
import { printTable } from './lib/report.mjs';
import { s3SectionFor } from './lib/s3-section.mjs';
import { pageCache, settle, warm } from './lib/settle.mjs';
import { benchArgs } from './lib/cli-args.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: args } = benchArgs(import.meta.url, {
  options: {
    size: { type: 'string', default: 'small' },
    seed: { type: 'string', default: '42' },
    json: { type: 'boolean', default: false },
    dir: { type: 'string' },
    keep: { type: 'boolean', default: false },
    'no-restic': { type: 'boolean', default: false },
    'journal-files': { type: 'string' },
    'no-journal': { type: 'boolean', default: false },
    'daemon-files': { type: 'string', default: '200000' },
    'no-daemon-rss': { type: 'boolean', default: false },
    timeout: { type: 'string' },
    'cpu-prof': { type: 'string' },
    'job-prof': { type: 'string' },
    'no-s3': { type: 'boolean', default: false },
    only: { type: 'string' },
    rounds: { type: 'string' },
  },
});
const say = (msg) => process.stderr.write(`${msg}\n`);
if (args.only !== undefined && args.only !== 'incremental' && args.only !== 's3') {
  say(`--only takes "incremental" or "s3", not ${args.only}`);
  process.exit(2);
}
if (args.only === 's3' && (args['no-s3'] || args.size === 'large')) {
  say('--only s3 runs the S3 section: not with --no-s3, nor at --size large (the section skips it)');
  process.exit(2);
}
/** --only incremental: the rows beside the deployed incremental are skipped. */
const all = args.only === undefined;
/**
 * Rounds of the deployed incremental against restic's (a CI day, ours, restic's; 3 by default, 1
 * at --size large): one pair of ~1 s runs moved by 20-30% between runs of the same build on this
 * shared 2-core box, so the row is the median of the rounds' ratios, each round in the JSON.
 */
const ROUNDS = Number(args.rounds ?? (args.size === 'large' ? 1 : 3));
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || ROUNDS > 9) {
  say(`--rounds takes 1 to 9, not ${args.rounds}`);
  process.exit(2);
}
/** Files in the change-journal section's tree, by box size (the issue asks for 1M: --journal-files 1000000). */
const JOURNAL_FILES = { small: 100_000, default: 200_000, large: 1_000_000 };
const TIMEOUT_S = { small: 3600, default: 4 * 3600, large: 12 * 3600 };
guard({ timeoutS: Number(args.timeout ?? TIMEOUT_S[args.size] ?? 3600), log: say });

const sh = (cmd, argv, opts = {}) => run(cmd, argv, opts);
const time = async (fn) => {
  const t0 = performance.now();
  const out = await fn();
  return { seconds: (performance.now() - t0) / 1000, out };
};
// The store's link farms (.journal-farm, renamed while du runs) are not a backup's bytes.
const du = async (p) => Number((await sh('du', ['-s', '--block-size=1', '--exclude=.journal-farm', p])).split('\t')[0]);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const f2 = (x) => (x === undefined ? '-' : x.toFixed(2));
const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`;
const hasRestic =
  !args['no-restic'] &&
  (await sh('restic', ['version']).then(
    () => true,
    () => false,
  ));

mkdirSync(args.dir ?? os.tmpdir(), { recursive: true });
if (args['job-prof']) mkdirSync(args['job-prof'], { recursive: true });
const root = mkdtempSync(path.join(args.dir ?? os.tmpdir(), 'boxback-bench-'));
onCleanup(() => (args.keep ? say(`kept ${root}`) : rmSync(root, { recursive: true, force: true })));
const port = 20000 + Math.floor(Math.random() * 20000);
const figures = {};
const notes = [];

if (args.only === 's3') {
  // 7b alone: s3Section makes its own box, radosgw and daemons (all tracked by procs.mjs).
  try {
    const s3 = await s3SectionFor(args, { root, hasRestic, log: say });
    Object.assign(figures, s3.figures);
    notes.push(...s3.notes);
  } catch (err) {
    say(`bench failed: ${err.stack ?? err}`);
    process.exitCode = 1;
  }
  await stopEverything(say);
  if (process.exitCode === 1) process.exit(1);
  report();
  process.exit(0);
}

say(`generating a ${args.size} box under ${root} (seed ${args.seed})...`);
const t0 = performance.now();
const gen = await generateBox({ root: path.join(root, 'box'), port, size: args.size, seed: Number(args.seed) });
figures.generate_s = (performance.now() - t0) / 1000;
const { box } = gen;
figures.box_bytes = await du(path.join(root, 'box'));
const store = path.join(root, 'store');
const fallbackStore = path.join(root, 'store-fallback');
const plainDir = path.join(root, 'plain');
for (const d of [store, fallbackStore, plainDir]) mkdirSync(d, { recursive: true });
const HOST = 'bench';
// The fallback's one-shot process: the same agent config, without journals, on its own store.
const fallbackYaml = path.join(root, 'agent-fallback.yaml');
writeFileSync(
  fallbackYaml,
  JSON.stringify({
    name: HOST,
    listen: '127.0.0.1:0',
    tls: { ca: 'x', cert: 'x', key: 'x' },
    store: fallbackStore,
    stateDir: path.join(root, 'state-fallback'),
    plan: box.planFile,
    allowedRoots: [box.root],
  }),
);
const datasets = [
  { name: 'db', dir: box.db, window: true },
  { name: 'config-dir', dir: box.configDir, window: true },
  { name: 'wrapper-config-dir', dir: box.wrapperConfig, window: true },
  { name: 'config-repo', dir: box.configRepo, window: true },
  { name: 'plugins', dir: box.plugins, window: false },
  { name: 'addons', dir: box.addons, window: false },
];
const trees = [
  { name: 'artifacts', dir: box.artifacts },
  { name: 'test-reports', dir: box.shine },
];
const TREE_NAMES = trees.map((t) => t.name);
const resticPaths = [...datasets.map((d) => d.dir), box.envFile, ...trees.map((t) => t.dir)];

/** One backup in a one-shot process without journals (the fallback case): bench/run-backup.mjs. */
async function oneShotBackup(agentYaml, jobId) {
  const p = spawnTracked(process.execPath, [...AGENT_NODE_FLAGS, path.join(here, 'run-backup.mjs'), agentYaml, jobId], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
  const code = await new Promise((resolve) => p.on('close', resolve));
  let res;
  try {
    res = JSON.parse(out.trim().split('\n').pop() ?? '');
  } catch {
    throw new Error(`backup process failed (${code}): ${err}`);
  }
  if (res.status === 'Failed') throw new Error(`backup failed: ${res.error}`);
  return res;
}

/** Seconds of each phase of a backup's manifest, under `<prefix>phase_<name>_s`. */
function phaseFigures(prefix, manifest) {
  const out = {};
  for (const p of manifest.phases) out[`${prefix}phase_${p.name.toLowerCase()}_s`] = p.durationMs / 1000;
  return out;
}

/** Each phase of a backup's manifest as `NAME start-end`, seconds from the job's start (what runs beside what). */
function timeline(manifest) {
  const t0 = Date.parse(manifest.createdAt);
  const at = (iso) => ((Date.parse(iso) - t0) / 1000).toFixed(2);
  return manifest.phases.map((p) => `${p.name} ${at(p.startedAt)}-${at(p.endedAt)}`).join(', ');
}

/** The quiesce window of a backup's manifest: whole, the service's own stop and start, our part. */
function windowFigures(prefix, q) {
  const own = Math.max(0, (q.windowMs - (q.stopMs ?? 0) - (q.startMs ?? 0)) / 1000);
  return {
    [`${prefix}window_s`]: q.windowMs / 1000,
    [`${prefix}window_copy_s`]: (q.copyMs ?? 0) / 1000,
    [`${prefix}window_service_stop_s`]: (q.stopMs ?? 0) / 1000,
    [`${prefix}window_service_start_s`]: (q.startMs ?? 0) / 1000,
    [`${prefix}window_own_s`]: own,
  };
}

let daemon;
try {
  say('starting the stand-in server...');
  onCleanup(() => box.stop());
  await box.start();
  say('starting the agent daemon (journals on)...');
  daemon = await startDaemon({
    dir: path.join(root, 'daemon'),
    name: HOST,
    planFile: box.planFile,
    store,
    stateDir: path.join(root, 'state'),
    allowedRoots: [box.root],
    // --cpu-prof DIR: the daemon writes a V8 CPU profile there when it stops.
    nodeArgs: args['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(args['cpu-prof'])}`] : [],
    // --job-prof DIR: one CPU profile per job (<DIR>/<job id>.cpuprofile; bench/prof-summary.mjs reads it).
    env: args['job-prof'] ? { BOXBACK_JOB_CPU_PROFILE_DIR: path.resolve(args['job-prof']) } : {},
    log: say,
  });
  const w = await daemon.watching(TREE_NAMES);
  figures.daemon_box_watcher_start_s = w.seconds;
  figures.daemon_box_first_scan_peak_rss_bytes = w.hwmBytes;

  // 2. Full backup: ours (the daemon) vs zip -r -1 + rsync -a.
  await settle();
  say('full backup: boxback (the daemon, over gRPC)...');
  const beforeFull = daemon.mark();
  const full = await daemon.backup('bench-full');
  figures.full_s = full.seconds;
  figures.full_agent_cpu_s = full.agentCpuSeconds;
  figures.full_children_cpu_s = full.childrenCpuSeconds;
  figures.full_backup_bytes = await du(path.join(store, full.result.backupPath));
  // The daemon's RSS sampled every 50 ms, the highest per phase of the full backup (as the incremental's below).
  figures.full_peak_rss_mb = full.peakRssBytes / 1e6;
  figures.full_rss_by_phase_mb = Object.fromEntries(Object.entries(full.rssByPhase).map(([k, v]) => [k, +(v / 1e6).toFixed(1)]));
  Object.assign(figures, phaseFigures('full_', full.manifest));
  if (all) {
    await settle();
    say('full backup: zip -r -1 + rsync -a + sync...');
    figures.plain_full_s = (
      await time(async () => {
        for (const d of datasets) await sh('zip', ['-q', '-r', '-1', path.join(plainDir, `${d.name}.zip`), '.'], { cwd: d.dir });
        for (const t of trees) await sh('rsync', ['-a', `${t.dir}/`, path.join(plainDir, t.name) + '/']);
        await sh('sync', ['--file-system', plainDir]);
      })
    ).seconds;
    figures.full_ratio = figures.full_s / figures.plain_full_s;
    rmSync(plainDir, { recursive: true, force: true }); // its disk is needed at --size large
    say(`  full: boxback ${f2(figures.full_s)} s, plain ${f2(figures.plain_full_s)} s`);

    // 3. Quiesce window vs cp -a of the window's datasets.
    Object.assign(figures, windowFigures('', full.manifest.quiesce));
    const cpDir = path.join(root, 'cp');
    // cp -a with the datasets' pages cached: as our copy finds them (it reads them before the
    // window), and the strictest baseline for it.
    await settle();
    await warm(datasets.filter((x) => x.window).map((d) => d.dir));
    figures.cp_datasets_s = (
      await time(async () => {
        mkdirSync(cpDir);
        for (const d of datasets.filter((x) => x.window)) await sh('cp', ['-a', d.dir, path.join(cpDir, d.name)]);
      })
    ).seconds;
    rmSync(cpDir, { recursive: true, force: true });
    figures.window_ratio = figures.window_s / figures.cp_datasets_s;
    figures.window_copy_ratio = figures.window_copy_s / figures.cp_datasets_s;
    figures.window_own_vs_cp_ratio = figures.window_own_s / figures.cp_datasets_s;
    say(
      `  window ${f2(figures.window_s)} s: service stop ${f2(figures.window_service_stop_s)} s + start ${f2(figures.window_service_start_s)} s, ours ${f2(figures.window_own_s)} s; cp -a ${f2(figures.cp_datasets_s)} s`,
    );
  }

  // 4. Peers' full runs: restic, and rsync of the whole box (base for --link-dest).
  const resticRepo = path.join(root, 'restic-repo');
  const resticEnv = {
    ...process.env,
    RESTIC_REPOSITORY: resticRepo,
    RESTIC_PASSWORD_FILE: path.join(root, 'restic-pass'),
    RESTIC_CACHE_DIR: path.join(root, 'restic-cache'),
  };
  if (hasRestic) {
    writeFileSync(resticEnv.RESTIC_PASSWORD_FILE, 'bench-password\n');
    await sh('restic', ['init', '-q'], { env: resticEnv });
    await settle();
    say('full backup: restic...');
    figures.restic_full_s = (await time(() => sh('restic', ['backup', '-q', ...resticPaths], { env: resticEnv }))).seconds;
    figures.full_vs_restic_ratio = figures.full_s / figures.restic_full_s;
    figures.restic_repo_bytes = await du(resticRepo);
  } else notes.push('restic not installed (or --no-restic): restic figures skipped');
  const rs = (n) => path.join(root, `rsync-${n}`);
  const rsyncWhole = async (dest, linkDest) => {
    mkdirSync(dest, { recursive: true });
    for (const p of [...datasets.map((d) => ({ name: d.name, dir: d.dir })), ...trees]) {
      const a = ['-a', `${p.dir}/`, path.join(dest, p.name) + '/'];
      if (linkDest) a.splice(1, 0, `--link-dest=${path.join(linkDest, p.name)}`);
      await sh('rsync', a);
    }
  };
  if (all) {
    await settle();
    say('rsync -a of the whole box (base for --link-dest)...');
    figures.rsync_full_s = (await time(() => rsyncWhole(rs(1)))).seconds;
    // The fallback's store: the same full backup, hard-linked (its next backup links against it).
    mkdirSync(path.join(fallbackStore, HOST));
    await sh('cp', ['-al', path.join(store, full.result.backupPath), path.join(fallbackStore, full.result.backupPath)]);
  }

  // 5. A day of CI, the daemon watching; then the time between two backups (the link farms).
  const day = simulateCiDay(gen);
  say(`simulated a CI day: ${day.newArtifacts} new artifacts, +2% database...`);
  const farms = await daemon.farmsPrepared(TREE_NAMES, beforeFull);
  for (const [t, s] of Object.entries(farms)) figures[`link_farm_prepare_${t.replace(/-/g, '_')}_s`] = s;
  // The watcher's last events, a new backup timestamp, and past the change journal's carry
  // window: paths changed in the 3 s before a backup's cut are synced again by the next backup
  // too (journal.ts: a directory made just before the cut may not have its watch yet). A day's
  // writes spread over hours leave few there; the simulated day is written in a burst, which
  // without this wait made the next round sync every run of the day before again.
  const quietAfterDay = () => sleep(3500);
  await quietAfterDay();

  // 6. Incremental as deployed vs restic and rsync --link-dest; the fallback beside it.
  await settle();
  say('incremental backup as deployed: boxback (the same daemon, over gRPC)...');
  let beforeIncr = daemon.mark();
  const incr = await daemon.backup('bench-incr');
  figures.deployed_incremental_s = incr.seconds;
  // CPU seconds: the daemon's own and its children's (rsync, cp, the services' stop and start).
  figures.deployed_incremental_agent_cpu_s = incr.agentCpuSeconds;
  figures.deployed_incremental_children_cpu_s = incr.childrenCpuSeconds;
  figures.deployed_incremental_journaled_trees = incr.manifest.trees.filter((t) => t.syncMode === 'journal').length;
  for (const t of incr.manifest.trees)
    if (t.syncMode !== 'journal') notes.push(`DEPLOYED INCREMENTAL: tree ${t.name} made a full pass: ${t.syncReason}`);
  figures.deployed_incremental_linked_files = incr.manifest.trees.reduce((s, t) => s + t.linkedFiles, 0);
  figures.deployed_incremental_unique_bytes = (await du(store)) - figures.full_backup_bytes;
  Object.assign(figures, phaseFigures('deployed_incremental_', incr.manifest));
  for (const [k, v] of Object.entries(incr.steps)) if (typeof v === 'number') figures[`deployed_incremental_step_${k}`] = v;
  if (incr.steps.publish_flush_how) notes.push(`deployed incremental flushed with ${incr.steps.publish_flush_how}`);
  Object.assign(figures, windowFigures('deployed_incremental_', incr.manifest.quiesce));
  // The daemon's RSS sampled at each progress event of the incremental, its highest, and the
  // daemon's VmHWM so far (since its start: the full backup's peak included).
  figures.deployed_incremental_peak_rss_mb = Math.max(0, ...Object.values(incr.rssByPhase)) / 1e6;
  figures.deployed_incremental_rss_by_phase_mb = Object.fromEntries(
    Object.entries(incr.rssByPhase).map(([k, v]) => [k, +(v / 1e6).toFixed(1)]),
  );
  figures.agent_hwm_after_incremental_mb = incr.peakRssBytes / 1e6;
  if (args['job-prof']) writeFileSync(path.join(args['job-prof'], 'daemon.log'), daemon.agent.output());
  let fb;
  if (all) {
    await settle();
    say('incremental, fallback full pass (no journal): boxback one-shot process...');
    fb = await oneShotBackup(fallbackYaml, 'bench-fallback');
    figures.fallback_incremental_s = fb.seconds;
    figures.fallback_incremental_linked_files = fb.linkedFiles;
    await settle();
    say('incremental: rsync -a --link-dest + sync...');
    figures.rsync_linkdest_s = (
      await time(async () => {
        await rsyncWhole(rs(2), rs(1));
        await sh('sync', ['--file-system', rs(2)]);
      })
    ).seconds;
    for (const n of [1, 2]) rmSync(rs(n), { recursive: true, force: true });
    figures.deployed_incremental_vs_rsync_ratio = figures.deployed_incremental_s / figures.rsync_linkdest_s;
    figures.fallback_incremental_ratio = figures.fallback_incremental_s / figures.rsync_linkdest_s;
  }
  if (hasRestic) {
    await settle();
    say('incremental: restic...');
    figures.restic_incremental_s = (await time(() => sh('restic', ['backup', '-q', ...resticPaths], { env: resticEnv }))).seconds;
    figures.deployed_incremental_vs_restic_ratio = figures.deployed_incremental_s / figures.restic_incremental_s;
    if (fb) figures.fallback_incremental_vs_restic_ratio = figures.fallback_incremental_s / figures.restic_incremental_s;
  }
  say(
    `  incremental: deployed ${f2(figures.deployed_incremental_s)} s, fallback ${f2(figures.fallback_incremental_s)} s, rsync ${f2(figures.rsync_linkdest_s)} s, restic ${f2(figures.restic_incremental_s)} s`,
  );
  // 6b. More rounds: another CI day, ours and restic's incrementals (the same order, each settled).
  // The first round's own figures (the fallback and rsync rows are that day's).
  figures.deployed_incremental_first_s = incr.seconds;
  figures.restic_incremental_first_s = figures.restic_incremental_s;
  const rounds = [{ day: 1, deployed_s: incr.seconds, restic_s: figures.restic_incremental_s }];
  let last = incr;
  let backupPeakRss = Math.max(full.peakRssBytes, incr.peakRssBytes);
  for (let dayN = 2; dayN <= ROUNDS; dayN++) {
    simulateCiDay(gen, dayN);
    await daemon.farmsPrepared(TREE_NAMES, beforeIncr);
    await quietAfterDay();
    await settle();
    say(`incremental, round ${dayN} of ${ROUNDS} (another CI day): boxback, then restic...`);
    beforeIncr = daemon.mark();
    last = await daemon.backup(`bench-incr-${dayN}`);
    backupPeakRss = Math.max(backupPeakRss, last.peakRssBytes);
    for (const t of last.manifest.trees)
      if (t.syncMode !== 'journal') notes.push(`DEPLOYED INCREMENTAL round ${dayN}: tree ${t.name} made a full pass: ${t.syncReason}`);
    const round = { day: dayN, deployed_s: last.seconds, restic_s: undefined };
    if (hasRestic) {
      await settle();
      round.restic_s = (await time(() => sh('restic', ['backup', '-q', ...resticPaths], { env: resticEnv }))).seconds;
    }
    rounds.push(round);
    say(`  round ${dayN}: deployed ${f2(round.deployed_s)} s, restic ${f2(round.restic_s)} s; its timeline: ${timeline(last.manifest)}`);
  }
  if (args['job-prof'] && ROUNDS > 1) writeFileSync(path.join(args['job-prof'], 'daemon.log'), daemon.agent.output());
  if (ROUNDS > 1) {
    const median = (xs) => [...xs].sort((a, b) => a - b)[(xs.length - 1) >> 1];
    for (const r of rounds) if (r.restic_s) r.ratio = r.deployed_s / r.restic_s;
    figures.deployed_incremental_rounds = rounds;
    figures.deployed_incremental_s = median(rounds.map((r) => r.deployed_s));
    if (hasRestic) {
      figures.deployed_incremental_first_vs_restic_ratio = rounds[0].ratio;
      figures.restic_incremental_s = median(rounds.map((r) => r.restic_s));
      figures.deployed_incremental_vs_restic_ratio = median(rounds.map((r) => r.ratio));
    }
    say(
      `  incremental over ${ROUNDS} rounds (median): deployed ${f2(figures.deployed_incremental_s)} s, restic ${f2(figures.restic_incremental_s)} s, ratio ${f2(figures.deployed_incremental_vs_restic_ratio)} (rounds: ${rounds.map((r) => f2(r.ratio)).join(', ')})`,
    );
  }
  say(
    `  deployed incremental CPU: agent ${f2(incr.agentCpuSeconds)} s, its children ${f2(incr.childrenCpuSeconds)} s (full: ${f2(full.agentCpuSeconds)} s + ${f2(full.childrenCpuSeconds)} s); by thread ${JSON.stringify(incr.threadCpu)}`,
  );
  say(`  deployed incremental phases (s): ${incr.manifest.phases.map((p) => `${p.name} ${f2(p.durationMs / 1000)}`).join(', ')}`);
  say(
    `  its timeline (s from the job's start, start-end; the RPC took ${f2(figures.deployed_incremental_s)} s): ${timeline(incr.manifest)}`,
  );
  say(
    `  inside them (s): ${Object.entries(incr.steps)
      .map(([k, v]) => `${k} ${typeof v === 'number' ? f2(v) : v}`)
      .join(', ')}`,
  );

  if (!all)
    notes.push(
      `--only incremental: the other rows were skipped; full backup phases (s): ${full.manifest.phases.map((p) => `${p.name} ${(p.durationMs / 1000).toFixed(2)}`).join(', ')}`,
    );
  else {
    // 7. Restore of the incremental, as deployed, vs unzip + rsync and restic restore.
    say('restore: boxback (the daemon, over gRPC)...');
    // The last round's backup: restic restores its latest snapshot, the same day's.
    const backupDir = path.join(store, last.result.backupPath);
    const manifest = JSON.parse(
      readFileSync(path.join(backupDir, 'manifest.json'), 'utf8').replace(/"files": \[\n[\s\S]*?\n \]/, '"files": []'),
    );
    const plainOut = path.join(root, 'restore-plain');
    await settle();
    say('restore: unzip + rsync -a + sync of the same backup...');
    figures.restore_plain_s = (
      await time(async () => {
        mkdirSync(plainOut);
        for (const d of manifest.datasets)
          await sh('unzip', ['-q', '-o', path.join(backupDir, d.archive), '-d', path.join(plainOut, d.name)]);
        for (const t of manifest.trees) await sh('rsync', ['-a', `${path.join(backupDir, t.dir)}/`, `${path.join(plainOut, t.dir)}/`]);
        await sh('sync', ['-f', plainOut]);
      })
    ).seconds;
    rmSync(plainOut, { recursive: true, force: true });
    await settle();
    const rest = await daemon.restore('bench-restore', last.result.backupPath);
    figures.restore_s = rest.dataPathSeconds;
    figures.restore_job_s = rest.seconds;
    figures.restore_agent_cpu_s = rest.agentCpuSeconds;
    figures.restore_children_cpu_s = rest.childrenCpuSeconds;
    for (const [k, v] of Object.entries(rest.phases)) figures[`restore_phase_${k.toLowerCase()}_s`] = v;
    for (const [k, v] of Object.entries(rest.steps)) figures[`restore_step_${k}_s`] = v;
    figures.restore_load_1m = os.loadavg()[0];
    figures.restore_vs_plain_ratio = figures.restore_s / figures.restore_plain_s;
    figures.restore_ratio = figures.restore_vs_plain_ratio; // the name of earlier runs
    figures.restore_backup_bytes = await du(backupDir);
    if (hasRestic) {
      await settle();
      say('restore: restic restore latest...');
      const out = path.join(root, 'restore-restic');
      // restic restore leaves its files in the page cache; ours flushes the staged copies before SWAP
      // (CHOWN's syncfs), and the plain row ends with `sync -f`. So restic's row ends with the same
      // `sync -f` of its target, timed apart too: both are on disk when their time stops.
      figures.restic_restore_nosync_s = (
        await time(() => sh('restic', ['restore', 'latest', '-q', '--target', out], { env: resticEnv }))
      ).seconds;
      figures.restic_restore_sync_s = (await time(() => sh('sync', ['-f', out]))).seconds;
      figures.restic_restore_s = figures.restic_restore_nosync_s + figures.restic_restore_sync_s;
      figures.restore_vs_restic_ratio = figures.restore_s / figures.restic_restore_s;
      figures.restore_vs_restic_nosync_ratio = figures.restore_s / figures.restic_restore_nosync_s;
      for (const d of [out, resticRepo, fallbackStore]) rmSync(d, { recursive: true, force: true });
    }

    // Peak RSS of the agent: the daemon during each job, the fallback's one-shot process.
    figures.agent_backup_peak_rss_bytes = backupPeakRss;
    figures.agent_restore_peak_rss_bytes = rest.peakRssBytes;
    say(
      `  restore: data path ${f2(figures.restore_s)} s (job ${f2(figures.restore_job_s)} s), plain ${f2(figures.restore_plain_s)} s, restic ${f2(figures.restic_restore_s)} s; phases ${Object.entries(
        rest.phases,
      )
        .map(([k, v]) => `${k} ${f2(v)}`)
        .join(', ')}`,
    );
    say(
      `  restore steps (s): ${Object.entries(rest.steps)
        .map(([k, v]) => `${k} ${f2(v)}`)
        .join(
          ', ',
        )}; agent CPU ${f2(rest.agentCpuSeconds)} s (by thread ${JSON.stringify(rest.threadCpu)}) + its children ${f2(rest.childrenCpuSeconds)} s; load ${f2(os.loadavg()[0])}`,
    );
    say(
      `  agent peak RSS: backups ${mib(backupPeakRss)}, restore ${mib(rest.peakRssBytes)}, fallback ${mib(Math.max(fb.vmHwmBytes, fb.maxRssBytes))}`,
    );
    figures.fallback_peak_rss_bytes = Math.max(fb.vmHwmBytes, fb.maxRssBytes);
    figures.peak_rss_bytes = Math.max(
      figures.agent_backup_peak_rss_bytes,
      figures.agent_restore_peak_rss_bytes,
      figures.fallback_peak_rss_bytes,
    );
    figures.daemon_box_rss_after_bytes = daemon.memory().rssBytes;
    await daemon.stop();
    daemon = undefined;
    await box.stop();

    // 7b. S3 store section (issue 12): ours vs restic on one radosgw.
    if (args['no-s3']) notes.push('S3 store section skipped (--no-s3)');
    else if (args.size === 'large')
      notes.push(
        'S3 store section skipped at --size large: the test radosgw keeps objects in memory (memstore), two copies of a 10 GB box do not fit',
      );
    else {
      const s3 = await s3SectionFor(args, { root, hasRestic, log: say });
      Object.assign(figures, s3.figures);
      notes.push(...s3.notes);
    }

    // 8. Change-journal section (issue 7): bench/journal-bench.mjs on its own tree of small files.
    if (!args['no-journal']) {
      const files = Number(args['journal-files'] ?? JOURNAL_FILES[args.size] ?? JOURNAL_FILES.default);
      say(`change journal section: a tree of ${files} small files, 0.1% changed...`);
      Object.assign(figures, await journalBench({ files, dir: path.join(root, 'journal'), log: say }));
    }

    // 9. The daemon watching a large tree.
    if (!args['no-daemon-rss']) {
      Object.assign(figures, await daemonWatchRss({ dir: path.join(root, 'daemon-rss'), files: Number(args['daemon-files']), log: say }));
    }

    const phaseLine = (m) => m.phases.map((p) => `${p.name} ${(p.durationMs / 1000).toFixed(2)}`).join(', ');
    notes.push(`full backup phases (s): ${phaseLine(full.manifest)}`);
    notes.push(`fallback incremental phases (s): ${fb.phases.map((p) => `${p.name} ${(p.ms / 1000).toFixed(2)}`).join(', ')}`);
    notes.push(
      `restore phases (s, first to last event): ${Object.entries(rest.phases)
        .map(([k, v]) => `${k} ${v.toFixed(2)}`)
        .join(', ')}`,
    );
  }
} catch (err) {
  say(`bench failed: ${err.stack ?? err}`);
  process.exitCode = 1;
} finally {
  await daemon?.stop().catch(() => undefined);
}

await stopEverything(say);
if (process.exitCode === 1) process.exit(1);

report();

/** The figures as one JSON line (--json) or a table, and the notes. */
function report() {
  notes.push(`page cache: ${pageCache}`);
  const out = {
    bench: 'boxback',
    size: args.size,
    seed: Number(args.seed),
    cpus: os.cpus().length,
    node: process.version,
    page_cache: pageCache,
    ...figures,
  };
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  for (const k of Object.keys(out)) if (typeof out[k] === 'number' && !Number.isInteger(out[k])) out[k] = Math.round(out[k] * 1000) / 1000;
  if (args.json) {
    process.stdout.write(`${JSON.stringify(out)}\n`);
    say(notes.join('\n'));
  } else printTable(out, notes);
}
