// The shape of the CLI's output, through the real `boxback` and controller daemon with stub
// agents over mutual TLS: `status --exit-code` for cron and monitoring (exit 9, one stderr
// line per host DOWN or AT RISK).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControllerClient } from '../../packages/controller/src/cli/connection.js';
import { cli, createTokenLocal, makeCerts, startController, until, writeControllerYaml, type ControllerProc } from './helpers.js';
import { startStubAgent, type StubAgent } from './stub-agent.js';

let dir: string;
let controller: ControllerProc;
let env: { controller: string; ca: string; token: string };
let client: ControllerClient;
const agents: StubAgent[] = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-cli-shape-'));
  const certs = await makeCerts(dir);
  const store = path.join(dir, 'store');
  mkdirSync(store, { recursive: true });
  const configFile = writeControllerYaml(dir, 0, 'pollSeconds: 3600\ndefaultRpoSeconds: 1d\n');
  const token = await createTokenLocal(configFile, 'alice', 'admin');
  for (const name of ['fresh', 'nobackup', 'spare']) agents.push(await startStubAgent({ name, certs, store, backupMs: 50 }));
  controller = await startController(configFile);
  env = { controller: controller.address, ca: certs.ca, token };
  client = new ControllerClient(env);
  // set up through the RPC (each CLI run costs seconds on a loaded machine); the CLI is what is tested
  for (const a of agents) await client.call('AddHost', { name: a.name, address: a.address, rpoSeconds: a.name === 'spare' ? -1 : 0 });
  await backupNow('fresh');
}, 180_000);

async function backupNow(host: string): Promise<string> {
  const r = await client.call<{ jobs: Array<{ id: string }> }>('CreateBackup', { hosts: [host] });
  const job = await until(async () => {
    const j = await client.call<{ state: string; backupId: string }>('GetJob', { id: r.jobs[0].id });
    return j.state !== 'Queued' && j.state !== 'Running' ? j : undefined;
  });
  return job.backupId;
}

afterAll(async () => {
  client?.close();
  await controller?.stop();
  await Promise.all(agents.map((a) => a.stop()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('status --exit-code', () => {
  it('exits 9 naming each host DOWN or AT RISK on stderr; 0 once none is; plain status exits 0 regardless', async () => {
    await client.call('AddHost', { name: 'gone', address: '127.0.0.1:1', skipCheck: true });
    const plain = await cli(['status', '--refresh'], env);
    expect(plain.code, plain.stderr).toBe(0);

    const bad = await cli(['status', '--refresh', '--exit-code'], env);
    expect(bad.code).toBe(9);
    expect(bad.stdout).toMatch(/nobackup\s.*AT RISK/); // the table is still printed
    const lines = bad.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^boxback: gone DOWN: .+/);
    expect(lines.slice(1).sort()).toEqual([
      'boxback: gone AT RISK: no Restorable backup, RPO default',
      'boxback: nobackup AT RISK: no Restorable backup, RPO default',
    ]);
    // with --json stdout is still the JSON, the reasons still on stderr
    const j = await cli(['--json', 'status', '--exit-code'], env);
    expect(j.code).toBe(9);
    expect(JSON.parse(j.stdout).atRiskHosts).toBe(2);
    expect(j.stderr).toContain('boxback: nobackup AT RISK');

    await client.call('RemoveHost', { name: 'gone' });
    await backupNow('nobackup');
    const good = await cli(['status', '--exit-code'], env);
    expect(good.code, good.stderr).toBe(0);
    expect(good.stderr).toBe('');

    const watch = await cli(['status', '--exit-code', '--watch'], env);
    expect(watch.code).toBe(2);
    expect(watch.stderr).toMatch(/^boxback: BOXBACK_ERR_USAGE: --exit-code needs a status that ends/);
  }, 180_000);
});
