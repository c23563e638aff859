#!/usr/bin/env node
// `npm run quickstart`: the main job on embedded defaults, on loopback, in a scratch dir.
//
//  1. certificates for a controller and two agents (one fleet CA)
//  2. a GoCD-like services box: its database a real H2 TCP server (libh2-java) that a writer
//     keeps committing numbered rows to, and rewriting old ones, during the backups
//  3. start a controller (SQLite catalog) and an agent for the box, register the host
//  4. back it up, change it, back it up again, list the backups
//  5. restore the first backup onto a second, fresh box (its own agent and addresses)
//  6. prove the bytes equal, the host file rewritten, the restored service healthy, and the
//     database: backup 1 opened by H2 holds rows 1..K with no gap (its counter row says K),
//     and the restored box's H2 server serves exactly those rows
//  7. print a summary with timings and stop everything it started
//
// Options: --dir DIR (default ./.boxback/quickstart), --keep (leave the scratch dir),
// --serve (keep the controller, its dashboard and the agents running until Ctrl-C).
// The controller serves the dashboard on 127.0.0.1; its URL is printed once the hosts are added.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, startCluster } from './lib/cluster.mjs';
import { h2Prefix, startH2Writer } from './lib/h2-ctl.mjs';
import { createSampleBox } from './lib/sample-box.mjs';
import { diffSnapshots, liveParts, snapshotTree } from './lib/tree-snapshot.mjs';

const { values } = parseArgs({ options: { dir: { type: 'string' }, keep: { type: 'boolean' }, serve: { type: 'boolean' } } });
const dir = path.resolve(values.dir ?? '.boxback/quickstart');
const t0 = Date.now();
const timings = [];
const say = (s) => process.stdout.write(`${s}\n`);
async function step(name, fn) {
  const t = Date.now();
  say(`\n== ${name}`);
  const r = await fn();
  timings.push([name, Date.now() - t]);
  return r;
}

async function cliOk(c, args, { show = true } = {}) {
  const r = await c.cli(args, show ? { onStdout: (s) => process.stdout.write(s) } : {});
  if (r.code !== 0) throw new Error(`boxback ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return r;
}

let cluster;
let writer;
let boxes = [];
try {
  rmSync(dir, { recursive: true, force: true });
  const box1 = await step('create a sample GoCD box with a running server', async () => {
    const b = await createSampleBox({
      root: path.join(dir, 'box1'),
      port: await freePort(),
      seed: 1,
      hostname: 'gocd-box-1',
      address: '10.20.0.11',
      h2Port: await freePort(),
    });
    await b.start();
    boxes.push(b);
    say(`box1 at ${b.root}, server healthy: ${await b.healthy()}, H2 serving ${b.h2.url}`);
    return b;
  });
  const box2 = await step('create a fresh second box to restore onto', async () => {
    const b = await createSampleBox({
      root: path.join(dir, 'box2'),
      port: await freePort(),
      seed: 2,
      hostname: 'gocd-box-2',
      address: '10.20.0.12',
      artifacts: 3,
      testReports: 1,
      h2Port: await freePort(),
    });
    await b.start();
    boxes.push(b);
    return b;
  });
  cluster = await step('certificates, controller and agents on loopback', async () => {
    const c = await startCluster({ dir, dashboard: true });
    await c.addAgent({ name: 'gocd1', box: box1 });
    await c.addAgent({ name: 'gocd2', box: box2 });
    await cliOk(c, ['hosts', 'add', 'gocd1', '--address', c.agents.gocd1.address]);
    await cliOk(c, ['hosts', 'add', 'gocd2', '--address', c.agents.gocd2.address]);
    say(
      `dashboard: ${c.dashboardUrl} (the controller's certificate, CA ${path.join(c.certs, 'ca.crt')}; sign in with the token in ${c.cliConfig})`,
    );
    return c;
  });

  // What backup 1 must hold: every file but the live database, hashed now.
  const before = snapshotTree(box1.root, liveParts(box1));

  // A writer commits numbered rows to box1's H2 (and rewrites old ones) through both backups.
  writer = startH2Writer(box1.h2.url, 1);
  await step('backup 1 of gocd1 (H2 copied online by BACKUP TO, the rest quiesced)', () =>
    cliOk(cluster, ['backup', 'create', '--host', 'gocd1', '--yes']),
  );
  await step('change the box: a config edit, new artifacts, a deleted report', async () => {
    const { appendFileSync, writeFileSync, mkdirSync } = await import('node:fs');
    appendFileSync(path.join(box1.configDir, 'cruise-config.xml'), '<!-- edited after backup 1 -->\n');
    mkdirSync(path.join(box1.artifacts, 'pipelines/pipe-9/1'), { recursive: true });
    writeFileSync(path.join(box1.artifacts, 'pipelines/pipe-9/1/new.log'), 'built after backup 1\n');
    rmSync(path.join(box1.shine, 'pipe-0/0/junit.xml'));
  });
  await step('backup 2 of gocd1 (unchanged artifacts cost a hard link)', () =>
    cliOk(cluster, ['backup', 'create', '--host', 'gocd1', '--yes']),
  );
  await writer.stop();
  writer = undefined;
  const list = await step('list backups', async () => {
    await cliOk(cluster, ['backups']);
    const r = await cliOk(cluster, ['backups', '--host', 'gocd1', '--json'], { show: false });
    return JSON.parse(r.stdout);
  });
  const backups = (Array.isArray(list) ? list : list.backups).slice().sort((a, b) => Date.parse(a.createdAt) - Date.parse(b.createdAt));
  const first = backups[0];
  say(`first backup: ${first.id}`);

  const restoreJob = await step(`restore ${first.id} onto gocd2 (a fresh box)`, async () => {
    const r = await cliOk(cluster, ['backup', 'restore', first.id, '--target', 'gocd2', '--yes', '--json'], { show: false });
    const { job, result } = JSON.parse(r.stdout);
    say(`${result.status} in ${(result.durationMs / 1000).toFixed(1)} s (job ${job.id})`);
    return job;
  });

  const results = await step('prove it', async () => {
    const after = snapshotTree(box2.root, liveParts(box2));
    // Paths differ only by the box root; host files are rewritten on purpose.
    const envRel = path.relative(box1.root, box1.envFile);
    const differ = diffSnapshots(before, after).filter((k) => k !== envRel);
    const env = readFileSync(box2.envFile, 'utf8');
    // The database as backup 1 holds it, opened by H2 from a throwaway copy: rows 1..K, no gap.
    const backupDir = path.join(cluster.store, 'gocd1', `backup_${first.id.split('@')[1]}`);
    const open = mkdtempSync(path.join(dir, 'open-'));
    execFileSync('unzip', ['-q', path.join(backupDir, 'db.zip'), '-d', open]);
    const inBackup = h2Prefix(`jdbc:h2:file:${path.join(open, 'cruise')};IFEXISTS=TRUE`);
    rmSync(open, { recursive: true, force: true });
    // What box2's H2 server (restarted by the restore) serves, and what box1 holds by now.
    const restored = h2Prefix(box2.h2.url);
    const live = h2Prefix(box1.h2.url);
    return {
      filesCompared: Object.keys(before).length,
      differ,
      hostFileRewritten: env.includes('gocd-box-2') && env.includes('10.20.0.12') && !env.includes('10.20.0.11'),
      dbConsistentPrefix:
        inBackup.consistent &&
        inBackup.rows > 0 &&
        restored.consistent &&
        restored.rows === inBackup.rows &&
        live.consistent &&
        live.rows >= inBackup.rows,
      restoredRecords: inBackup.rows,
      liveRows: live.rows,
      healthy: await box2.healthy(),
    };
  });
  say(`files compared: ${results.filesCompared}, differing: ${results.differ.length ? results.differ.join(', ') : 'none'}`);
  say(
    `database: backup 1 opened by H2 holds rows 1..${results.restoredRecords} with no gap, and the restored H2 serves exactly those: ${results.dbConsistentPrefix} (box1 holds ${results.liveRows} rows by now)`,
  );
  say(`host file rewritten for gocd2's hostname and address: ${results.hostFileRewritten}`);
  say(`restored server healthy: ${results.healthy}`);
  await step('confirm the restore (drops the safety copies of the old data)', () => cliOk(cluster, ['restore', 'confirm', restoreJob.id]));
  await step('status', () => cliOk(cluster, ['status']));
  const ok = results.differ.length === 0 && results.hostFileRewritten && results.dbConsistentPrefix && results.healthy;

  say('\n== summary');
  for (const [name, ms] of timings) say(`${(ms / 1000).toFixed(2).padStart(7)} s  ${name}`);
  say(`${((Date.now() - t0) / 1000).toFixed(2).padStart(7)} s  total`);
  say(ok ? '\nquickstart OK: restored bytes equal the backed-up bytes' : '\nquickstart FAILED: see above');
  process.exitCode = ok ? 0 : 1;
  if (values.serve) {
    say(`\nserving the dashboard at ${cluster.dashboardUrl} until Ctrl-C`);
    await new Promise((resolve) => process.once('SIGINT', resolve));
  }
} catch (err) {
  process.stderr.write(`quickstart failed: ${err.message}\n`);
  process.exitCode = 1;
} finally {
  await writer?.stop();
  await cluster?.stop();
  for (const b of boxes) await b.stop().catch(() => undefined);
  if (!values.keep && process.exitCode === 0) rmSync(dir, { recursive: true, force: true });
  else say(`scratch dir kept: ${dir}`);
}
