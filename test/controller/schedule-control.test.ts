// `boxback hosts set` and `boxback schedules` through the real controller daemon, the real
// CLI and stub agents: a per-second backup schedule over a group, a spare host in that group
// set to `--rpo none` (never at risk, never backed up by the group's schedule), and a pause
// that holds across a controller restart, `schedules run` firing it anyway, resume.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, createTokenLocal, makeCerts, sleep, startController, until, writeControllerYaml, type ControllerProc } from './helpers.js';
import { startStubAgent, type StubAgent } from './stub-agent.js';

let dir: string;
let configFile: string;
let controller: ControllerProc;
let env: { controller: string; ca: string; token: string };
const agents: StubAgent[] = [];

const CONFIG = `pollSeconds: 3600
shutdownGraceSeconds: 2
schedules:
  - name: every2s
    cron: "*/2 * * * * *"
    group: g
    retry: { attempts: 0 }
`;

const scheduledJobs = (): Array<{ host: string; created_at_ms: number }> => {
  const d = new Database(path.join(dir, 'state/catalog.db'), { readonly: true, fileMustExist: true });
  try {
    return d.prepare(`SELECT host, created_at_ms FROM jobs WHERE schedule = 'every2s' ORDER BY created_at_ms`).all() as Array<{
      host: string;
      created_at_ms: number;
    }>;
  } finally {
    d.close();
  }
};

async function ok(args: string[]): Promise<string> {
  const r = await cli(args, env);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-schedctl-'));
  const certs = await makeCerts(dir);
  const store = path.join(dir, 'store');
  mkdirSync(store, { recursive: true });
  configFile = writeControllerYaml(dir, 0, CONFIG);
  const token = await createTokenLocal(configFile, 'alice', 'admin');
  for (const name of ['a1', 'spare']) agents.push(await startStubAgent({ name, certs, store, backupMs: 50 }));
  controller = await startController(configFile);
  env = { controller: controller.address, ca: certs.ca, token };
  // a1 is registered at a wrong address and in no group: `hosts set` fixes both
  await ok(['hosts', 'add', 'a1', '--address', '127.0.0.1:1', '--skip-check']);
  await ok(['hosts', 'add', 'spare', '--address', agents[1].address]);
});

afterAll(async () => {
  await controller?.stop();
  await Promise.all(agents.map((a) => a.stop()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('hosts set', () => {
  it('changes address, group and RPO; --rpo none makes a drill-only spare that is never at risk', async () => {
    const a1 = JSON.parse(await ok(['hosts', 'set', 'a1', '--address', agents[0].address, '--group', 'g', '--json']));
    expect(a1).toMatchObject({ name: 'a1', address: agents[0].address, group: 'g', rpoSeconds: null }); // null: the controller's default
    const spare = JSON.parse(await ok(['hosts', 'set', 'spare', '--group', 'g', '--rpo', 'none', '--json']));
    expect(spare).toMatchObject({ group: 'g', rpoSeconds: 'none' });
    expect(await ok(['hosts', 'list'])).toMatch(/spare\s+\S+\s+g\s.*none/);

    const st = JSON.parse(await ok(['status', '--refresh', '--json'])) as {
      hosts: Array<{ host: { name: string }; reachable: boolean; atRisk: boolean }>;
    };
    const byName = new Map(st.hosts.map((h) => [h.host.name, h]));
    expect(byName.get('a1')?.reachable).toBe(true); // the new address is used
    expect(byName.get('spare')?.atRisk).toBe(false); // no backup at all, and not at risk
    const bad = await cli(['hosts', 'set', 'a1', '--rpo', 'soon'], env);
    expect(bad.code).toBe(2);
    const none = await cli(['hosts', 'set', 'nohost', '--group', 'x'], env);
    expect(none.code).toBe(3);
  });
});

describe('schedules', () => {
  it('backs up the group but not its --rpo none spare; lists the next run', async () => {
    await until(() => scheduledJobs().filter((j) => j.host === 'a1').length >= 2, 20_000, 'two scheduled backups of a1');
    expect(scheduledJobs().filter((j) => j.host === 'spare')).toEqual([]);
    const list = JSON.parse(await ok(['schedules', '--json'])) as Array<{ name: string; nextRun: string | null; paused: boolean }>;
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ name: 'every2s', paused: false });
    expect(Date.parse(list[0].nextRun!)).toBeGreaterThan(Date.now() - 3_000);
    expect(Date.parse(list[0].nextRun!)).toBeLessThan(Date.now() + 5_000);
    expect(await ok(['schedules'])).toMatch(/every2s\s+backup\s+\*\/2 \* \* \* \* \* UTC\s+group g/);
  });

  it('a pause holds across a controller restart; run fires it anyway; resume brings it back', async () => {
    expect(await ok(['schedules', 'pause', 'every2s'])).toMatch(/paused every2s/);
    await controller.stop();
    controller = await startController(configFile);
    env = { ...env, controller: controller.address };
    const since = Date.now();
    const list = JSON.parse(await ok(['schedules', '--json'])) as Array<{ paused: boolean; pausedBy: string; nextRun: string | null }>;
    expect(list[0]).toMatchObject({ paused: true, pausedBy: 'alice', nextRun: null });
    expect(await ok(['schedules'])).toMatch(/every2s.*paused.*by alice/);
    await sleep(5_000); // two slots pass
    expect(scheduledJobs().filter((j) => j.created_at_ms >= since)).toEqual([]);

    expect(await ok(['schedules', 'run', 'every2s'])).toMatch(/started every2s now/);
    await until(() => scheduledJobs().some((j) => j.created_at_ms >= since && j.host === 'a1'), 10_000, 'the run-now job');
    expect(scheduledJobs().filter((j) => j.created_at_ms >= since)).toHaveLength(1);

    expect(await ok(['schedules', 'resume', 'every2s'])).toMatch(/resumed every2s: next run/);
    await until(() => scheduledJobs().filter((j) => j.created_at_ms >= since).length >= 2, 10_000, 'a scheduled run after resume');
    const missing = await cli(['schedules', 'pause', 'nightly'], env);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/no schedule "nightly": the config's schedules are every2s/);
  }, 60_000);
});
