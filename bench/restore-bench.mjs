// Restore bench: boxback's whole restore (verify every checksum and zip CRC, stage, chown,
// stop, swap, start, health check) against what an administrator runs by hand for the same
// backup: `unzip` of every archive plus `rsync -a` of every tree into empty directories.
// Beside it, `restic restore` of the same box, where restic is installed.
//
//   import { benchRestore } from './restore-bench.mjs';
//   const r = await benchRestore({ dir, artifacts: 3000, dbBytes: 200 << 20, runs: 3 });
//
// Standalone: node bench/restore-bench.mjs [--artifacts N] [--db-mib N] [--runs N] [--json]
// Needs the built packages (npm run build). Target: boxback <= 1.25x unzip + rsync.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchArgs } from './lib/cli-args.mjs';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const load = (rel) => import(pathToFileURL(path.join(repo, rel)).href);

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const time = async (fn) => {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
};
const has = (bin) => {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const duBytes = (p) => Number(execFileSync('du', ['-sb', p], { encoding: 'utf8' }).split('\t')[0]);

/**
 * @param {{ dir?: string, artifacts?: number, dbBytes?: number, runs?: number, log?: (s: string) => void }} o
 * @returns {Promise<{ bytes: number, files: number, boxback: number, dataPath: number, manual: number, ratio: number, restic: number | null, phases: Record<string, number> }>}
 */
export async function benchRestore(o = {}) {
  const log = o.log ?? ((s) => process.stderr.write(`${s}\n`));
  const runs = o.runs ?? 3;
  const dir = o.dir ?? mkdtempSync(path.join(os.tmpdir(), 'bb-restore-bench-'));
  const own = !o.dir;
  const { createSampleBox } = await load('scripts/lib/sample-box.mjs');
  const { loadPlan } = await load('packages/agent/dist/plan.js');
  const { runBackup } = await load('packages/agent/dist/backup/backup.js');
  const { runRestore } = await load('packages/agent/dist/restore/restore.js');
  const { confirmRestore } = await load('packages/agent/dist/restore/safety-copies.js');
  const { createLogger, readManifest } = await load('packages/common/dist/index.js');
  const box = await createSampleBox({
    root: path.join(dir, 'box'),
    port: await freePort(),
    seed: 11,
    artifacts: o.artifacts ?? 3000,
    dbBytes: o.dbBytes ?? 150 * 1024 * 1024,
    testReports: 500,
  });
  const store = path.join(dir, 'store');
  mkdirSync(store, { recursive: true });
  const plan = loadPlan(box.planFile, [box.root]);
  // The stand-in reads its whole database at start: give it time on a big one.
  if (plan.health) plan.health.timeoutSeconds = 300;
  const config = Object.freeze({
    file: path.join(dir, 'agent.yaml'),
    name: 'bench',
    listen: '127.0.0.1:0',
    tls: { ca: '', cert: '', key: '' },
    store: { kind: 'local', path: store },
    stateDir: path.join(dir, 'state'),
    planFile: box.planFile,
    plan,
    allowedRoots: [box.root],
    hostname: box.hostname,
    addresses: [box.address],
    allowedClients: [],
  });
  const logger = createLogger('bench', 'silent');
  const ctx = (jobId, events = []) => ({
    config,
    log: logger.child({ jobId }),
    jobId,
    signal: new AbortController().signal,
    emit: (u) => events.push({ ...u, at: Date.now() }),
  });
  try {
    await box.start();
    const b = await runBackup(ctx('bench-backup'), { jobId: 'bench-backup', live: false, initiatedBy: 'bench', initiatedVia: 'bench' });
    if (b.status !== 'Completed' && b.status !== 'PartiallyFailed') throw new Error(`backup failed: ${b.errorMessage}`);
    const backupDir = path.join(store, b.backupPath);
    const manifest = await readManifest(backupDir);
    const bytes = duBytes(backupDir);
    log(`restore bench: backup ${b.backupPath}, ${manifest.files.length} files, ${(bytes / 1048576).toFixed(0)} MiB`);

    // Alternate the manual way and boxback's, so both see the same machine load.
    const manualTimes = [];
    const boxTimes = [];
    const phaseRuns = [];
    for (let i = 0; i < runs; i++) {
      // The manual way: unzip each archive and rsync each tree into empty directories.
      const out = path.join(dir, `manual-${i}`);
      mkdirSync(out);
      manualTimes.push(
        await time(async () => {
          for (const d of manifest.datasets)
            execFileSync('unzip', ['-q', '-o', path.join(backupDir, d.archive), '-d', path.join(out, d.name)]);
          for (const t of manifest.trees) execFileSync('rsync', ['-a', `${path.join(backupDir, t.dir)}/`, `${path.join(out, t.dir)}/`]);
          execFileSync('sync', ['-f', out]);
        }),
      );
      rmSync(out, { recursive: true, force: true });

      const events = [];
      const jobId = `bench-restore-${i}`;
      let r;
      boxTimes.push(
        await time(
          async () =>
            (r = await runRestore(ctx(jobId, events), { jobId, backupPath: b.backupPath, dryRun: false, force: false, backupId: '' })),
        ),
      );
      if (r.status !== 'Completed') throw new Error(`restore failed: ${r.failedStep} ${r.errorMessage}`);
      // Each phase from its first event to its last (VERIFY overlaps the staging phases).
      const phases = {};
      const span = {};
      for (const e of events) {
        span[e.phase] ??= { from: e.at, to: e.at };
        span[e.phase].to = e.at;
      }
      for (const [k, v] of Object.entries(span)) phases[k] = (v.to - v.from) / 1000;
      phaseRuns.push(phases);
      await confirmRestore(config, jobId, logger);
      log(`  run ${i + 1}: unzip + rsync ${manualTimes[i].toFixed(2)} s, boxback ${boxTimes[i].toFixed(2)} s`);
    }
    const phases = {};
    for (const k of Object.keys(phaseRuns[0])) phases[k] = median(phaseRuns.map((p) => p[k] ?? 0));

    let restic = null;
    if (has('restic')) {
      const repoDir = path.join(dir, 'restic-repo');
      const env = { ...process.env, RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: repoDir };
      await box.stop();
      execFileSync('restic', ['init', '-q'], { env });
      execFileSync('restic', ['backup', '-q', path.join(box.root, 'var'), path.join(box.root, 'etc')], { env });
      await box.start();
      const times = [];
      for (let i = 0; i < runs; i++) {
        const out = path.join(dir, `restic-${i}`);
        times.push(await time(async () => execFileSync('restic', ['restore', 'latest', '-q', '--target', out], { env })));
        rmSync(out, { recursive: true, force: true });
      }
      restic = median(times);
    }
    const boxback = median(boxTimes);
    const manual = median(manualTimes);
    // The data path: what unzip + rsync stand for (no stop, start or health check of the service).
    const service = ['STOP', 'START', 'HEALTH_CHECK'].reduce((s, k) => s + (phases[k] ?? 0), 0);
    const dataPath = Math.max(0, boxback - service);
    return { bytes, files: manifest.files.length, boxback, dataPath, manual, ratio: dataPath / manual, restic, phases };
  } finally {
    await box.stop().catch(() => undefined);
    if (own) rmSync(dir, { recursive: true, force: true });
  }
}

export function formatRestoreBench(r) {
  const f = (s) => `${s.toFixed(2)} s`;
  const lines = [
    `restore of ${r.files} files, ${(r.bytes / 1048576).toFixed(0)} MiB (medians)`,
    `  boxback restore, whole job (verify .. health check)                ${f(r.boxback)}`,
    `  boxback data path (verify, stage, chown, sync, swap)               ${f(r.dataPath)}`,
    `  unzip + rsync -a + sync of the same backup                         ${f(r.manual)}`,
    `  ratio, data path vs unzip + rsync                                  ${r.ratio.toFixed(2)}x (target <= 1.25x)`,
    `  restic restore of the same box                                     ${r.restic === null ? 'restic not installed' : f(r.restic)}`,
    `  boxback phases (first to last event; VERIFY runs beside EXTRACT..CHOWN): ${Object.entries(r.phases)
      .map(([k, v]) => `${k} ${v.toFixed(2)}s`)
      .join(', ')}`,
  ];
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = benchArgs(import.meta.url, {
    options: { artifacts: { type: 'string' }, 'db-mib': { type: 'string' }, runs: { type: 'string' }, json: { type: 'boolean' } },
  });
  const r = await benchRestore({
    artifacts: values.artifacts ? Number(values.artifacts) : undefined,
    dbBytes: values['db-mib'] ? Number(values['db-mib']) * 1048576 : undefined,
    runs: values.runs ? Number(values.runs) : undefined,
  });
  process.stdout.write(values.json ? `${JSON.stringify(r, null, 2)}\n` : `${formatRestoreBench(r)}\n`);
}
