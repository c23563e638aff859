// Metrics as Prometheus sees them, from a real controller daemon (stub agents over mutual TLS):
//   - the scraped /metrics passes the real `promtool check metrics`;
//   - every boxback_jobs_total series of a registered host exists at 0 before anything ran;
//   - the alert rules documented in docs/operating.md, run by the real `promtool test rules`
//     on the series scraped before and after a failed backup, fire BoxbackJobFailed for that
//     host (and not before);
//   - drills and verifies count under the source host, a dry-run restore counts nowhere, and
//     the last drill and verify success timestamps are exported;
//   - a backup made through the RPC by anything but the CLI is initiated via "api".
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControllerClient } from '../../packages/controller/src/cli/connection.js';
import { cli, createTokenLocal, makeCerts, startController, until, writeControllerYaml, type ControllerProc } from './helpers.js';
import { startStubAgent, type StubAgent } from './stub-agent.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let dir: string;
let controller: ControllerProc;
let env: { controller: string; ca: string; token: string };
let client: ControllerClient;
const agents: StubAgent[] = [];
const json = (s: string) => JSON.parse(s);

async function scrape(): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${controller.metricsPort()}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

/** The samples of one metric family: "name{labels}" -> value. */
function samples(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** The alert rules block of docs/operating.md, as written there. */
function documentedRules(): string {
  const doc = readFileSync(path.join(repo, 'docs/operating.md'), 'utf8');
  const m = /Alert rules that cover the failure modes:\s*```yaml\n([\s\S]*?)```/.exec(doc);
  expect(m, 'the alert rules block in docs/operating.md').toBeTruthy();
  return m![1];
}

async function waitJob(id: string): Promise<{ state: string; backupId: string }> {
  return until(async () => {
    const j = json((await cli(['--json', 'job', 'get', id], env)).stdout);
    return j.state !== 'Queued' && j.state !== 'Running' ? j : undefined;
  }, 20_000);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-promtool-'));
  const certs = await makeCerts(dir);
  const store = path.join(dir, 'store');
  mkdirSync(store, { recursive: true });
  const configFile = writeControllerYaml(dir, 0, 'pollSeconds: 3600\nmetrics: { listen: 127.0.0.1:0 }\n');
  const token = await createTokenLocal(configFile, 'alice', 'admin');
  for (const name of ['m1', 'spare1']) agents.push(await startStubAgent({ name, certs, store, backupMs: 20 }));
  controller = await startController(configFile);
  env = { controller: controller.address, ca: certs.ca, token };
  client = new ControllerClient(env);
  for (const a of agents) expect((await cli(['hosts', 'add', a.name, '--address', a.address], env)).code).toBe(0);
  // a host whose agent is gone: its backups fail
  expect((await cli(['hosts', 'add', 'gone', '--address', '127.0.0.1:1', '--skip-check'], env)).code).toBe(0);
  await until(() => controller.metricsPort(), 10_000, 'metrics port');
});

afterAll(async () => {
  client?.close();
  await controller?.stop();
  await Promise.all(agents.map((a) => a.stop()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('metrics and the documented alert', () => {
  it('passes promtool check metrics, and the job-failed alert fires on the first failure', async () => {
    const before = await until(async () => {
      const t = await scrape();
      return samples(t, 'boxback_jobs_total').has('boxback_jobs_total{host="gone",kind="backup",result="Failed"}') ? t : undefined;
    }, 15_000);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: before, encoding: 'utf8' });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    for (const host of ['m1', 'spare1', 'gone'])
      for (const [kind, result] of [
        ['backup', 'Failed'],
        ['restore', 'RolledBack'],
        ['drill', 'Failed'],
        ['verify', 'Failed'],
      ])
        expect(samples(before, 'boxback_jobs_total').get(`boxback_jobs_total{host="${host}",kind="${kind}",result="${result}"}`)).toBe(0);

    const r = await cli(['backup', 'create', '--host', 'gone', '--yes'], env);
    expect(r.code).toBe(6); // UNREACHABLE: its agent does not answer
    const after = await until(async () => {
      const t = await scrape();
      return samples(t, 'boxback_jobs_total').get('boxback_jobs_total{host="gone",kind="backup",result="Failed"}') === 1 ? t : undefined;
    }, 15_000);
    expect(spawnSync('promtool', ['check', 'metrics'], { input: after, encoding: 'utf8' }).status).toBe(0);

    // Prometheus's view: three scrapes before the failure, three after, one minute apart
    const b = samples(before, 'boxback_jobs_total');
    const a = samples(after, 'boxback_jobs_total');
    const series = [...new Set([...b.keys(), ...a.keys()])].map((s) => {
      const v = (m: Map<string, number>) => (m.has(s) ? String(m.get(s)) : '_');
      return { series: s, values: `${v(b)} ${v(b)} ${v(b)} ${v(a)} ${v(a)} ${v(a)}` };
    });
    const rules = path.join(dir, 'rules.yml');
    writeFileSync(rules, documentedRules());
    const tests = path.join(dir, 'tests.yml');
    writeFileSync(
      tests,
      JSON.stringify({
        rule_files: [rules],
        evaluation_interval: '1m',
        tests: [
          {
            interval: '1m',
            input_series: series,
            alert_rule_test: [
              { eval_time: '2m', alertname: 'BoxbackJobFailed', exp_alerts: [] },
              {
                eval_time: '5m',
                alertname: 'BoxbackJobFailed',
                exp_alerts: [{ exp_labels: { alertname: 'BoxbackJobFailed', host: 'gone', kind: 'backup', result: 'Failed' } }],
              },
            ],
          },
        ],
      }),
    );
    const t = spawnSync('promtool', ['test', 'rules', tests], { encoding: 'utf8' });
    expect(t.status, t.stdout + t.stderr).toBe(0);
    expect(t.stdout).toMatch(/SUCCESS/);
  });

  it('counts drills and verifies under the source host, not dry runs; exports their last success', async () => {
    const made = json((await cli(['--json', 'backup', 'create', '--host', 'm1', '--yes'], env)).stdout);
    const id = made.jobs[0].result.backupId as string;
    expect(json((await cli(['--json', 'backup', 'get', id], env)).stdout).initiatedVia).toBe('cli');
    expect((await cli(['drill', 'run', '--host', 'm1', '--on', 'spare1', '--yes'], env)).code).toBe(0);
    expect((await cli(['backup', 'verify', id], env)).code).toBe(0);
    const dry = await cli(['backup', 'restore', id, '--dry-run'], env);
    expect(dry.code, dry.stderr).toBe(0);

    const text = await until(async () => {
      const t = await scrape();
      return samples(t, 'boxback_jobs_total').get('boxback_jobs_total{host="m1",kind="verify",result="Completed"}') === 1 ? t : undefined;
    }, 15_000);
    const jobs = samples(text, 'boxback_jobs_total');
    expect(jobs.get('boxback_jobs_total{host="m1",kind="drill",result="Completed"}')).toBe(1);
    expect(jobs.get('boxback_jobs_total{host="spare1",kind="drill",result="Completed"}')).toBe(0);
    expect(jobs.get('boxback_jobs_total{host="m1",kind="restore",result="Completed"}')).toBe(0); // the dry run
    expect(jobs.get('boxback_jobs_total{host="m1",kind="backup",result="Completed"}')).toBe(1);
    const now = Date.now() / 1000;
    const drill = samples(text, 'boxback_last_drill_success_timestamp_seconds').get(
      'boxback_last_drill_success_timestamp_seconds{host="m1"}',
    );
    const verify = samples(text, 'boxback_last_verify_success_timestamp_seconds').get(
      'boxback_last_verify_success_timestamp_seconds{host="m1"}',
    );
    expect(drill).toBeGreaterThan(now - 120);
    expect(verify).toBeGreaterThanOrEqual(drill!);
    expect(
      samples(text, 'boxback_last_drill_success_timestamp_seconds').has('boxback_last_drill_success_timestamp_seconds{host="spare1"}'),
    ).toBe(false);
    expect(spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' }).status).toBe(0);
  });

  it('a backup made through the RPC by anything but the CLI is initiated via "api"', async () => {
    const res = await client.call<{ jobs: Array<{ id: string }> }>('CreateBackup', { hosts: ['m1'] });
    const j = await waitJob(res.jobs[0].id);
    expect(j.state).toBe('Completed');
    expect(json((await cli(['--json', 'backup', 'get', j.backupId], env)).stdout).initiatedVia).toBe('api');
  });
});
