// One real path end to end: the boxback CLI asks the controller, the controller asks the
// agent over mutual TLS, the agent backs up a GoCD-like box with a running server into
// the store, the catalog lists it, and a restore puts the same bytes back — in place, and
// onto a second box whose host file is rewritten for its own hostname and address.
import { appendFileSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startCluster } from '../../scripts/lib/cluster.mjs';
import { h2Prefix, startH2Writer } from '../../scripts/lib/h2-ctl.mjs';
import { createSampleBox } from '../../scripts/lib/sample-box.mjs';
import { liveParts, snapshotTree as snapshot } from '../../scripts/lib/tree-snapshot.mjs';

type Box = Awaited<ReturnType<typeof createSampleBox>>;
type Cluster = Awaited<ReturnType<typeof startCluster>>;

let dir: string;
let cluster: Cluster;
let box1: Box;
let box2: Box;
const live = liveParts;
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
  // Both boxes' databases are real H2 TCP servers (kind: h2), as on a GoCD box with H2 over TCP.
  box1 = await createSampleBox({
    root: path.join(dir, 'box1'),
    port: await freePort(),
    seed: 7,
    hostname: 'gocd-a',
    address: '10.1.0.5',
    h2Port: await freePort(),
  });
  box2 = await createSampleBox({
    root: path.join(dir, 'box2'),
    port: await freePort(),
    seed: 8,
    hostname: 'gocd-b',
    address: '10.1.0.6',
    artifacts: 2,
    h2Port: await freePort(),
  });
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
  let inBackup: ReturnType<typeof h2Prefix>;

  it('backs up a box with a running server and lists the backup as restorable', async () => {
    before = snapshot(box1.root, live(box1));
    // A writer commits numbered rows to H2 (and rewrites old ones) during the backup.
    const writer = startH2Writer(box1.h2!.url, 1);
    let r;
    try {
      await new Promise((res) => setTimeout(res, 1000));
      r = await cluster.cli(['backup', 'create', '--host', 'gocd-a', '--yes']);
    } finally {
      await writer.stop();
    }
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
    expect(names).toEqual(
      expect.arrayContaining([
        'db.zip',
        'config-dir.zip',
        'wrapper-config-dir.zip',
        'config-repo.zip',
        'version.txt',
        'manifest.json',
        'artifacts',
        'test-reports',
      ]),
    );
    expect(readFileSync(path.join(bdir, 'version.txt'), 'utf8')).toBe(box1.version);
    const { execFileSync } = await import('node:child_process');
    // The database as the backup holds it, opened by H2 from a throwaway copy: rows 1..K, no gap.
    const open = mkdtempSync(path.join(dir, 'open-'));
    execFileSync('unzip', ['-q', path.join(bdir, 'db.zip'), '-d', open]);
    inBackup = h2Prefix(`jdbc:h2:file:${path.join(open, 'cruise')};IFEXISTS=TRUE`);
    rmSync(open, { recursive: true, force: true });
    expect(inBackup.consistent).toBe(true);
    expect(inBackup.rows).toBeGreaterThan(0);
    const get = await cluster.cli(['backup', 'get', backupId]);
    expect(get.stdout).toMatch(
      /dataset database +db\.zip .*h2, the engine's online copy; probe ok in [\d.]+ s \(H2 opened a throwaway copy and ran SCRIPT/,
    );
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
    // The restarted H2 serves exactly the rows the backup holds (the writer's later ones are gone).
    expect(h2Prefix(box1.h2!.url)).toEqual(inBackup);
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
    expect(h2Prefix(box2.h2!.url)).toEqual(inBackup);
    expect(await box2.healthy()).toBe(true);
  });

  it('imports a backup directory GoCD itself made and restores it', async () => {
    const { execFileSync } = await import('node:child_process');
    const { mkdirSync } = await import('node:fs');
    // Laid out as GoCD lays it: zips of the directories' content made by Info-ZIP, a
    // version.txt without a newline, no manifest, no artifacts.
    const gocd = path.join(dir, 'gocd-made', 'backup_20250102-030405');
    mkdirSync(gocd, { recursive: true });
    const zipDir = (src: string, name: string) => execFileSync('zip', ['-q', '-r', '-y', path.join(gocd, name), '.'], { cwd: src });
    const h2 = path.join(dir, 'gocd-made', 'h2');
    mkdirSync(h2, { recursive: true });
    writeFileSync(path.join(h2, 'cruise.h2.db'), 'record 1 from an older GoCD\n');
    zipDir(h2, 'db.zip');
    zipDir(box1.configDir, 'config-dir.zip');
    zipDir(box1.configRepo, 'config-repo.zip');
    writeFileSync(path.join(gocd, 'version.txt'), '22.3.0 (15301-abcdef)');
    const configBefore = snapshot(box1.configDir, () => false);

    const imp = await cluster.cli(['backup', 'import', gocd, '--host', 'gocd-a', '--json']);
    expect(imp.code, imp.stderr).toBe(0);
    const imported = JSON.parse(imp.stdout);
    const id = imported.id ?? imported.backup?.id;
    expect(id).toBe('gocd-a@20250102-030405');

    appendFileSync(path.join(box1.configDir, 'cruise-config.xml'), '<!-- changed after the GoCD backup -->\n');
    const r = await cluster.cli(['backup', 'restore', id, '--yes']);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(path.join(box1.db, 'cruise.h2.db'), 'utf8')).toBe('record 1 from an older GoCD\n');
    expect(snapshot(box1.configDir, () => false)).toEqual(configBefore);
    expect(await box1.healthy()).toBe(true);
  });

  it('reports an unknown backup as one line with exit code 3', async () => {
    const r = await cluster.cli(['backup', 'restore', 'gocd-a@20000101-000000', '--yes']);
    expect(r.code).toBe(3);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^boxback: .*gocd-a@20000101-000000/);
  });
});
