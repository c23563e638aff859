// One real path end to end: the boxback CLI asks the controller, the controller asks the
// agent over mutual TLS, the agent backs up a GoCD-like box with a running server into
// the store, the catalog lists it, and a restore puts the same bytes back — in place, and
// onto a second box whose host file is rewritten for its own hostname and address.
import { createHash } from 'node:crypto';
import { appendFileSync, lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startCluster } from '../../scripts/lib/cluster.mjs';
import { createSampleBox } from '../../scripts/lib/sample-box.mjs';

type Box = Awaited<ReturnType<typeof createSampleBox>>;
type Cluster = Awaited<ReturnType<typeof startCluster>>;

function snapshot(root: string, skip: (rel: string) => boolean): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name);
      const rel = path.relative(root, p);
      if (skip(rel)) continue;
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isSymbolicLink()) out[rel] = `-> ${readlinkSync(p)}`;
      else out[rel] = `${(st.mode & 0o777).toString(8)} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
    }
  };
  walk(root);
  return out;
}

let dir: string;
let cluster: Cluster;
let box1: Box;
let box2: Box;
const live = (box: Box) => (rel: string) =>
  rel === path.relative(box.root, box.dbFile) ||
  rel.startsWith('run') ||
  rel.startsWith('var/log') ||
  rel === 'plan.yaml' ||
  rel.includes('.boxback-safety-');
function safetyCopies(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = path.join(d, name);
      if (name.includes('.boxback-safety-')) out.push(path.relative(root, p));
      else if (lstatSync(p).isDirectory()) walk(p);
    }
  };
  walk(root);
  return out;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-e2e-'));
  box1 = await createSampleBox({ root: path.join(dir, 'box1'), port: await freePort(), seed: 7, hostname: 'gocd-a', address: '10.1.0.5' });
  box2 = await createSampleBox({ root: path.join(dir, 'box2'), port: await freePort(), seed: 8, hostname: 'gocd-b', address: '10.1.0.6', artifacts: 2 });
  await box1.start();
  await box2.start();
  cluster = await startCluster({ dir });
  await cluster.addAgent({ name: 'gocd-a', box: box1 });
  await cluster.addAgent({ name: 'gocd-b', box: box2 });
  for (const n of ['gocd-a', 'gocd-b']) {
    const r = await cluster.cli(['hosts', 'add', n, '--address', cluster.agents[n].address]);
    expect(r.code, r.stderr).toBe(0);
  }
});

afterAll(async () => {
  await cluster?.stop();
  await box1?.stop().catch(() => undefined);
  await box2?.stop().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('backup and restore through the CLI, controller and agent', () => {
  let backupId = '';
  let before: Record<string, string>;
  let dbAtBackup = '';

  it('backs up a box with a running server and lists the backup as restorable', async () => {
    before = snapshot(box1.root, live(box1));
    const r = await cluster.cli(['backup', 'create', '--host', 'gocd-a', '--yes']);
    expect(r.code, r.stderr).toBe(0);
    expect(await box1.healthy()).toBe(true);

    const list = await cluster.cli(['backups', '--json']);
    expect(list.code, list.stderr).toBe(0);
    const parsed = JSON.parse(list.stdout);
    const backups = Array.isArray(parsed) ? parsed : parsed.backups;
    expect(backups).toHaveLength(1);
    expect(backups[0]).toMatchObject({ host: 'gocd-a', consistency: 'quiesced', restorable: true, status: 'Completed' });
    backupId = backups[0].id;
    expect(backupId).toMatch(/^gocd-a@\d{8}-\d{6}$/);

    const table = await cluster.cli(['backups']);
    expect(table.stdout).toContain(backupId);
    expect(table.stdout).toMatch(/quiesced/);

    // GoCD's layout in the store, with the manifest.
    const bdir = path.join(cluster.store, 'gocd-a', `backup_${backupId.split('@')[1]}`);
    const names = readdirSync(bdir);
    expect(names).toEqual(expect.arrayContaining(['db.zip', 'config-dir.zip', 'wrapper-config-dir.zip', 'config-repo.zip', 'version.txt', 'manifest.json', 'artifacts', 'test-reports']));
    expect(readFileSync(path.join(bdir, 'version.txt'), 'utf8')).toBe(box1.version);
    const { execFileSync } = await import('node:child_process');
    dbAtBackup = execFileSync('unzip', ['-p', path.join(bdir, 'db.zip'), 'cruise.mv.db'], { maxBuffer: 1 << 30 }).toString('latin1');
  });

  it('restores in place: the bytes equal those backed up and the server runs again', async () => {
    appendFileSync(path.join(box1.configDir, 'cruise-config.xml'), '<!-- a bad edit -->\n');
    writeFileSync(path.join(box1.artifacts, 'stray.log'), 'not in the backup\n');
    rmSync(path.join(box1.shine, 'pipe-1'), { recursive: true });

    const r = await cluster.cli(['backup', 'restore', backupId, '--yes', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const { job, result } = JSON.parse(r.stdout);
    expect(result.status).toBe('Completed');
    expect(snapshot(box1.root, live(box1))).toEqual(before);
    expect(readFileSync(box1.dbFile, 'latin1').startsWith(dbAtBackup)).toBe(true);
    expect(await box1.healthy()).toBe(true);

    // The old data is kept aside until the operator confirms the restore.
    expect(safetyCopies(box1.root).length).toBeGreaterThan(0);
    const status = await cluster.cli(['status', '--refresh', '--json']);
    expect(status.stdout).toMatch(/"safetyCopies":\s*[1-9]/);
    const c = await cluster.cli(['restore', 'confirm', job.id]);
    expect(c.code, c.stderr).toBe(0);
    expect(safetyCopies(box1.root)).toEqual([]);
  });

  it('restores onto another box, rewriting its host file for its own address', async () => {
    const r = await cluster.cli(['backup', 'restore', backupId, '--target', 'gocd-b', '--yes']);
    expect(r.code, r.stderr).toBe(0);
    const env = readFileSync(box2.envFile, 'utf8');
    expect(env).toContain('-Dgo.server.hostname=gocd-b');
    expect(env).toContain('-Dgo.server.ip=10.1.0.6');
    expect(env).not.toContain('10.1.0.5');
    const envRel = path.relative(box1.root, box1.envFile);
    const other = snapshot(box2.root, live(box2));
    const mine = { ...before };
    delete mine[envRel];
    delete other[envRel];
    expect(other).toEqual(mine);
    expect(await box2.healthy()).toBe(true);
  });

  it('reports an unknown backup as one line with exit code 3', async () => {
    const r = await cluster.cli(['backup', 'restore', 'gocd-a@20000101-000000', '--yes']);
    expect(r.code).toBe(3);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^boxback: .*gocd-a@20000101-000000/);
  });
});
