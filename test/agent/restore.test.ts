// The restore engine over real files, the real stand-in server process, real zip/rsync:
// in place, onto a second box, refusals (tampered, newer version), rollback on a failed
// health check, dry run, safety copies, owners and id mapping.
import { execFileSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
  appendFileSync,
  lchownSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runRestore } from '../../packages/agent/src/restore/restore.js';
import { confirmRestore, listSafetyCopies } from '../../packages/agent/src/restore/safety-copies.js';
import { readRecords } from '../../packages/agent/src/restore/record.js';
import { makeBackup, snapshot, writeManifest, type MadeBackup } from '../helpers/make-backup.js';
import { healthySoon, job, restoreBox, restoreReq, type RestoreBox } from '../helpers/restore-box.js';

let dir: string;
let store: string;
let b1: RestoreBox;
let b2: RestoreBox;
let backup: MadeBackup;
let atBackup: Record<string, string>;
let dbAtBackup: Buffer;

const skipLive = (b: RestoreBox) => {
  const db = path.relative(b.box.root, b.box.dbFile);
  return (rel: string) => rel === db || rel.startsWith('run') || rel.startsWith('var/log') || rel === 'plan.yaml';
};
const withoutCopies = (rel: string) => rel.includes('.boxback-');

/** Copy a backup to another timestamp (to tamper with it or change its version). */
function copyBackup(b: MadeBackup, ts: string): MadeBackup {
  const rel = `${path.dirname(b.rel)}/backup_${ts}`;
  const to = path.join(store, rel);
  cpSync(b.dir, to, { recursive: true, verbatimSymlinks: true });
  return { dir: to, rel, id: b.id, manifest: b.manifest };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-restore-'));
  store = path.join(dir, 'store');
  b1 = await restoreBox({ root: path.join(dir, 'box1'), name: 'gocd1', store, stateDir: path.join(dir, 'state1'), seed: 1 });
  b2 = await restoreBox({
    root: path.join(dir, 'box2'),
    name: 'gocd2',
    store,
    stateDir: path.join(dir, 'state2'),
    seed: 2,
    hostname: 'gocd-box-2',
    address: '10.20.0.22',
  });
  backup = makeBackup({ plan: b1.config.plan, store, host: 'gocd1', hostname: b1.box.hostname, addresses: [b1.box.address] });
  atBackup = snapshot(b1.box.root, skipLive(b1));
  dbAtBackup = readFileSync(b1.box.dbFile);
});

afterAll(async () => {
  await b1?.box.stop().catch(() => undefined);
  await b2?.box.stop().catch(() => undefined);
  await b3?.box.stop().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('restore in place', () => {
  it('puts the backup back byte for byte, starts the service healthy, keeps a safety copy', async () => {
    // The box drifts after the backup: new, changed and deleted files everywhere.
    writeFileSync(path.join(b1.box.configDir, 'keystore'), 'changed');
    rmSync(path.join(b1.box.configDir, 'truststore'));
    writeFileSync(path.join(b1.box.db, 'stale.db'), 'stale');
    writeFileSync(path.join(b1.box.artifacts, 'pipelines', 'new-artifact.log'), 'new');
    rmSync(path.join(b1.box.shine, 'pipe-0'), { recursive: true });
    await b1.box.start();

    const { ctx, events } = job(b1.config, 'r-inplace');
    const r = await runRestore(ctx, restoreReq(backup.rel));
    expect(r.errorMessage).toBe('');
    expect(r.status).toBe('Completed');
    expect(r.backupId).toBe(backup.id);
    expect(await b1.box.healthy()).toBe(true);
    const phases = [...new Set(events.map((e) => e.phase))];
    expect(phases).toEqual([
      'VERIFY',
      'VERSION_CHECK',
      'EXTRACT',
      'SYNC_TREES',
      'CHOWN',
      'STOP',
      'SWAP',
      'HOST_FILES',
      'CLEANUP',
      'START',
      'HEALTH_CHECK',
    ]);
    expect(events.some((e) => e.phase === 'EXTRACT' && (e.bytesDone ?? 0) > 0)).toBe(true);

    await b1.box.stop();
    expect(snapshot(b1.box.root, (rel) => skipLive(b1)(rel) || withoutCopies(rel))).toEqual(atBackup);
    // The database is the backup's, plus what the restarted server appended.
    expect(readFileSync(b1.box.dbFile).subarray(0, dbAtBackup.length).equals(dbAtBackup)).toBe(true);
    expect(readdirSync(path.dirname(b1.box.configDir)).filter((n) => n.includes('.boxback-staging-'))).toEqual([]);

    const copies = await listSafetyCopies(b1.config);
    expect(copies).toHaveLength(1);
    expect(copies[0].jobId).toBe('r-inplace');
    expect(copies[0].paths).toContain(`${b1.box.configDir}.boxback-safety-r-inplace`);
    expect(readFileSync(path.join(`${b1.box.configDir}.boxback-safety-r-inplace`, 'keystore'), 'utf8')).toBe('changed');
    expect(copies[0].sizeBytes).toBeGreaterThan(0);
  });

  it('confirm removes the safety copies', async () => {
    const before = (await listSafetyCopies(b1.config))[0];
    const r = await confirmRestore(b1.config, 'r-inplace', job(b1.config, 'x').ctx.log);
    expect(r.removed).toBe(before.paths.length);
    for (const p of before.paths) expect(existsSync(p)).toBe(false);
    expect(await listSafetyCopies(b1.config)).toEqual([]);
  });
});

describe('restore onto a second box', () => {
  it('dry run lists the steps and the host-file diff and changes nothing', async () => {
    const before = snapshot(b2.box.root);
    const cfg = { ...b2.config, hostname: 'gocd-box-9', addresses: ['10.20.0.99'] };
    const r = await runRestore(job(cfg, 'r-dry').ctx, restoreReq(backup.rel, { dryRun: true }));
    expect(r.errorMessage).toBe('');
    expect(r.status).toBe('Completed');
    expect(snapshot(b2.box.root)).toEqual(before);
    expect(existsSync(path.join(b2.config.stateDir, 'restores'))).toBe(false);
    const report = r.dryRunReport;
    if (process.env.SHOW_REPORT) console.log(report);
    const order = [
      'VERIFY',
      'VERSION_CHECK',
      'EXTRACT',
      'SYNC_TREES',
      'STOP',
      'SWAP',
      'HOST_FILES',
      'CLEANUP',
      'START',
      'HEALTH_CHECK',
      'ROLLBACK',
    ];
    const at = order.map((s) => report.indexOf(` ${s} `));
    expect(at.every((i) => i > 0)).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    expect(report).toContain(`--- ${b2.box.envFile} (now)`);
    expect(report).toContain('-GO_SERVER_SYSTEM_PROPERTIES="-Dgo.server.hostname=gocd-box-2 -Dgo.server.ip=10.20.0.22"');
    expect(report).toContain('+GO_SERVER_SYSTEM_PROPERTIES="-Dgo.server.hostname=gocd-box-9 -Dgo.server.ip=10.20.0.99"');
  });

  it("restores box 1's backup with box 2's hostname and address in its host file", async () => {
    await b2.box.start();
    const r = await runRestore(job(b2.config, 'r-box2').ctx, restoreReq(backup.rel));
    expect(r.errorMessage).toBe('');
    expect(r.status).toBe('Completed');
    expect(await b2.box.healthy()).toBe(true);
    await b2.box.stop();
    const env = readFileSync(b2.box.envFile, 'utf8');
    expect(env).toBe(
      readFileSync(path.join(b1.box.envFile), 'utf8').replace('gocd-box-1', 'gocd-box-2').replace('10.20.0.11', '10.20.0.22'),
    );
    // Only host files are rewritten: the config still names box 1.
    expect(readFileSync(path.join(b2.box.configDir, 'cruise-config.xml'), 'utf8')).toContain('gocd-box-1');
    const got = snapshot(b2.box.root, (rel) => skipLive(b2)(rel) || withoutCopies(rel));
    const want = { ...atBackup };
    const envRel = path.relative(b2.box.root, b2.box.envFile);
    delete want[envRel];
    delete got[envRel];
    expect(got).toEqual(want);
    expect(readFileSync(b2.box.dbFile).subarray(0, dbAtBackup.length).equals(dbAtBackup)).toBe(true);
  });
});

describe('refusals', () => {
  it('refuses a tampered backup and touches nothing', async () => {
    const bad = copyBackup(backup, '20261121-130000');
    const zip = path.join(bad.dir, 'db.zip');
    const buf = readFileSync(zip);
    buf[Math.floor(buf.length / 2)] ^= 0xff;
    writeFileSync(zip, buf);
    const before = snapshot(b1.box.root);
    const r = await runRestore(job(b1.config, 'r-tampered').ctx, restoreReq(bad.rel));
    expect(r.status).toBe('Failed');
    expect(r.errorCode).toBe('BOXBACK_ERR_VERIFY_FAILED');
    expect(r.failedStep).toBe('VERIFY');
    expect(r.errorMessage).toContain('db.zip');
    expect(snapshot(b1.box.root)).toEqual(before);
  });

  it('refuses a backup from a newer version, and --force restores it with a warning', async () => {
    const newer = copyBackup(backup, '20261121-140000');
    writeFileSync(path.join(newer.dir, 'version.txt'), '99.1.0 (99999-abcdef)');
    writeManifest(newer.dir, { ...newer.manifest, product: { name: 'gocd', version: '99.1.0 (99999-abcdef)' } });
    const before = snapshot(b1.box.root);
    const r = await runRestore(job(b1.config, 'r-newer').ctx, restoreReq(newer.rel));
    expect(r.status).toBe('Failed');
    expect(r.errorCode).toBe('BOXBACK_ERR_VERSION_NEWER');
    expect(r.failedStep).toBe('VERSION_CHECK');
    expect(r.errorMessage).toMatch(/99\.1\.0.*23\.1\.0/);
    expect(snapshot(b1.box.root)).toEqual(before);

    const forced = await runRestore(job(b1.config, 'r-forced').ctx, restoreReq(newer.rel, { force: true }));
    expect(forced.status).toBe('Completed');
    expect(forced.warnings.join('\n')).toMatch(/FORCED.*99\.1\.0/);
    await b1.box.stop();
  });
});

describe('rollback', () => {
  it('puts the old data back and restarts the service when the health check fails', async () => {
    writeFileSync(path.join(b1.box.configDir, 'local-change.xml'), '<keep-me/>');
    appendFileSync(path.join(b1.box.artifacts, 'pipelines', 'pipe-1', '1', 'build', 'job', 'out-1.log'), 'more');
    const before = snapshot(b1.box.root, skipLive(b1));
    const dbBefore = readFileSync(b1.box.dbFile);
    await b1.box.start();
    const cfg = b1.withPlan((p) => ({
      ...p,
      health: { ...p.health!, http: { url: 'http://127.0.0.1:9/health', expectStatus: [200] }, timeoutSeconds: 2, intervalSeconds: 0.5 },
    }));
    const { ctx, events } = job(cfg, 'r-rollback');
    const r = await runRestore(ctx, restoreReq(backup.rel));
    expect(r.status).toBe('RolledBack');
    expect(r.failedStep).toBe('HEALTH_CHECK');
    expect(r.errorCode).toBe('BOXBACK_ERR_HEALTH_CHECK_FAILED');
    expect(events.some((e) => e.phase === 'ROLLBACK' && e.state === 'done')).toBe(true);
    expect(r.warnings.join('\n')).toMatch(/after the rollback the services are running but not healthy/);
    expect(await healthySoon(b1.box)).toBe(true);
    await b1.box.stop();
    expect(snapshot(b1.box.root, skipLive(b1))).toEqual(before);
    expect(readFileSync(b1.box.dbFile).subarray(0, dbBefore.length).equals(dbBefore)).toBe(true);
    const rec = (await readRecords(b1.config.stateDir)).find((x) => x.jobId === 'r-rollback')!;
    expect(rec.status).toBe('rolled-back');
    expect(rec.failedStep).toBe('HEALTH_CHECK');
    expect((await listSafetyCopies(b1.config)).map((c) => c.jobId)).not.toContain('r-rollback');
  });
});

let b3: RestoreBox | undefined;
describe('owners', () => {
  it('chowns to the plan owner resolved on this box, and maps uids/gids from the backup', async () => {
    const user = 'boxback-test';
    try {
      execFileSync('id', ['-u', user], { stdio: 'ignore' });
    } catch {
      execFileSync('useradd', ['--system', '--user-group', '--no-create-home', user]);
    }
    const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
    b3 = await restoreBox({
      root: path.join(dir, 'box3'),
      name: 'gocd3',
      store,
      stateDir: path.join(dir, 'state3'),
      seed: 3,
      hostname: 'gocd-box-3',
      address: '10.20.0.33',
    });
    const owner = { user, group: user };
    const cfg = b3.withPlan((p) => ({
      ...p,
      datasets: p.datasets.map((d) => (d.name === 'config' || d.name === 'env' ? { ...d, owner } : d)),
      trees: p.trees.map((t) => (t.name === 'artifacts' ? { ...t, owner } : t)),
      restore: { ...p.restore, uidMap: { '4321': uid }, gidMap: { '4322': gid } },
    }));
    const made = makeBackup({ plan: cfg.plan, store, host: 'gocd3', hostname: 'gocd-box-3', addresses: ['10.20.0.33'] });
    // The source box's test reports belonged to ids this box does not have.
    const shine = path.join(made.dir, 'test-reports');
    execFileSync('chown', ['-R', '-h', '4321:4322', shine]);
    lchownSync(shine, 0, 0);
    writeManifest(made.dir, made.manifest);
    const r = await runRestore(job(cfg, 'r-owners').ctx, restoreReq(made.rel));
    expect(r.errorMessage).toBe('');
    expect(r.status).toBe('Completed');
    await b3.box.stop();
    const owners = (root: string) => {
      const out = new Set<string>();
      const walk = (p: string) => {
        const st = statSync(p, { throwIfNoEntry: true });
        out.add(`${st.uid}:${st.gid}`);
        if (st.isDirectory()) for (const n of readdirSync(p)) walk(path.join(p, n));
      };
      for (const n of readdirSync(root)) walk(path.join(root, n));
      return [...out];
    };
    expect(owners(b3.box.configDir)).toEqual([`${uid}:${gid}`]);
    expect(statSync(b3.box.configDir).uid).toBe(uid);
    expect(owners(b3.box.artifacts)).toEqual([`${uid}:${gid}`]);
    expect(owners(b3.box.shine)).toEqual([`${uid}:${gid}`]);
    expect(statSync(b3.box.envFile).uid).toBe(uid);
    expect(owners(b3.box.db)).toEqual(['0:0']);
  });
});
