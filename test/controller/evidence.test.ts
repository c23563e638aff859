// Evidence that outlives retention, through the real controller daemon and CLI (stub agents
// over mutual TLS, as monitoring.test.ts): drills and verifies are recorded per source host;
// retention keeps the host's only drilled backup; once the backups are deleted, `boxback
// drills` still lists what was proven (marked deleted) and `boxback status` still shows the
// last passed drill.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, createTokenLocal, makeCerts, startController, until, writeControllerYaml, type ControllerProc } from './helpers.js';
import { startStubAgent, type StubAgent } from './stub-agent.js';

let dir: string;
let controller: ControllerProc;
let env: { controller: string; ca: string; token: string };
const agents: StubAgent[] = [];
const json = (s: string) => JSON.parse(s);

interface Evidence {
  host: string;
  kind: string;
  backupId: string;
  passed: boolean;
  durationMs: number;
  target: string;
  backupExists: boolean;
}

async function backupNow(host: string): Promise<string> {
  const r = await cli(['--json', 'backup', 'create', '--host', host, '--yes'], env);
  expect(r.code, r.stderr).toBe(0);
  return json(r.stdout).jobs[0].result.backupId;
}

const backupIds = async (host: string): Promise<string[]> =>
  json((await cli(['--json', 'backups', '--host', host], env)).stdout).map((b: { id: string }) => b.id);

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-evidence-'));
  const certs = await makeCerts(dir);
  const store = path.join(dir, 'store');
  mkdirSync(store, { recursive: true });
  const configFile = writeControllerYaml(dir, 0, `pollSeconds: 3600\nretention:\n  hosts:\n    e1: { keepManual: 1 }\n`);
  const token = await createTokenLocal(configFile, 'alice', 'admin');
  for (const name of ['e1', 'spare1']) agents.push(await startStubAgent({ name, certs, store, backupMs: 20 }));
  controller = await startController(configFile);
  env = { controller: controller.address, ca: certs.ca, token };
  for (const a of agents) expect((await cli(['hosts', 'add', a.name, '--address', a.address], env)).code).toBe(0);
});

afterAll(async () => {
  await controller?.stop();
  await Promise.all(agents.map((a) => a.stop()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('drill and verify evidence', () => {
  it("keeps the host's only drilled backup through retention, and thins it once another drill passed", async () => {
    const a = await backupNow('e1');
    expect((await cli(['drill', 'run', '--host', 'e1', '--on', 'spare1', '--yes'], env)).code).toBe(0);
    expect((await cli(['backup', 'verify', a], env)).code).toBe(0);
    const b = await backupNow('e1');
    const c = await backupNow('e1');
    // keepManual 1 keeps only the newest; the drilled one stays as the host's only proof
    await until(async () => !(await backupIds('e1')).includes(b), 30_000, 'retention after the third backup');
    expect(await backupIds('e1')).toEqual([c, a]);
    const pr = json((await cli(['--json', 'backups', 'prune', '--host', 'e1', '--dry-run'], env)).stdout);
    expect(pr.items.find((i: { id: string }) => i.id === a).reasons).toEqual(['only-drilled']);

    expect((await cli(['drill', 'run', '--host', 'e1', '--on', 'spare1', '--yes'], env)).code).toBe(0); // drills c
    const d = await backupNow('e1');
    await until(async () => (await backupIds('e1')).length === 1, 30_000, 'retention after the fourth backup');
    expect(await backupIds('e1')).toEqual([d]);

    // the evidence stays: both drills and the verify, their backups marked deleted
    const r = await cli(['--json', 'drills', '--host', 'e1'], env);
    expect(r.code, r.stderr).toBe(0);
    const ev = json(r.stdout) as Evidence[];
    expect(ev.map((e) => [e.kind, e.backupId, e.passed, e.backupExists])).toEqual([
      ['drill', c, true, false],
      ['verify', a, true, false],
      ['drill', a, true, false],
    ]);
    expect(ev[0]).toMatchObject({ host: 'e1', target: 'spare1' });
    expect(ev[0].durationMs).toBeGreaterThanOrEqual(0);
    const only = json((await cli(['--json', 'drills', '--host', 'e1', '--kind', 'drill'], env)).stdout) as Evidence[];
    expect(only.map((e) => e.kind)).toEqual(['drill', 'drill']);
    const human = await cli(['drills', '--host', 'e1'], env, { COLUMNS: '200' });
    expect(human.stdout).toMatch(new RegExp(`e1\\s+drill\\s+${c} \\(deleted\\)\\s+passed`));
    expect((await cli(['drills', '--kind', 'restore'], env)).code).toBe(2);

    // status still shows the last passed drill, of a backup that is gone
    const s = json((await cli(['--json', 'status'], env)).stdout);
    const e1 = s.hosts.find((h: { host: { name: string } }) => h.host.name === 'e1');
    expect(e1.lastDrillBackupId).toBe(c);
    expect(Date.parse(e1.lastDrillAt)).toBeGreaterThan(Date.now() - 120_000);
    expect((await cli(['status'], env, { COLUMNS: '200' })).stdout).toMatch(/e1\s.*✓ \d+[smh] ago/);
  }, 300_000); // some twenty CLI runs: minutes on a loaded 2-core box
});
