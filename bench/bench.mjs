#!/usr/bin/env node
// boxback bench: our backup against the plain tools and restic, on the same generated box,
// in one run (warm page cache; everything on one filesystem).
//
//   npm run bench -- [--size small|default|large] [--seed N] [--json] [--dir DIR] [--keep] [--no-restic]
//                    [--journal-files N] [--no-journal]
//
// Steps, in order:
//   1. generate the box (bench/lib/gen-box.mjs) and start its stand-in server
//   2. full:   ours (a child process: `node bench/run-backup.mjs`, stop mode, the stand-in
//              really stopped and started) vs `zip -r -1` of each dataset + `rsync -a` of the trees
//              + `sync` (ours and restic's are on disk when they report done: both fsync)
//   3. window: ours (services stopped -> resumed, and the copy inside it) vs `cp -a` of the
//              window's datasets (same filesystem)
//   4. restic full backup of the same paths (peer), `rsync -a` of the whole box (base for 6)
//   5. a simulated CI day (new artifacts and reports, database growth, config commits)
//   6. incremental: ours vs `rsync -a --link-dest` of the whole box + `sync`; restic incremental
//   7. peak RSS of our backup processes (VmHWM)
//   8. restore section: bench/restore-bench.mjs, when present, exports
//      `run(ctx) -> Promise<Record<string, number>>` with ctx = { dir, box, store, agentYaml,
//      latestBackup, resticRepo, resticEnv, time, sh } and its figures are merged in (the
//      restore engineer adds restore vs unzip+rsync and restic restore there).
//   9. change journal: bench/journal-bench.mjs's run({ files, dir, log }) on its own tree of
//      small files (100k small, 200k default, 1M large; --journal-files N), 0.1% changed
//  10. print a table, or with --json one object: seconds (`*_s`), bytes (`*_bytes`) and
//      ratios (`*_ratio`, ours / theirs: below 1.0 is better), under stable names.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { AGENT_NODE_FLAGS } from '../packages/agent/dist/node-flags.js';
import { generateBox, simulateCiDay } from './lib/gen-box.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: 'small' },
    seed: { type: 'string', default: '42' },
    json: { type: 'boolean', default: false },
    dir: { type: 'string' },
    keep: { type: 'boolean', default: false },
    'no-restic': { type: 'boolean', default: false },
    'journal-files': { type: 'string' },
    'no-journal': { type: 'boolean', default: false },
  },
});
const say = (msg) => {
  if (!args.json) process.stderr.write(`${msg}\n`);
};
const sh = (cmd, argv, opts = {}) => {
  const r = spawnSync(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 256 << 20, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${r.status ?? r.signal}): ${String(r.stderr).slice(-2000)}`);
  return String(r.stdout);
};
const time = (fn) => {
  const t0 = performance.now();
  const out = fn();
  return { seconds: (performance.now() - t0) / 1000, out };
};
const du = (p) => Number(sh('du', ['-s', '--block-size=1', p]).split('\t')[0]);
const hasRestic = !args['no-restic'] && spawnSync('restic', ['version']).status === 0;

/** Files in the change-journal section's tree, by box size (the issue asks for 1M: --journal-files 1000000). */
const JOURNAL_FILES = { small: 100_000, default: 200_000, large: 1_000_000 };

const root = args.dir ?? mkdtempSync(path.join(os.tmpdir(), 'boxback-bench-'));
mkdirSync(root, { recursive: true });
const port = 20000 + Math.floor(Math.random() * 20000);
const figures = {};
const notes = [];

say(`generating a ${args.size} box under ${root} (seed ${args.seed})...`);
const t0 = performance.now();
const gen = await generateBox({ root: path.join(root, 'box'), port, size: args.size, seed: Number(args.seed) });
figures.generate_s = (performance.now() - t0) / 1000;
const { box } = gen;
figures.box_bytes = du(path.join(root, 'box'));
const store = path.join(root, 'store');
const plainDir = path.join(root, 'plain');
mkdirSync(store, { recursive: true });
mkdirSync(plainDir, { recursive: true });
const agentYaml = path.join(root, 'agent.yaml');
writeFileSync(
  agentYaml,
  JSON.stringify({
    name: 'bench',
    listen: '127.0.0.1:0',
    tls: { ca: 'x', cert: 'x', key: 'x' },
    store,
    stateDir: path.join(root, 'state'),
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
const resticPaths = [...datasets.map((d) => d.dir), box.envFile, ...trees.map((t) => t.dir)];

function ours(jobId) {
  const r = spawnSync(process.execPath, [...AGENT_NODE_FLAGS, path.join(here, 'run-backup.mjs'), agentYaml, jobId], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let out;
  try {
    out = JSON.parse(line);
  } catch {
    throw new Error(`backup process failed (${r.status}): ${r.stderr.slice(-2000)}`);
  }
  if (out.status === 'Failed') throw new Error(`backup failed: ${out.error}`);
  return out;
}

try {
  await box.start();
  // 2. Full backup: ours vs zip -r -1 + rsync -a.
  say('full backup: boxback...');
  const full = ours('bench-full');
  figures.full_s = full.seconds;
  figures.full_backup_bytes = du(path.join(store, full.backupPath));
  say('full backup: zip -r -1 + rsync -a...');
  const plainFull = time(() => {
    for (const d of datasets) sh('zip', ['-q', '-r', '-1', path.join(plainDir, `${d.name}.zip`), '.'], { cwd: d.dir });
    for (const t of trees) sh('rsync', ['-a', `${t.dir}/`, path.join(plainDir, t.name) + '/']);
    // On disk, as ours and restic's are when they report done (both fsync).
    sh('sync', ['--file-system', plainDir]);
  });
  figures.plain_full_s = plainFull.seconds;
  figures.full_ratio = figures.full_s / figures.plain_full_s;

  // 3. Quiesce window vs cp -a of the window's datasets.
  figures.window_s = full.windowMs / 1000;
  figures.window_copy_s = full.copyMs / 1000;
  const cpDir = path.join(root, 'cp');
  const cp = time(() => {
    mkdirSync(cpDir);
    for (const d of datasets.filter((x) => x.window)) sh('cp', ['-a', d.dir, path.join(cpDir, d.name)]);
  });
  rmSync(cpDir, { recursive: true, force: true });
  figures.cp_datasets_s = cp.seconds;
  figures.window_ratio = figures.window_s / figures.cp_datasets_s;
  figures.window_copy_ratio = figures.window_copy_s / figures.cp_datasets_s;

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
    sh('restic', ['init', '-q'], { env: resticEnv });
    say('full backup: restic...');
    figures.restic_full_s = time(() => sh('restic', ['backup', '-q', ...resticPaths], { env: resticEnv })).seconds;
    figures.full_vs_restic_ratio = figures.full_s / figures.restic_full_s;
    figures.restic_repo_bytes = du(resticRepo);
  } else notes.push('restic not installed (or --no-restic): restic figures skipped');
  const rs = (n) => path.join(root, `rsync-${n}`);
  const rsyncWhole = (dest, linkDest) => {
    mkdirSync(dest, { recursive: true });
    for (const p of [...datasets.map((d) => ({ name: d.name, dir: d.dir })), ...trees]) {
      const a = ['-a', `${p.dir}/`, path.join(dest, p.name) + '/'];
      if (linkDest) a.splice(1, 0, `--link-dest=${path.join(linkDest, p.name)}`);
      sh('rsync', a);
    }
  };
  say('rsync -a of the whole box (base for --link-dest)...');
  figures.rsync_full_s = time(() => rsyncWhole(rs(1))).seconds;

  // 5. A day of CI.
  const day = simulateCiDay(gen);
  say(`simulated a CI day: ${day.newArtifacts} new artifacts, +2% database...`);
  await new Promise((r) => setTimeout(r, 1100)); // a new backup timestamp

  // 6. Incremental: ours vs rsync --link-dest; restic.
  say('incremental backup: boxback...');
  const incr = ours('bench-incr');
  figures.incremental_s = incr.seconds;
  figures.incremental_linked_files = incr.linkedFiles;
  figures.incremental_backup_unique_bytes = du(path.join(store)) - figures.full_backup_bytes;
  say('incremental: rsync -a --link-dest...');
  figures.rsync_linkdest_s = time(() => {
    rsyncWhole(rs(2), rs(1));
    sh('sync', ['--file-system', rs(2)]);
  }).seconds;
  figures.incremental_ratio = figures.incremental_s / figures.rsync_linkdest_s;
  if (hasRestic) {
    say('incremental: restic...');
    figures.restic_incremental_s = time(() => sh('restic', ['backup', '-q', ...resticPaths], { env: resticEnv })).seconds;
    figures.incremental_vs_restic_ratio = figures.incremental_s / figures.restic_incremental_s;
  }
  figures.incremental_window_s = incr.windowMs / 1000;

  // 7. Peak RSS.
  figures.peak_rss_bytes = Math.max(full.vmHwmBytes, incr.vmHwmBytes, full.maxRssBytes, incr.maxRssBytes);

  // 8. Restore section (the restore engineer's bench/restore-bench.mjs).
  const restoreBench = path.join(here, 'restore-bench.mjs');
  if (existsSync(restoreBench)) {
    say('restore section...');
    const mod = await import(pathToFileURL(restoreBench).href);
    if (typeof mod.run === 'function') {
      Object.assign(
        figures,
        await mod.run({
          dir: root,
          box,
          store,
          agentYaml,
          latestBackup: path.join(store, incr.backupPath),
          resticRepo: hasRestic ? resticRepo : undefined,
          resticEnv,
          time,
          sh,
        }),
      );
    } else if (typeof mod.benchRestore === 'function') {
      // The restore bench builds its own box (a sample box at this size's database and artifact counts).
      const small = args.size === 'small';
      const r = await mod.benchRestore({
        dir: path.join(root, 'restore-bench'),
        runs: 1,
        log: say,
        ...(small ? { artifacts: gen.spec.artifacts, dbBytes: gen.spec.dbBytes } : {}),
      });
      // restore_s is the data path (verify, stage, chown, sync, swap), what unzip + rsync and restic
      // do; restore_job_s adds stopping, starting and health-checking the service.
      Object.assign(figures, {
        restore_s: r.dataPath,
        restore_job_s: r.boxback,
        restore_plain_s: r.manual,
        restore_ratio: r.ratio,
        restore_backup_bytes: r.bytes,
      });
      if (r.restic !== null && r.restic !== undefined)
        Object.assign(figures, { restic_restore_s: r.restic, restore_vs_restic_ratio: r.dataPath / r.restic });
      if (!small) notes.push("restore figures come from the restore bench's own (default-sized) sample box");
    }
  } else notes.push('restore figures: bench/restore-bench.mjs not present yet');

  // 9. Change-journal section (issue 7): bench/journal-bench.mjs on its own tree of small files.
  const journalBench = path.join(here, 'journal-bench.mjs');
  if (!args['no-journal'] && existsSync(journalBench)) {
    const mod = await import(pathToFileURL(journalBench).href);
    if (typeof mod.run === 'function') {
      const files = Number(args['journal-files'] ?? JOURNAL_FILES[args.size] ?? JOURNAL_FILES.default);
      say(`change journal section: a tree of ${files} small files, 0.1% changed...`);
      Object.assign(figures, await mod.run({ files, dir: path.join(root, 'journal'), log: say }));
    }
  }

  const phaseLine = (b) => b.phases.map((p) => `${p.name} ${(p.ms / 1000).toFixed(2)}`).join(', ');
  notes.push(`full backup phases (s): ${phaseLine(full)}`);
  notes.push(`incremental phases (s): ${phaseLine(incr)}`);
} finally {
  await box.stop().catch(() => undefined);
  if (!args.keep && !args.dir) rmSync(root, { recursive: true, force: true });
}

const out = { bench: 'boxback', size: args.size, seed: Number(args.seed), cpus: os.cpus().length, node: process.version, ...figures };
for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
for (const k of Object.keys(out)) if (typeof out[k] === 'number' && !Number.isInteger(out[k])) out[k] = Math.round(out[k] * 1000) / 1000;
if (args.json) {
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.stderr.write(`${notes.join('\n')}\n`);
} else {
  const fmt = (k, v) =>
    k.endsWith('_bytes')
      ? `${(v / 1048576).toFixed(1)} MiB`
      : k.endsWith('_ratio')
        ? `${v.toFixed(2)}x`
        : k.endsWith('_s')
          ? `${v.toFixed(2)} s`
          : String(v);
  const rows = [
    ['full backup', 'full_s', 'plain_full_s', 'full_ratio', 'zip -r -1 + rsync -a + sync', '<= 1.25x'],
    ['quiesce window (stop..resumed)', 'window_s', 'cp_datasets_s', 'window_ratio', 'cp -a datasets', '<= 1.5x'],
    ['consistent copy inside window', 'window_copy_s', 'cp_datasets_s', 'window_copy_ratio', 'cp -a datasets', ''],
    ['incremental after a CI day', 'incremental_s', 'rsync_linkdest_s', 'incremental_ratio', 'rsync -a --link-dest + sync', '<= 1.1x'],
    ['full vs restic', 'full_s', 'restic_full_s', 'full_vs_restic_ratio', 'restic backup', '<= 1.0x'],
    ['incremental vs restic', 'incremental_s', 'restic_incremental_s', 'incremental_vs_restic_ratio', 'restic backup', '<= 1.0x'],
    ['restore (data path)', 'restore_s', 'restore_plain_s', 'restore_ratio', 'unzip + rsync -a + sync', '<= 1.25x'],
    ['restore vs restic', 'restore_s', 'restic_restore_s', 'restore_vs_restic_ratio', 'restic restore', '<= 1.0x'],
    [
      'journaled tree sync (0.1% changed)',
      'journal_incremental_s',
      'journal_full_rsync_s',
      'journal_vs_rsync_ratio',
      'rsync -a --link-dest',
      '<= 0.2x',
    ],
  ];
  const lines = [
    `boxback bench: size ${out.size}, seed ${out.seed}, ${out.cpus} CPUs, node ${out.node}; box ${fmt('x_bytes', out.box_bytes)} (generated in ${out.generate_s.toFixed(1)} s)`,
    '',
  ];
  lines.push(`${'figure'.padEnd(34)}${'boxback'.padStart(11)}${'peer'.padStart(11)}${'ratio'.padStart(9)}  peer / target`);
  for (const [label, a, b, r, peer, target] of rows) {
    if (out[a] === undefined || out[b] === undefined) continue;
    lines.push(
      `${label.padEnd(34)}${fmt(a, out[a]).padStart(11)}${fmt(b, out[b]).padStart(11)}${fmt(r, out[r]).padStart(9)}  ${peer}${target ? ` / ${target}` : ''}`,
    );
  }
  lines.push('', `agent peak RSS: ${fmt('x_bytes', out.peak_rss_bytes)} (target <= 150 MB)`);
  lines.push(
    `full backup on disk: ${fmt('x_bytes', out.full_backup_bytes)}; incremental adds ${fmt('x_bytes', out.incremental_backup_unique_bytes)} (${out.incremental_linked_files} tree files hard-linked)`,
  );
  if (out.restic_repo_bytes) lines.push(`restic repository after full: ${fmt('x_bytes', out.restic_repo_bytes)}`);
  lines.push('', ...notes);
  process.stdout.write(`${lines.join('\n')}\n`);
}
