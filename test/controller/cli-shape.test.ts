// The shape of the CLI's output, through the real `boxback` and controller daemon with stub
// agents over mutual TLS: `status --exit-code` for cron and monitoring (exit 9, one stderr
// line per host DOWN or AT RISK); tables that never drop a column silently (piped: every
// column, uncut; a narrow terminal, a real pty made by script(1): a note on stderr names what
// was left out; -o wide and --columns); `backup create` asking for --group/--all only, and
// without a terminal refusing at once (exit 2) instead of waiting; every --json output with
// RFC 3339 times and null for unset values (no epoch ms, no 0, '' or '-' standing for none).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControllerClient } from '../../packages/controller/src/cli/connection.js';
import {
  CLI_MAIN,
  cli,
  cliEnv,
  createTokenLocal,
  makeCerts,
  startController,
  until,
  writeControllerYaml,
  type ControllerProc,
} from './helpers.js';
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
  const configFile = writeControllerYaml(
    dir,
    0,
    'pollSeconds: 3600\ndefaultRpoSeconds: 1d\nschedules:\n  - { name: nightly, cron: "0 2 * * *", hosts: [fresh] }\n',
  );
  const token = await createTokenLocal(configFile, 'alice', 'admin');
  for (const name of ['fresh', 'nobackup', 'spare']) agents.push(await startStubAgent({ name, certs, store, backupMs: 50 }));
  controller = await startController(configFile);
  env = { controller: controller.address, ca: certs.ca, token };
  client = new ControllerClient(env);
  // set up through the RPC (each CLI run costs seconds on a loaded machine); the CLI is what is tested
  for (const a of agents) await client.call('AddHost', { name: a.name, address: a.address, rpoSeconds: a.name === 'spare' ? -1 : 0 });
  const id = await backupNow('fresh');
  await client.call('VerifyBackup', { backupId: id }); // an entry for `boxback drills`
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

/** Every table command, and the columns of its full table in order. */
const TABLES: Array<{ args: string[]; headers: string[] }> = [
  { args: ['backups'], headers: ['Created', 'Backup ID', 'Host', 'Size', 'Consistency', 'Status', 'Restorable', 'Via', 'Drill', 'Label'] },
  { args: ['backups', 'prune', '--dry-run'], headers: ['Backup ID', 'Created', 'Via', 'Action', 'Why'] },
  { args: ['jobs'], headers: ['Job ID', 'Kind', 'Host', 'State', 'Phase', 'Created', 'Took', 'By', 'Backup', 'Error'] },
  { args: ['hosts', 'list'], headers: ['Name', 'Address', 'Group', 'Plan', 'Agent', 'RPO', 'Last seen'] },
  {
    args: ['status'],
    headers: [
      'Host',
      'Agent',
      'Product',
      'Running',
      'Last good backup',
      'Age',
      'RPO',
      'Next run',
      'Last drill',
      'Safety copies',
      'At risk',
    ],
  },
  { args: ['schedules'], headers: ['Schedule', 'Kind', 'Cron', 'Covers', 'Next run', 'Last run', 'Paused'] },
  { args: ['drills'], headers: ['When', 'Host', 'Kind', 'Backup ID', 'Result', 'Duration', 'On', 'Detail'] },
  { args: ['tokens', 'list'], headers: ['ID', 'Name', 'Role', 'State', 'Created', 'Last used', 'Expires'] },
  { args: ['audit'], headers: ['When', 'Who', 'Action', 'Target', 'Result', 'Detail'] },
];

/** The header line of a table in `out` (the first line starting with its first column), split into column names. */
function headerOf(out: string, first: string): string[] {
  const line = out.split(/\r?\n/).find((l) => l.startsWith(`${first} `));
  expect(line, out).toBeDefined();
  return line!.trim().split(/\s{2,}/);
}

/** Run the CLI on a real terminal `cols` wide (script(1) makes the pty); stdout and stderr both land on it. */
function onTerminal(args: string[], cols: number): Promise<{ code: number; screen: string }> {
  const cmd = `stty cols ${cols} rows 50; exec "${process.execPath}" "${CLI_MAIN}" ${args.map((a) => `'${a}'`).join(' ')}`;
  return new Promise((resolve) => {
    const p = spawn('script', ['-qfec', cmd, '/dev/null'], { env: cliEnv(env), stdio: ['pipe', 'pipe', 'pipe'] });
    let screen = '';
    p.stdout.on('data', (d) => (screen += d));
    p.on('exit', (code) => resolve({ code: code ?? 1, screen: screen.replace(/\r/g, '') }));
  });
}

async function inBatches<T, R>(items: T[], n: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += n) out.push(...(await Promise.all(items.slice(i, i + n).map(fn))));
  return out;
}

describe('tables never drop a column silently', () => {
  it('piped: every table command prints every column, nothing cut, nothing on stderr', async () => {
    const runs = await inBatches(TABLES, 3, (t) => cli(t.args, env));
    runs.forEach((r, i) => {
      const t = TABLES[i];
      expect(r.code, `${t.args.join(' ')}: ${r.stderr}`).toBe(0);
      expect(headerOf(r.stdout, t.headers[0]), t.args.join(' ')).toEqual(t.headers);
      expect(r.stdout, t.args.join(' ')).not.toContain('…');
      expect(r.stderr, t.args.join(' ')).toBe('');
    });
    const certs = await cli(['certs', 'check', '--dir', path.join(dir, 'certs')], env);
    expect(headerOf(certs.stdout, 'Role')).toEqual(['Role', 'Name', 'Usage', 'Expires', 'Problem']);
  }, 240_000);

  it('a narrow terminal: fits it, and a note on stderr names each column left out; -o wide and --columns', async () => {
    const full = TABLES[0].headers;
    const narrow = await onTerminal(['backups'], 70);
    expect(narrow.code, narrow.screen).toBe(0);
    const shown = headerOf(narrow.screen, 'Created');
    expect(shown.length).toBeLessThan(full.length);
    const table = narrow.screen.split('\n').filter((l) => !l.startsWith('boxback: note:') && l.trim());
    for (const l of table) expect(l.length, l).toBeLessThanOrEqual(70);
    const note = /boxback: note: columns? (.+) left out to fit 70 characters; -o wide shows every column, --columns picks them/.exec(
      narrow.screen,
    );
    expect(note, narrow.screen).not.toBeNull();
    const left = note![1].split(', ');
    const key = (h: string) => h.toLowerCase().replace(/ /g, '-');
    expect([...shown.map(key), ...left].sort()).toEqual(full.map(key).sort());

    const [wide, picked, bad] = await Promise.all([
      onTerminal(['backups', '-o', 'wide'], 70),
      onTerminal(['backups', '--columns', 'host,backup-id,Status'], 70),
      cli(['backups', '--columns', 'host,size-on-disk'], env),
    ]);
    const asJson = await cli(['hosts', 'list', '-o', 'json'], env); // -o json is --json
    expect(asJson.code, asJson.stderr).toBe(0);
    expect((JSON.parse(asJson.stdout) as Array<{ name: string }>).map((h) => h.name).sort()).toEqual(['fresh', 'nobackup', 'spare']);
    expect(headerOf(wide.screen, 'Created')).toEqual(full);
    expect(wide.screen).not.toContain('boxback: note:');
    expect(headerOf(picked.screen, 'Host')).toEqual(['Host', 'Backup ID', 'Status']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^boxback: BOXBACK_ERR_USAGE: --columns: no column "size-on-disk" here; there are created, backup-id, host/);
  }, 180_000);
});

describe('backup create and its confirmation', () => {
  const jobCount = async () =>
    (await client.call<{ jobs: unknown[] }>('ListJobs', { host: '', kind: '', states: [], limit: 1000 })).jobs.length;

  it('--all without a terminal and without --yes: exit 2 at once, nothing started; --host never asks', async () => {
    const before = await jobCount();
    const t0 = Date.now();
    const r = await cli(['backup', 'create', '--all'], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(
      'boxback: BOXBACK_ERR_USAGE: Back up every host: needs confirmation and there is no terminal to ask on; pass --yes\n',
    );
    expect(Date.now() - t0).toBeLessThan(30_000); // no hang waiting for an answer
    const g = await cli(['backup', 'create', '--group', 'prod'], env);
    expect(g.stderr).toMatch(/Back up every host of group prod: needs confirmation/);
    expect(await jobCount()).toBe(before);

    const one = await cli(['backup', 'create', '--host', 'fresh'], env);
    expect(one.code, one.stderr).toBe(0);
    expect(await jobCount()).toBe(before + 1);
  }, 120_000);

  it('--all on a terminal asks, and "n" starts nothing', async () => {
    const before = await jobCount();
    const cmd = `exec "${process.execPath}" "${CLI_MAIN}" backup create --all`;
    const p = spawn('script', ['-qfec', cmd, '/dev/null'], { env: cliEnv(env), stdio: ['pipe', 'pipe', 'pipe'] });
    let screen = '';
    p.stdout.on('data', (d) => (screen += d));
    const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
    await until(() => screen.includes('Back up every host? [y/N]'), 30_000, 'the question');
    p.stdin.write('n\r');
    expect(await exited).toBe(2);
    expect(screen).toContain('boxback: BOXBACK_ERR_USAGE: not confirmed; nothing was done');
    expect(await jobCount()).toBe(before);
  }, 60_000);
});

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
/** Keys that name a point in time (their value: RFC 3339 or null). */
const TIME_NAME = /(^at|At|Seen|^nextRun|NextRun|Used|Slot|After|^since)$/;
/** Keys ending in Ms that are durations (numbers of ms); any other key ending in Ms is an epoch time left raw. */
const DURATION_MS = /(^duration|Duration|^window|Window|^copy|^stop|^start)Ms$/;

/** Every breach of the --json rule in `v` (a path and what is wrong). */
function jsonProblems(v: unknown, at = '$'): string[] {
  if (v === '' || v === '-') return [`${at}: ${JSON.stringify(v)} stands for none (want null)`];
  if (typeof v === 'number' && v >= 1e12 && v < 1e14) return [`${at}: ${v} looks like epoch milliseconds (want RFC 3339)`];
  if (typeof v === 'number' && v < 0) return [`${at}: ${v} stands for none (want null)`];
  if (typeof v === 'string' && /^\d{4}-\d{2}-\d{2}[ T]\d/.test(v) && !RFC3339.test(v)) return [`${at}: "${v}" is a time but not RFC 3339`];
  if (!v || typeof v !== 'object') return [];
  if (Array.isArray(v)) return v.flatMap((x, i) => jsonProblems(x, `${at}[${i}]`));
  return Object.entries(v).flatMap(([k, x]) => {
    const here = `${at}.${k}`;
    if (/Ms$/.test(k) && !DURATION_MS.test(k)) return [`${here}: a time in epoch ms`];
    if (TIME_NAME.test(k) && x !== null && !(typeof x === 'string' && RFC3339.test(x)))
      return [`${here}: ${JSON.stringify(x)} is not RFC 3339 or null`];
    return jsonProblems(x, here);
  });
}

describe('--json everywhere: RFC 3339 times, null for unset', () => {
  it('holds for the output of every command that takes --json', async () => {
    const backups = JSON.parse((await cli(['--json', 'backups', '--host', 'fresh'], env)).stdout) as Array<{
      id: string;
      jobId: string;
      createdAt: string;
    }>;
    const id = backups[0].id;
    const job = backups[0].jobId;
    expect(backups[0].createdAt).toMatch(RFC3339); // times are there, as RFC 3339
    const tar = path.join(dir, 'x.tar');
    const commands: string[][] = [
      ['backups'],
      ['backups', 'prune', '--dry-run'],
      ['backup', 'get', id],
      ['backup', 'get', 'fresh@latest'],
      ['backup', 'verify', id],
      ['backup', 'pin', id],
      ['backup', 'unpin', id],
      ['backup', 'restore', id, '--dry-run'], // before the creates, in another batch: one job per host at a time
      ['backup', 'export', id, '-o', tar],
      ['backup', 'create', '--host', 'fresh', '--yes'],
      ['backup', 'create', '--host', 'nobackup', '--yes', '--no-wait'], // another host: runs beside the one above
      ['jobs'],
      ['job', 'get', job],
      ['job', 'watch', job],
      ['job', 'logs', job],
      ['hosts', 'list'],
      ['hosts', 'set', 'spare', '--group', 'spares'],
      ['status'],
      ['schedules'],
      ['schedules', 'pause', 'nightly'],
      ['schedules', 'resume', 'nightly'],
      ['drills'],
      ['tokens', 'list'],
      ['tokens', 'create', '--name', 'json-check', '--expires', '1d'],
      ['audit'],
      ['certs', 'check', '--dir', path.join(dir, 'certs')],
    ];
    const runs = await inBatches(commands, 3, (args) => cli(['--json', ...args], env));
    const problems = runs.flatMap((r, i) => {
      const what = commands[i].join(' ');
      if (r.code !== 0) return [`${what}: exit ${r.code}: ${r.stderr}`];
      return jsonProblems(JSON.parse(r.stdout)).map((p) => `${what}: ${p}`);
    });
    expect(problems).toEqual([]);

    // unset values are null, not 0 or '' (a spare with `--rpo none`, a host on the default RPO, an unlabelled backup)
    const hosts = JSON.parse(runs[commands.findIndex((c) => c[0] === 'hosts' && c[1] === 'list')].stdout) as Array<Record<string, unknown>>;
    expect(hosts.find((h) => h.name === 'spare')).toMatchObject({ rpoSeconds: 'none' });
    expect(hosts.find((h) => h.name === 'fresh')).toMatchObject({ rpoSeconds: null, group: null });
    expect(JSON.parse(runs[2].stdout)).toMatchObject({ id, label: null });

    // the lines of `status --watch --json` and `job logs --follow --json` too
    const watch = spawn(process.execPath, [CLI_MAIN, '--json', 'status', '--watch'], { env: cliEnv(env) });
    let lines = '';
    watch.stdout.on('data', (d) => (lines += d));
    try {
      await until(() => lines.includes('\n'), 60_000, 'a status --watch line');
    } finally {
      watch.kill();
    }
    const first = JSON.parse(lines.split('\n')[0]) as { hosts: unknown[] };
    expect(first.hosts.length).toBeGreaterThan(0);
    expect(jsonProblems(first)).toEqual([]);
  }, 300_000);
});
