// The bench's S3 store section (issue 12): our agent against restic, both writing to the same
// radosgw, on the same box, in one run.
//
//   const { figures, notes } = await s3Section({ root, size, seed, hasRestic, nodeArgs, log });
//
// Steps, in order:
//   1. radosgw (scripts/lib/radosgw.mjs, memstore sized for the box) under <root>/s3, every
//      daemon tracked by procs.mjs and stopped by pid on exit, a signal or the timeout;
//      one bucket for boxback (initialised as a store: a key file and a credentials file,
//      both 0600, as `boxback store init` does) and one for restic
//   2. box A: the bench's box generated again (same size and seed: the same data), its
//      stand-in server, the real `boxback-agent` daemon (journals on) with `store: kind: s3`
//   3. full:        a Backup RPC (stop mode) vs `restic backup` of the same paths
//   4. incremental: a simulated CI day, then a Backup RPC (the daemon's change journal, as
//      deployed) vs `restic backup` again
//   5. bytes stored: the sum of object sizes under each bucket (ListObjectsV2)
//   6. restore onto an empty box: box B (a new sample box, its trees emptied) and a second
//      daemon on it; a Restore RPC of A's incremental from the bucket (its data path: the job
//      minus the service's stop, start and health check) vs `restic restore latest` into an
//      empty directory; B's restored trees are checked against A's (files and bytes)
//   7. the agent's peak RSS (VmHWM, reset before each job) during the backups and the restore
// Alone (see the end of this file): --only incremental leaves out restic's full backup and
// step 6; each backup's phases are also printed as a timeline from its start.
// Figures: s3_full_s, restic_s3_full_s, s3_full_vs_restic_ratio, the same for incremental and
// restore, s3_stored_bytes, restic_s3_stored_bytes, s3_stored_bytes_vs_restic_ratio,
// s3_agent_peak_rss_mb, per-phase figures (s3_<job>_phase_<name>_s), the restore's timed steps
// (s3_restore_step_<name>_s: verify_sha256, verify_zips, extract_<archive>, fetch_<tree>, ...) and the agent's CPU seconds
// per job (s3_<job>_agent_cpu_s: what the load does not change), restic's beside them
// (restic_s3_<job>_cpu_s); the daemon's memory work per job (s3_<job>_bound_gcs, _gc_s,
// _trims, _trim_s, _trimmed_mb: memory.ts boundHeap's full GCs and malloc_trims).
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { S3BackupStore, createLogger, initS3Store, refFromPath } from '@boxback/common';
import { createSampleBox } from '../../scripts/lib/sample-box.mjs';
import { bucketBytes, freePort, makeBucket, radosgwInstalled, startRadosgw } from '../../scripts/lib/radosgw.mjs';
import { cpuSeconds, startDaemon, steps } from './deployed.mjs';
import { generateBox, simulateCiDay, SIZES } from './gen-box.mjs';
import { guard, onCleanup, run, stopEverything, track } from './procs.mjs';
import { settle } from './settle.mjs';
import { benchArgs } from './cli-args.mjs';

const HOST = 'bench-s3';
const mb = (b) => Math.round((b / 1e6) * 10) / 10;
const f2 = (x) => (x === undefined ? '-' : x.toFixed(2));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Wall seconds of `fn`, and the CPU seconds of the children it ran (restic: what load does not change). */
const timed = async (fn) => {
  const c0 = cpuSeconds(process.pid).children;
  const t0 = performance.now();
  await fn();
  return { s: (performance.now() - t0) / 1000, cpu: cpuSeconds(process.pid).children - c0 };
};

/** The load average now, for the figures' notes (other engineers share the cores). */
const load = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');

/** memstore holds every object in RAM: room for both stores with their incrementals, within free memory. */
function memstoreBytes(size) {
  const s = SIZES[size] ?? SIZES.small;
  const box = s.dbBytes + s.artifacts * 32 * 1024 + s.testReports * 4096;
  const want = Math.max(2 * 1024 ** 3, Math.ceil(box * 4));
  return Math.min(want, Math.floor(os.freemem() * 0.6));
}

/** Seconds of each phase of a backup's manifest, under `<prefix>phase_<name>_s`. */
function phaseFigures(prefix, manifest) {
  const out = {};
  for (const p of manifest.phases ?? []) out[`${prefix}phase_${p.name.toLowerCase()}_s`] = p.durationMs / 1000;
  return out;
}

/** The phases as a timeline from the job's start (the manifest's createdAt): "NAME start-end" in seconds, by start. */
function timeline(manifest) {
  const t0 = Date.parse(manifest.createdAt);
  return (manifest.phases ?? [])
    .map((p) => [p.name, (Date.parse(p.startedAt) - t0) / 1000, (Date.parse(p.endedAt) - t0) / 1000])
    .sort((a, b) => a[1] - b[1])
    .map(([n, s, e]) => `${n} ${s.toFixed(2)}-${e.toFixed(2)}`)
    .join(', ');
}

/** What the store logged for a job: new blobs and bytes, packs (its 's3 backup committed' line). */
function committedLine(output, jobId) {
  for (const l of output.split('\n')) {
    if (!l.startsWith('{') || !l.includes('"s3 backup committed"')) continue;
    try {
      const j = JSON.parse(l);
      if (j.jobId === jobId) return j;
    } catch {
      /* partial */
    }
  }
  return undefined;
}

/** The commit's steps (staging.ts: ms from the commit's start at the end of each), as `<prefix>commit_<step>_s`. */
function commitFigures(prefix, line) {
  const out = {};
  for (const [k, v] of Object.entries(line?.ms ?? {})) out[`${prefix}commit_${k}_s`] = v / 1000;
  return out;
}

/** Files and bytes of a tree, for the restore's check. */
function treeTotals(dir) {
  let files = 0;
  let bytes = 0;
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        files++;
        bytes += statSync(p).size;
      }
    }
  };
  walk(dir);
  return { files, bytes };
}

/** s3Section run with the bench's flags (--size, --seed; --cpu-prof DIR: one daemon profile, --job-prof DIR: one per job). */
export function s3SectionFor(args, { root, hasRestic, log }) {
  return s3Section({
    root,
    size: args.size,
    seed: Number(args.seed),
    hasRestic,
    nodeArgs: args['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(args['cpu-prof'])}`] : [],
    env: args['job-prof'] ? { BOXBACK_JOB_CPU_PROFILE_DIR: path.resolve(args['job-prof']) } : {},
    // bench.mjs's --only incremental is the section's too; --only s3 (the section alone) runs all of it.
    only: args.only === 's3' ? undefined : args.only,
    logDir: args['log-dir'] ? path.resolve(args['log-dir']) : args['job-prof'] ? path.resolve(args['job-prof']) : undefined,
    log,
  });
}

export async function s3Section({
  root,
  size = 'small',
  seed = 42,
  hasRestic = true,
  nodeArgs = [],
  env = {},
  only,
  logDir,
  log = () => {},
}) {
  if (only !== undefined && only !== 'incremental') throw new Error(`--only ${only}: only 'incremental' is known`);
  const figures = {};
  const notes = [];
  /** memory.ts boundHeap's full and minor GCs and malloc_trims during a job, from its daemon's log: s3_<job>_bound_*. */
  const boundFigures = (job, d, jobId) => {
    for (const [k, v] of Object.entries(steps(d.agent.output(), jobId))) if (k.startsWith('bound_')) figures[`s3_${job}_${k}`] = v;
  };
  if (!(await radosgwInstalled())) {
    notes.push('S3 store section skipped: radosgw (Debian packages radosgw ceph-mon ceph-osd) is not installed');
    return { figures, notes };
  }
  const dir = path.join(root, 's3');
  mkdirSync(dir, { recursive: true });
  // What this section must undo: done at its end, or by procs.mjs on a signal or the timeout.
  const held = [];
  const hold = (fn) => held.push([fn, onCleanup(fn)]);
  hold(() => rmSync(dir, { recursive: true, force: true }));
  let daemonA;
  let daemonB;
  try {
    // 1. radosgw, two buckets, our store initialised.
    log(`s3: starting radosgw (memstore ${(memstoreBytes(size) / 1024 ** 3).toFixed(1)} GiB)...`);
    const rgw = await startRadosgw({ parent: dir, memBytes: memstoreBytes(size), onSpawn: track });
    hold(() => rgw.stop());
    const bucket = await makeBucket(rgw, 'boxback');
    const resticBucket = await makeBucket(rgw, 'restic');
    const credentialsFile = path.join(dir, 's3.cred');
    const keyFile = path.join(dir, 'store.key');
    const secret = Buffer.from(randomBytes(32).toString('hex'));
    writeFileSync(credentialsFile, `AWS_ACCESS_KEY_ID=${rgw.accessKeyId}\nAWS_SECRET_ACCESS_KEY=${rgw.secretAccessKey}\n`, { mode: 0o600 });
    writeFileSync(keyFile, `${secret}\n`, { mode: 0o600 });
    const prefix = 'fleet1/';
    const store = { kind: 's3', endpoint: rgw.endpoint, bucket, prefix, pathStyle: true, credentialsFile, keyFile };
    const credentials = { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey };
    const full = { region: 'us-east-1', concurrency: 8, bandwidthLimit: 0, pruneGraceSeconds: 3600, ...store };
    await initS3Store(full, secret, { credentials });
    const reader = new S3BackupStore(full, { credentials, secret, log: createLogger('bench', 'silent') });
    hold(() => reader.close());
    const readManifest = (backupPath) => reader.readManifestText(refFromPath(backupPath));

    // 2. Box A and its daemon.
    log(`s3: generating box A (${size}, seed ${seed})...`);
    const gen = await generateBox({ root: path.join(dir, 'box-a'), port: await freePort(), size, seed });
    const boxA = gen.box;
    hold(() => boxA.stop());
    await boxA.start();
    daemonA = await startDaemon({
      dir: path.join(dir, 'daemon-a'),
      name: HOST,
      planFile: boxA.planFile,
      store,
      stateDir: path.join(dir, 'state-a'),
      allowedRoots: [boxA.root],
      nodeArgs,
      env,
      readManifest,
      log,
    });
    await daemonA.watching(['artifacts', 'test-reports']);
    const resticPaths = [boxA.db, boxA.configDir, boxA.wrapperConfig, boxA.configRepo, boxA.plugins, boxA.addons, boxA.envFile];
    resticPaths.push(boxA.artifacts, boxA.shine);
    const resticEnv = {
      ...process.env,
      RESTIC_REPOSITORY: `s3:${rgw.endpoint}/${resticBucket}`,
      RESTIC_PASSWORD_FILE: path.join(dir, 'restic-pass'),
      RESTIC_CACHE_DIR: path.join(dir, 'restic-cache'),
      AWS_ACCESS_KEY_ID: rgw.accessKeyId,
      AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey,
    };
    writeFileSync(resticEnv.RESTIC_PASSWORD_FILE, 'bench-password\n', { mode: 0o600 });
    const restic = (argv) => run('restic', argv, { env: resticEnv });
    if (hasRestic) await restic(['init', '-q']);
    else notes.push('S3 section: restic not installed (or --no-restic): its figures skipped');

    // 3. Full backup.
    await settle();
    log(`s3: full backup, boxback to S3 (load ${load()})...`);
    const a = await daemonA.backup('s3-full');
    figures.s3_full_s = a.seconds;
    figures.s3_full_agent_cpu_s = a.agentCpuSeconds;
    Object.assign(figures, phaseFigures('s3_full_', a.manifest));
    boundFigures('full', daemonA, 's3-full');
    const ca = committedLine(daemonA.agent.output(), 's3-full');
    if (ca) Object.assign(figures, { s3_full_new_bytes: ca.newBytes, s3_full_deflated_bytes: ca.storedBytes, s3_full_packs: ca.packs });
    Object.assign(figures, commitFigures('s3_full_', ca));
    if (hasRestic && !only) {
      await settle();
      log(`s3: full backup, restic to S3 (load ${load()})...`);
      const t = await timed(() => restic(['backup', '-q', ...resticPaths]));
      figures.restic_s3_full_s = t.s;
      figures.restic_s3_full_cpu_s = t.cpu;
      figures.s3_full_vs_restic_ratio = figures.s3_full_s / figures.restic_s3_full_s;
    }
    notes.push(`s3 full: ours ${f2(figures.s3_full_s)} s, restic ${f2(figures.restic_s3_full_s)} s (load ${load()})`);
    log(`  ${notes.at(-1)}`);
    notes.push(`s3 full timeline (s from its start; job ${f2(a.seconds)}): ${timeline(a.manifest)}`);
    log(`  ${notes.at(-1)}`);

    // 4. A CI day, then the incremental as deployed.
    const day = simulateCiDay(gen);
    log(`s3: simulated a CI day (${day.newArtifacts} new artifacts, +2% database)...`);
    await sleep(2000); // the watcher's last events; a new backup timestamp
    await settle();
    log(`s3: incremental backup, boxback to S3 (load ${load()})...`);
    const b = await daemonA.backup('s3-incr');
    figures.s3_incremental_s = b.seconds;
    figures.s3_incremental_agent_cpu_s = b.agentCpuSeconds;
    Object.assign(figures, phaseFigures('s3_incremental_', b.manifest));
    figures.s3_incremental_journaled_trees = b.manifest.trees.filter((t) => t.syncMode === 'journal').length;
    for (const t of b.manifest.trees)
      if (t.syncMode !== 'journal') notes.push(`S3 INCREMENTAL: tree ${t.name} made a full pass: ${t.syncReason}`);
    boundFigures('incremental', daemonA, 's3-incr');
    const cb = committedLine(daemonA.agent.output(), 's3-incr');
    if (cb)
      Object.assign(figures, {
        s3_incremental_new_bytes: cb.newBytes,
        s3_incremental_deflated_bytes: cb.storedBytes,
        s3_incremental_packs: cb.packs,
      });
    Object.assign(figures, commitFigures('s3_incremental_', cb));
    if (hasRestic) {
      await settle();
      log(`s3: incremental backup, restic to S3 (load ${load()})...`);
      const t = await timed(() => restic(['backup', '-q', ...resticPaths]));
      figures.restic_s3_incremental_s = t.s;
      figures.restic_s3_incremental_cpu_s = t.cpu;
      figures.s3_incremental_vs_restic_ratio = figures.s3_incremental_s / figures.restic_s3_incremental_s;
    }
    notes.push(`s3 incremental: ours ${f2(figures.s3_incremental_s)} s, restic ${f2(figures.restic_s3_incremental_s)} s (load ${load()})`);
    log(`  ${notes.at(-1)}`);
    notes.push(`s3 incremental timeline (s from its start; job ${f2(b.seconds)}): ${timeline(b.manifest)}`);
    log(`  ${notes.at(-1)}`);
    // what the archives copied from the previous backup's (zip-blocks.ts) instead of deflating again
    const reused = b.manifest.datasets.reduce((n, d) => n + (d.extra?.reusedBytes ?? 0), 0);
    figures.s3_incremental_archive_reused_bytes = reused;
    notes.push(
      `s3 incremental archives: ${b.manifest.datasets.map((d) => `${d.archive} ${mb(d.extra?.reusedBytes ?? 0)} of ${mb(d.bytes ?? 0)} MB reused`).join(', ')}`,
    );
    log(`  ${notes.at(-1)}`);
    if (logDir) writeFileSync(path.join(logDir, 'daemon-a.log'), daemonA.agent.output());

    // 5. Bytes stored on the server.
    const ours = await bucketBytes(rgw, bucket, prefix);
    figures.s3_stored_bytes = ours.bytes;
    figures.s3_stored_objects = ours.objects;
    if (hasRestic) {
      const theirs = await bucketBytes(rgw, resticBucket);
      figures.restic_s3_stored_bytes = theirs.bytes;
      figures.restic_s3_stored_objects = theirs.objects;
      figures.s3_stored_bytes_vs_restic_ratio = ours.bytes / theirs.bytes;
    }
    const artifactsA = treeTotals(boxA.artifacts);
    const reportsA = treeTotals(boxA.shine);
    await daemonA.stop();
    daemonA = undefined;
    await boxA.stop();
    if (only === 'incremental') {
      figures.s3_agent_backup_peak_rss_mb = mb(Math.max(a.peakRssBytes, b.peakRssBytes));
      figures.s3_load_average_1m = os.loadavg()[0];
      return { figures, notes };
    }

    // 6. Restore onto an empty box B from the bucket alone.
    const boxB = await createSampleBox({
      root: path.join(dir, 'box-b'),
      port: await freePort(),
      seed: seed + 1,
      hostname: 'bench-s3-b',
      address: '10.9.0.2',
      artifacts: 1,
      testReports: 1,
      dbBytes: 1 << 16,
      commits: 1,
    });
    for (const d of [boxB.artifacts, boxB.shine, boxB.plugins, boxB.addons]) {
      rmSync(d, { recursive: true, force: true });
      mkdirSync(d, { recursive: true });
    }
    hold(() => boxB.stop());
    await boxB.start();
    daemonB = await startDaemon({
      dir: path.join(dir, 'daemon-b'),
      name: `${HOST}-b`,
      planFile: boxB.planFile,
      store,
      stateDir: path.join(dir, 'state-b'),
      allowedRoots: [boxB.root],
      nodeArgs,
      env,
      readManifest,
      log,
    });
    await settle();
    log(`s3: restore onto an empty box, boxback from S3 (load ${load()})...`);
    const r = await daemonB.restore('s3-restore', b.result.backupPath, HOST);
    figures.s3_restore_s = r.dataPathSeconds;
    if (logDir) writeFileSync(path.join(logDir, 'daemon-b.log'), daemonB.agent.output());
    figures.s3_restore_job_s = r.seconds;
    figures.s3_restore_agent_cpu_s = r.agentCpuSeconds;
    for (const [k, v] of Object.entries(r.phases)) figures[`s3_restore_phase_${k.toLowerCase()}_s`] = v;
    for (const [k, v] of Object.entries(r.steps ?? {})) figures[`s3_restore_step_${k}_s`] = v;
    const artifactsB = treeTotals(boxB.artifacts);
    const reportsB = treeTotals(boxB.shine);
    if (JSON.stringify([artifactsA, reportsA]) !== JSON.stringify([artifactsB, reportsB]))
      throw new Error(
        `s3 restore: box B's trees ${JSON.stringify([artifactsB, reportsB])} are not box A's ${JSON.stringify([artifactsA, reportsA])}`,
      );
    if (hasRestic) {
      const out = path.join(dir, 'restore-restic');
      await settle();
      log(`s3: restore into an empty directory, restic from S3 (load ${load()})...`);
      const t = await timed(async () => {
        await restic(['restore', 'latest', '-q', '--target', out]);
        await run('sync', ['-f', out]);
      });
      figures.restic_s3_restore_s = t.s;
      figures.restic_s3_restore_cpu_s = t.cpu;
      figures.s3_restore_vs_restic_ratio = figures.s3_restore_s / figures.restic_s3_restore_s;
      rmSync(out, { recursive: true, force: true });
    }
    notes.push(
      `s3 restore: ours ${f2(figures.s3_restore_s)} s (job ${f2(figures.s3_restore_job_s)} s), restic ${f2(figures.restic_s3_restore_s)} s (load ${load()}); phases ${Object.entries(
        r.phases,
      )
        .map(([k, v]) => `${k} ${f2(v)}`)
        .join(', ')}`,
    );
    log(`  ${notes.at(-1)}`);

    // 7. The agent's peak RSS, and the highest RSS sampled in each phase (where the peak is);
    // memory.ts boundHeap's GCs (full and minor) and trims during each job (boundFigures).
    for (const [job, x] of [
      ['full', a],
      ['incremental', b],
      ['restore', r],
    ])
      for (const [ph, bytes] of Object.entries(x.rssByPhase ?? {})) figures[`s3_${job}_phase_${ph.toLowerCase()}_rss_mb`] = mb(bytes);
    boundFigures('restore', daemonB, 's3-restore');
    figures.s3_agent_backup_peak_rss_mb = mb(Math.max(a.peakRssBytes, b.peakRssBytes));
    figures.s3_agent_restore_peak_rss_mb = mb(r.peakRssBytes);
    figures.s3_agent_peak_rss_mb = Math.max(figures.s3_agent_backup_peak_rss_mb, figures.s3_agent_restore_peak_rss_mb);
    figures.s3_load_average_1m = os.loadavg()[0];
    notes.push(
      `s3 stored: ours ${mb(figures.s3_stored_bytes)} MB in ${figures.s3_stored_objects} objects, restic ${mb(figures.restic_s3_stored_bytes ?? 0)} MB in ${figures.restic_s3_stored_objects} objects; agent peak RSS ${figures.s3_agent_peak_rss_mb} MB`,
    );
    log(`  ${notes.at(-1)}`);
    await daemonB.stop();
    daemonB = undefined;
    await boxB.stop();
  } finally {
    await daemonA?.stop().catch(() => undefined);
    await daemonB?.stop().catch(() => undefined);
    // radosgw stopped by pid, the boxes' servers stopped, the section's directory removed
    for (const [fn, undo] of held.reverse()) {
      await Promise.resolve()
        .then(fn)
        .catch((err) => log(`s3: cleanup step failed: ${err.message ?? err}`));
      undo();
    }
  }
  return { figures, notes };
}

// Run alone: node bench/lib/s3-section.mjs [--size small] [--seed 42] [--dir DIR] [--no-restic] [--cpu-prof DIR] [--job-prof DIR]
//   [--only incremental] [--json]
// --only incremental: restic's full backup and both restores left out (ours' full backup is the
// incremental's previous one): the incremental's row, its phases and timeline, in a few minutes.
// --job-prof DIR also keeps the daemons' logs there (daemon-a.log, daemon-b.log); --log-dir DIR
// keeps them without the profiles.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values: args } = benchArgs(import.meta.url, {
    options: {
      size: { type: 'string', default: 'small' },
      seed: { type: 'string', default: '42' },
      dir: { type: 'string' },
      json: { type: 'boolean', default: false },
      'no-restic': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      'job-prof': { type: 'string' },
      'log-dir': { type: 'string' },
      only: { type: 'string' },
      timeout: { type: 'string', default: '3600' },
    },
  });
  const say = (m) => process.stderr.write(`${m}\n`);
  guard({ timeoutS: Number(args.timeout), log: say });
  mkdirSync(args.dir ?? os.tmpdir(), { recursive: true });
  if (args['job-prof']) mkdirSync(args['job-prof'], { recursive: true });
  if (args['log-dir']) mkdirSync(args['log-dir'], { recursive: true });
  const root = mkdtempSync(path.join(args.dir ?? os.tmpdir(), 'boxback-s3-bench-'));
  onCleanup(() => rmSync(root, { recursive: true, force: true }));
  const hasRestic =
    !args['no-restic'] &&
    (await run('restic', ['version']).then(
      () => true,
      () => false,
    ));
  try {
    const { figures, notes } = await s3SectionFor(args, { root, hasRestic, log: say });
    for (const k of Object.keys(figures)) if (!Number.isInteger(figures[k])) figures[k] = Math.round(figures[k] * 1000) / 1000;
    if (args.json) process.stdout.write(`${JSON.stringify(figures)}\n`);
    else for (const [k, v] of Object.entries(figures)) process.stdout.write(`${k.padEnd(44)} ${v}\n`);
    say(notes.join('\n'));
  } catch (err) {
    say(`s3 bench failed: ${err.stack ?? err}`);
    process.exitCode = 1;
  }
  await stopEverything(say);
}
