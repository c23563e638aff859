// Schedules and retention through the real controller daemon, the real CLI and stub agents:
// a per-second cron creating backup jobs (initiatedVia "schedule"), retention after each backup
// removing exactly what the policy says (store directories and catalog rows, audited as
// "retention"), manual backups counted apart, next runs in status, and `backups prune --dry-run`
// listing without deleting (then pruning for real) after a restart with a stricter policy.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  cli,
  createTokenLocal,
  makeCerts,
  startController,
  until,
  writeControllerYaml,
  type Certs,
  type ControllerProc,
} from './helpers.js';
import { startStubAgent, type StubAgent } from './stub-agent.js';
import { ControllerClient } from '../../packages/controller/src/cli/connection.js';

let dir: string;
let certs: Certs;
let store: string;
let configFile: string;
let controller: ControllerProc;
let env: { controller: string; ca: string; token: string };
const agents: StubAgent[] = [];

const SCHEDULE = `schedules:
  - name: every2s
    cron: "*/2 * * * * *"
    group: sched
    retry: { attempts: 0 }
  - name: verify-m1
    cron: "*/3 * * * * *"
    kind: verify
    hosts: [m1]
`;
const RETENTION_A = `retention:
  default: { keepLast: 2 }
  hosts:
    m1: { keepManual: 2 }
`;
const RETENTION_B = `${RETENTION_A}    p1: { keepManual: 0 }
`;
const base = 'pollSeconds: 3600\nshutdownGraceSeconds: 2\n';

interface BackupJson {
  id: string;
  host: string;
  createdAtMs: number;
  initiatedVia: string;
  path: string;
}

const json = (s: string) => JSON.parse(s);
let client: ControllerClient;
/** A backup through the RPC (the CLI is tested elsewhere; processes are slow on a busy box). */
async function backupNow(host: string): Promise<string> {
  const r = await client.call<{ jobs: Array<{ id: string }> }>('CreateBackup', { hosts: [host], client: 'cli' }); // as the CLI sends it: counted as manual
  const job = await until(async () => {
    const j = await client.call<{ state: string; backupId: string }>('GetJob', { id: r.jobs[0].id });
    return j.state === 'Completed' ? j : undefined;
  });
  return job.backupId;
}
const db = () => new Database(path.join(dir, 'state/catalog.db'), { readonly: true, fileMustExist: true });
function query<T>(sql: string, ...args: unknown[]): T[] {
  const d = db();
  try {
    return d.prepare(sql).all(...args) as T[];
  } finally {
    d.close();
  }
}
async function backupsOf(host: string): Promise<BackupJson[]> {
  return (await client.call<{ backups: BackupJson[] }>('ListBackups', { host })).backups;
}
const storeDirs = (host: string): string[] =>
  existsSync(path.join(store, host)) ? readdirSync(path.join(store, host)).filter((n) => n.startsWith('backup_')) : [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-sched-'));
  certs = await makeCerts(dir);
  store = path.join(dir, 'store');
  mkdirSync(store, { recursive: true });
  configFile = writeControllerYaml(dir, 0, base + SCHEDULE + RETENTION_A);
  const token = await createTokenLocal(configFile, 'alice', 'admin');
  for (const name of ['s1', 's2', 'm1', 'p1']) agents.push(await startStubAgent({ name, certs, store, backupMs: 100 }));
  controller = await startController(configFile);
  env = { controller: controller.address, ca: certs.ca, token };
  client = new ControllerClient(env);
  for (const a of agents) {
    await client.call('AddHost', { name: a.name, address: a.address, group: a.name.startsWith('s') ? 'sched' : '' });
  }
});

afterAll(async () => {
  client?.close();
  await controller?.stop();
  await Promise.all(agents.map((a) => a.stop()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('schedules', () => {
  it('a per-second cron creates backup jobs for every host of its group, recorded as automated', async () => {
    const done = () =>
      query<{ host: string; n: number }>(
        `SELECT host, COUNT(*) AS n FROM jobs WHERE requested_by = 'schedule:every2s' AND state = 'Completed' GROUP BY host`,
      );
    await until(() => done().filter((r) => r.n >= 3).length === 2, 30_000, 'three scheduled backups of s1 and s2');
    expect(
      done()
        .map((r) => r.host)
        .sort(),
    ).toEqual(['s1', 's2']);
    // hosts outside the group are never touched by the schedule
    expect(query(`SELECT id FROM jobs WHERE requested_by = 'schedule:every2s' AND host IN ('m1', 'p1')`)).toHaveLength(0);
    const list = await backupsOf('s1');
    expect(list.length).toBeGreaterThan(0);
    expect(list.every((b) => b.initiatedVia === 'schedule')).toBe(true);
    const st = await cli(['--json', 'status'], env);
    expect(st.code, st.stderr).toBe(0);
    const s = json(st.stdout) as { hosts: Array<{ host: { name: string }; nextRun: string | null }> };
    const next = new Map(s.hosts.map((h) => [h.host.name, h.nextRun]));
    expect(Date.parse(next.get('s1')!)).toBeGreaterThan(Date.now() - 5_000);
    expect(Date.parse(next.get('s1')!)).toBeLessThan(Date.now() + 10_000);
    expect(next.get('m1')).toBeNull();
  });

  it('retention after each scheduled backup keeps the 2 newest: the older ones are gone from the store and the catalog', async () => {
    // between runs (every 2 s, 100 ms each) the host holds exactly the 2 newest backups
    const settled = await until(
      async () => {
        const list = await backupsOf('s1');
        const dirs = storeDirs('s1').sort();
        const fromCatalog = list.map((b) => b.path.split('/')[1]).sort();
        const gone = query(`SELECT id FROM audit WHERE who = 'retention' AND target LIKE 's1@%'`).length;
        return gone >= 2 && list.length === 2 && JSON.stringify(dirs) === JSON.stringify(fromCatalog) ? list : undefined;
      },
      20_000,
      's1 settled at 2 backups',
    );
    const deleted = query<{ target: string; detail: string; result: string }>(
      `SELECT target, detail, result FROM audit WHERE who = 'retention' AND target LIKE 's1@%'`,
    );
    expect(deleted.length).toBeGreaterThanOrEqual(2);
    expect(deleted.every((d) => d.result === 'ok' && d.detail.startsWith('outside-policy'))).toBe(true);
    // exactly the oldest ones went: every deleted backup is older than every kept one
    const oldestKept = settled.map((b) => b.id).sort()[0];
    for (const d of deleted) expect(d.target < oldestKept).toBe(true);
    for (const d of deleted) expect(existsSync(path.join(store, 's1', `backup_${d.target.split('@')[1]}`))).toBe(false);
    expect(query(`SELECT id FROM backups WHERE id IN (${deleted.map(() => '?').join(',')})`, ...deleted.map((d) => d.target))).toHaveLength(
      0,
    );
  });

  it('manual backups are counted apart: keepManual 2 keeps the 2 newest CLI-made ones', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(await backupNow('m1'));
    const list = await until(
      async () => {
        const l = await backupsOf('m1');
        return l.length === 2 ? l : undefined;
      },
      10_000,
      'm1 pruned to 2',
    );
    expect(list.map((b) => b.id).sort()).toEqual(ids.slice(1).sort());
    expect(list.every((b) => b.initiatedVia === 'cli')).toBe(true);
    expect(storeDirs('m1').sort()).toEqual(
      ids
        .slice(1)
        .map((id) => `backup_${id.split('@')[1]}`)
        .sort(),
    );
    const audit = (await client.call<{ entries: Array<{ who: string; target: string }> }>('ListAudit', { limit: 200 })).entries;
    expect(audit.some((e) => e.who === 'retention' && e.target === ids[0])).toBe(true);
  });

  it('a verify schedule re-checks the newest Restorable backup and records when', async () => {
    const [newest] = await backupsOf('m1');
    const b = await until(
      async () => {
        const x = await client.call<{ verifiedAtMs: number; restorable: boolean }>('GetBackup', { id: newest.id });
        return x.verifiedAtMs > 0 ? x : undefined;
      },
      15_000,
      'a scheduled verification of m1',
    );
    expect(b.restorable).toBe(true);
  });
});

describe('backups prune', () => {
  it('--dry-run lists what a stricter policy would delete, with reasons, and deletes nothing; prune then deletes it', async () => {
    for (let i = 0; i < 3; i++) await backupNow('p1');
    await new Promise((r) => setTimeout(r, 500)); // retention (default policy) keeps every manual backup
    const before = await backupsOf('p1');
    expect(before).toHaveLength(3);

    // restart with keepManual 0 for p1: the schedule keeps its slots, nothing is pruned until asked
    await controller.stop();
    configFile = writeControllerYaml(dir, 0, base + SCHEDULE + RETENTION_B);
    controller = await startController(configFile);
    env = { ...env, controller: controller.address };
    client.close();
    client = new ControllerClient(env);

    const dry = await cli(['backups', 'prune', '--host', 'p1', '--dry-run'], env);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/would delete\s+outside-policy/);
    expect(dry.stdout).toMatch(/keep\s+newest-restorable/);
    expect(dry.stdout).toContain('dry run: 2 of 3 backup(s) would be deleted');
    const dryJson = await client.call<{ items: Array<{ id: string; keep: boolean }> }>('PruneBackups', { host: 'p1', dryRun: true });
    expect(dryJson.items.filter((i: { keep: boolean }) => !i.keep).map((i: { id: string }) => i.id)).toEqual(
      before.slice(1).map((b) => b.id),
    );
    expect(await backupsOf('p1')).toHaveLength(3);
    expect(storeDirs('p1')).toHaveLength(3);

    // without a terminal, a real prune needs --yes
    expect((await cli(['backups', 'prune', '--host', 'p1'], env)).code).toBe(2);
    const real = await cli(['backups', 'prune', '--host', 'p1', '--yes'], env);
    expect(real.code, real.stderr).toBe(0);
    expect(real.stdout).toContain('deleted 2 backup(s)');
    const after = await backupsOf('p1');
    expect(after.map((b) => b.id)).toEqual([before[0].id]); // never the newest Restorable one
    expect(storeDirs('p1')).toEqual([`backup_${before[0].id.split('@')[1]}`]);
  });
});
