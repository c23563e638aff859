// A controller that lost its catalog rebuilds it from the store, with the real controller and
// agent daemons, a local store directory and the real `boxback` CLI:
//   - two hosts back up (gocd-a twice, gocd-b once); the controller stops; its catalog file is
//     deleted; it starts again: `boxback backups` lists the same IDs, Restorable, with the
//     same sizes and consistency, and both hosts are registered, with no address, shown as such;
//   - `boxback store scan` (admin, audited) finds nothing more to add; a host and a backup
//     the catalog lost while running is registered again by it; a viewer may not run it.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, freePort, run, startCluster } from '../../scripts/lib/cluster.mjs';
import { createSampleBox } from '../../scripts/lib/sample-box.mjs';

type Cluster = Awaited<ReturnType<typeof startCluster>>;
interface BackupMsg {
  id: string;
  host: string;
  restorable: boolean;
  status: string;
  sizeBytes: number;
  consistency: string;
  createdAtMs: number;
}

let dir: string;
let cluster: Cluster;

async function json<T>(args: string[]): Promise<T> {
  const r = await cluster.cli(['--json', ...args]);
  expect(r.code, `boxback ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return JSON.parse(r.stdout) as T;
}
const listBackups = async () => {
  const p = await json<BackupMsg[] | { backups: BackupMsg[] }>(['backups']);
  return (Array.isArray(p) ? p : p.backups).map((b) => ({
    id: b.id,
    host: b.host,
    restorable: b.restorable,
    status: b.status,
    sizeBytes: Number(b.sizeBytes),
    consistency: b.consistency,
    createdAtMs: Number(b.createdAtMs),
  }));
};
const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id);

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-scan-'));
  cluster = await startCluster({ dir });
  for (const [name, seed] of [
    ['gocd-a', 5],
    ['gocd-b', 6],
  ] as const) {
    const box = await createSampleBox({ root: path.join(dir, name), port: await freePort(), seed, hostname: name, address: '10.1.0.5' });
    await cluster.addAgent({ name, box });
    const r = await cluster.cli(['hosts', 'add', name, '--address', cluster.agents[name].address]);
    expect(r.code, r.stderr).toBe(0);
  }
}, 300_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the catalog rebuilt from the store', () => {
  let before: Awaited<ReturnType<typeof listBackups>> = [];

  it('at start-up, when the catalog file was lost: the same backups, Restorable, same sizes', async () => {
    for (const host of ['gocd-a', 'gocd-b', 'gocd-a']) {
      const r = await cluster.cli(['backup', 'create', '--host', host, '--yes']);
      expect(r.code, r.stderr).toBe(0);
      await new Promise((res) => setTimeout(res, 1100)); // backup IDs are per second
    }
    before = (await listBackups()).sort(byId);
    expect(before).toHaveLength(3);
    expect(before.every((b) => b.restorable && b.sizeBytes > 0)).toBe(true);

    await cluster.controller.stop();
    const catalog = path.join(dir, 'catalog.db');
    for (const f of [catalog, `${catalog}-wal`, `${catalog}-shm`]) rmSync(f, { force: true });
    expect(existsSync(catalog)).toBe(false);
    // the admin token lived in the lost catalog: a new one, as an operator would make it
    const tok = await run([
      process.execPath,
      BIN.controller,
      '--config',
      cluster.controllerYaml,
      'token',
      'create',
      '--role',
      'admin',
      '--name',
      'after-loss',
    ]);
    expect(tok.code, tok.stderr).toBe(0);
    const cli = readFileSync(cluster.cliConfig, 'utf8').replace(
      /^token: .*$/m,
      `token: ${JSON.stringify(tok.stdout.trim().split('\n').pop()!.trim())}`,
    );
    writeFileSync(cluster.cliConfig, cli, { mode: 0o600 });
    await cluster.restartController();

    const after = (await listBackups()).sort(byId);
    expect(after).toEqual(before);
    expect(after.map((b) => b.id)).toEqual(before.map((b) => b.id));

    const hosts = await cluster.cli(['hosts', 'list']);
    expect(hosts.code, hosts.stderr).toBe(0);
    expect(hosts.stdout).toMatch(/gocd-a\s+\(none: found in the store\)/);
    expect(hosts.stdout).toMatch(/gocd-b\s+\(none: found in the store\)/);
    const status = await cluster.cli(['status']);
    expect(status.stdout).toContain('gocd-a: host gocd-a has no agent address (found in the store)');
  }, 300_000);

  it('boxback store scan: nothing new the second time; a host removed while running is registered again', async () => {
    const again = await cluster.cli(['store', 'scan']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`scanned ${path.join(dir, 'store')}: 2 host(s) with backups`);
    expect(again.stdout).toContain('added 0 backup(s) to the catalog');

    const rm = await cluster.cli(['hosts', 'remove', 'gocd-b']);
    expect(rm.code, rm.stderr).toBe(0);
    const hl = await json<Array<{ name: string }> | { hosts: Array<{ name: string }> }>(['hosts', 'list']);
    expect((Array.isArray(hl) ? hl : hl.hosts).map((h) => h.name)).toEqual(['gocd-a']);

    const scan = await cluster.cli(['store', 'scan']);
    expect(scan.code, scan.stderr).toBe(0);
    expect(scan.stdout).toContain('registered 1 host(s) with no agent address: gocd-b');
    expect(scan.stdout).toContain('boxback hosts set NAME --address HOST:PORT');
    expect((await listBackups()).sort(byId)).toEqual(before);

    const audit = await cluster.cli(['audit', '--json']);
    expect(audit.stdout).toMatch(/ScanStore|store scan/);

    const v = await cluster.cli(['tokens', 'create', '--name', 'vic', '--role', 'viewer']);
    expect(v.code, v.stderr).toBe(0);
    const denied = await cluster.cli(['--token', v.stdout.trim().split('\n').pop()!.trim(), 'store', 'scan']);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/^boxback: BOXBACK_ERR_\w+: .*rebuild the catalog from the store/m);
  }, 300_000);
});
