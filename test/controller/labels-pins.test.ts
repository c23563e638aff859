// Labels and pins through the real controller daemon, the real CLI and a stub agent:
// `backup create --label`, `backups --label|--status|--since|--limit`, and a pinned backup
// that retention (keepManual 0: only the newest manual backup stays) never deletes until it
// is unpinned.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, createTokenLocal, makeCerts, startController, until, writeControllerYaml, type ControllerProc } from './helpers.js';
import { startStubAgent, type StubAgent } from './stub-agent.js';

let dir: string;
let controller: ControllerProc;
let agent: StubAgent;
let env: { controller: string; ca: string; token: string };

interface B {
  id: string;
  label: string;
  pinned: boolean;
  restorable: boolean;
  createdAt: string;
}

async function ok(args: string[]): Promise<string> {
  const r = await cli(args, env);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}
const list = async (...args: string[]): Promise<B[]> => JSON.parse(await ok(['backups', '--host', 'l1', '--json', ...args])) as B[];
async function create(...args: string[]): Promise<string> {
  const r = JSON.parse(await ok(['backup', 'create', '--host', 'l1', '--yes', '--json', ...args]));
  return r.jobs[0].result.backupId as string;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-pins-'));
  const certs = await makeCerts(dir);
  const store = path.join(dir, 'store');
  mkdirSync(store, { recursive: true });
  const configFile = writeControllerYaml(dir, 0, 'pollSeconds: 3600\nretention:\n  default: { keepManual: 0 }\n');
  const token = await createTokenLocal(configFile, 'alice', 'admin');
  agent = await startStubAgent({ name: 'l1', certs, store, backupMs: 50 });
  controller = await startController(configFile);
  env = { controller: controller.address, ca: certs.ca, token };
  await ok(['hosts', 'add', 'l1', '--address', agent.address]);
});

afterAll(async () => {
  await controller?.stop();
  await agent?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('labels and pins', () => {
  it('labels a backup, pins it, and retention keeps it until unpinned', async () => {
    const first = await create('--label', 'pre-upgrade');
    const pinned = JSON.parse(await ok(['backup', 'pin', first, '--json'])) as B;
    expect(pinned).toMatchObject({ id: first, label: 'pre-upgrade', pinned: true });
    const second = await create();
    await new Promise((r) => setTimeout(r, 1100)); // backup IDs have one-second resolution
    const third = await create();
    // keepManual 0: retention after each backup keeps only the newest, and the pinned one
    const left = await until(
      async () => {
        const l = await list();
        return l.length === 2 ? l : undefined;
      },
      10_000,
      'retention to leave 2 backups',
    );
    expect(left.map((b) => b.id).sort()).toEqual([first, third].sort());
    expect(left.find((b) => b.id === second)).toBeUndefined();

    expect((await list('--label', 'pre-upgrade')).map((b) => b.id)).toEqual([first]);
    expect((await list('--limit', '1')).map((b) => b.id)).toEqual([third]);
    expect((await list('--status', 'restorable')).length).toBe(2);
    expect((await list('--status', 'Failed')).length).toBe(0);
    expect((await list('--since', '1h')).length).toBe(2);
    expect((await list('--since', '2999-01-01')).length).toBe(0);
    expect(await ok(['backups', '--host', 'l1'])).toMatch(new RegExp(`${first}.*pre-upgrade`));
    const bad = await cli(['backups', '--since', 'yesterday'], env);
    expect(bad.code).toBe(2);

    const dry = JSON.parse(await ok(['backups', 'prune', '--dry-run', '--json'])) as { items: Array<{ id: string; reasons: string[] }> };
    expect(dry.items.find((i) => i.id === first)?.reasons).toContain('pinned');

    expect(await ok(['backup', 'unpin', first])).toMatch(`unpinned ${first}`);
    await ok(['backups', 'prune', '--yes']);
    expect((await list()).map((b) => b.id)).toEqual([third]);
  }, 180_000); // some twenty CLI runs: each took 4-18 s at a load average of 20
});
