// The job runner through the real controller daemon and the real CLI, with scriptable
// agents over real mutual TLS (stub-agent.ts): the fleet concurrency bound, --no-wait and
// job watch, BUSY, restore confirmations, a failed job's exit code, and reconciliation
// after the controller is SIGKILLed mid-job.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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
import { startStubAgent, type FleetTracker, type StubAgent } from './stub-agent.js';

let dir: string;
let certs: Certs;
let configFile: string;
let controller: ControllerProc;
let env: { controller: string; ca: string; token: string };
const agents: StubAgent[] = [];
const tracker: FleetTracker = { now: 0, max: 0 };
let store: string;

const json = (s: string) => JSON.parse(s);

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-jobs-'));
  certs = await makeCerts(dir);
  store = path.join(dir, 'store');
  mkdirSync(store, { recursive: true });
  configFile = writeControllerYaml(
    dir,
    0,
    'concurrency: 2\npollSeconds: 3600\nshutdownGraceSeconds: 1\nmetrics: { listen: 127.0.0.1:0 }\n',
  );
  const token = await createTokenLocal(configFile, 'alice', 'admin');
  for (let i = 1; i <= 5; i++) agents.push(await startStubAgent({ name: `box${i}`, certs, store, backupMs: 400, tracker }));
  controller = await startController(configFile);
  env = { controller: controller.address, ca: certs.ca, token };
  for (const a of agents) {
    const r = await cli(['hosts', 'add', a.name, '--address', a.address, '--group', 'fleet'], env);
    expect(r.code, r.stderr).toBe(0);
  }
});

afterAll(async () => {
  await controller?.stop();
  await Promise.all(agents.map((a) => a.stop()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('fleet backups', () => {
  it('backs up the whole fleet, never more than the bound at once', async () => {
    const r = await cli(['backup', 'create', '--all', '--yes'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(tracker.max).toBe(2);
    for (const a of agents) expect(r.stdout).toMatch(new RegExp(`${a.name}\\s+Completed\\s+${a.name}@\\d{8}-\\d{6}`));
    const list = json((await cli(['--json', 'backups'], env)).stdout);
    expect(list).toHaveLength(5);
    expect(list.every((b: { restorable: boolean; consistency: string }) => b.restorable && b.consistency === 'quiesced')).toBe(true);
  });

  it('honours a smaller bound per request', async () => {
    tracker.max = 0;
    const r = await cli(['backup', 'create', '--group', 'fleet', '--concurrency', '1', '--yes'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(tracker.max).toBe(1);
  });

  it("runs the agents' channels in a thread 5 nice levels below the thread that answers status calls", () => {
    // /proc/PID/task/TID/stat: the 19th field is the thread's nice (after the command's parenthesis: the 17th)
    const nice = (tid: string) =>
      Number(readFileSync(`/proc/${controller.proc.pid}/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ')[16]);
    const main = nice(String(controller.proc.pid));
    const lowered = readdirSync(`/proc/${controller.proc.pid}/task`).filter((t) => nice(t) !== main);
    if (main > 14) return; // the test runner itself at nice 15 or more: no room to see the difference
    expect(lowered.map(nice)).toEqual([main + 5]); // one thread (the agents'), started by the backups above
  });

  it('--no-wait prints the jobs; job watch follows one to its result; a finished job answers at once', async () => {
    const r = await cli(['--json', 'backup', 'create', '--host', 'box1', '--no-wait'], env);
    expect(r.code, r.stderr).toBe(0);
    const [job] = json(r.stdout).jobs;
    expect(job).toMatchObject({ host: 'box1', kind: 'backup', state: 'Queued' });
    const w = await cli(['--json', 'job', 'watch', job.id], env);
    expect(w.code, w.stderr).toBe(0);
    expect(json(w.stdout).result).toMatchObject({ status: 'Completed', backupId: expect.stringMatching(/^box1@/) });
    const again = await cli(['--json', 'job', 'watch', job.id], env);
    expect(json(again.stdout).result.status).toBe('Completed');
  });

  it('refuses a second job on a busy host with exit 7', async () => {
    agents[1].hold = true;
    const first = await cli(['backup', 'create', '--host', 'box2', '--no-wait'], env);
    expect(first.code, first.stderr).toBe(0);
    const second = await cli(['backup', 'create', '--host', 'box2'], env);
    expect(second.code).toBe(7);
    expect(second.stderr).toMatch(/^boxback: BOXBACK_ERR_BUSY: already running a backup or restore: box2 \(job backup-/);
    // several hosts at once (their active jobs read in one query): the whole request is refused, naming the busy one
    const group = await cli(['backup', 'create', '--group', 'fleet', '--yes'], env);
    expect(group.code).toBe(7);
    expect(group.stderr).toMatch(/^boxback: BOXBACK_ERR_BUSY: already running a backup or restore: box2 \(job backup-[^)]*\); wait for it/);
    const status = json((await cli(['--json', 'status'], env)).stdout);
    const box2 = status.hosts.find((h: { host: { name: string } }) => h.host.name === 'box2');
    expect(box2.runningJob).toMatchObject({ kind: 'backup', state: 'Running' });
    agents[1].hold = false;
    agents[1].releaseAll();
    await until(async () => !json((await cli(['--json', 'status'], env)).stdout).runningJobs, 10_000, 'the job to end');
  });
});

describe('restores', () => {
  it('needs --yes without a terminal, then restores and points at restore confirm', async () => {
    const [b] = json((await cli(['--json', 'backups', '--host', 'box3'], env)).stdout);
    const refused = await cli(['backup', 'restore', b.id], env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/pass --yes/);
    const dry = await cli(['backup', 'restore', b.id, '--dry-run', '--target', 'box4'], env);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('would restore db.zip');
    const r = await cli(['backup', 'restore', b.id, '--yes'], env);
    expect(r.code, r.stderr).toBe(0);
    const m = /boxback restore confirm (\S+)/.exec(r.stdout);
    expect(m).not.toBeNull();
    const c = await cli(['restore', 'confirm', m![1]], env);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toMatch(/removed 1 safety copy/);
  });
});

describe('failures', () => {
  it('exits 6 when a job fails because its agent is gone, and when a host cannot be reached to add', async () => {
    const r0 = await cli(['hosts', 'add', 'ghost', '--address', '127.0.0.1:1'], env);
    expect(r0.code).toBe(6);
    expect(r0.stderr).toMatch(
      /^boxback: BOXBACK_ERR_UNREACHABLE: agent ghost at 127\.0\.0\.1:1 did not answer: connection refused.*--skip-check/,
    );
    expect((await cli(['hosts', 'add', 'ghost', '--address', '127.0.0.1:1', '--skip-check'], env)).code).toBe(0);
    const r = await cli(['backup', 'create', '--host', 'ghost'], env);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/^boxback: BOXBACK_ERR_UNREACHABLE: job \S+ ended Failed: agent ghost at 127\.0\.0\.1:1 did not answer/m);
    expect(r.stdout).toMatch(/ghost\s+Failed/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect((await cli(['hosts', 'remove', 'ghost'], env)).code).toBe(0);
  });
});

describe('metrics', () => {
  it('serves per-host figures and job counts over HTTP, and /healthz', async () => {
    const port = await until(() => controller.metricsPort(), 10_000, 'the metrics server');
    await until(
      async () => (await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).includes('result="Failed"'),
      10_000,
      'the job counts',
    );
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    expect(text).toMatch(/boxback_last_success_timestamp_seconds\{host="box1"\} \d+/);
    expect(text).toMatch(/boxback_last_backup_size_bytes\{host="box1"\} \d+/);
    expect(text).toMatch(/boxback_last_backup_duration_seconds\{host="box1"\} [\d.]+/);
    expect(text).toMatch(/boxback_quiesce_window_seconds\{host="box1"\} 0\.042/);
    expect(text).toMatch(/boxback_host_at_risk\{host="box1"\} 0/);
    expect(text).toMatch(/boxback_jobs_total\{host="box1",kind="backup",result="Completed"\} \d+/);
    expect(text).toMatch(/boxback_jobs_total\{host="ghost",kind="backup",result="Failed"\} 1/);
    const h = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(h.status).toBe(200);
  });
});

describe('SIGTERM with a job running', () => {
  it('exits 0 after the grace period and leaves the job to the next start, which finishes it', async () => {
    const a = agents[3];
    a.hold = true;
    const r = await cli(['--json', 'backup', 'create', '--host', a.name, '--no-wait'], env);
    const [job] = json(r.stdout).jobs;
    await until(() => a.running.size > 0, 10_000, 'the agent to start the job');
    const exit = await controller.stop('SIGTERM');
    expect(exit.code).toBe(0);
    expect(controller.output()).toContain('it will be reconciled on the next start');
    controller = await startController(configFile);
    env = { ...env, controller: controller.address };
    a.hold = false;
    a.releaseAll();
    const w = await cli(['--json', 'job', 'watch', job.id], env);
    expect(w.code, w.stderr).toBe(0);
    expect(json(w.stdout).result.status).toBe('Completed');
  });
});

describe('reconciliation after the controller is SIGKILLed', () => {
  it('re-attaches a job its agent still runs and records the backup when it ends', async () => {
    const a = agents[2];
    a.hold = true;
    const r = await cli(['--json', 'backup', 'create', '--host', a.name, '--no-wait'], env);
    const [job] = json(r.stdout).jobs;
    await until(() => a.running.size > 0, 10_000, 'the agent to start the job');
    await controller.stop('SIGKILL');
    controller = await startController(configFile);
    env = { ...env, controller: controller.address };
    const got = json((await cli(['--json', 'job', 'get', job.id], env)).stdout);
    expect(got.state).toBe('Running');
    a.hold = false;
    a.releaseAll();
    const w = await cli(['--json', 'job', 'watch', job.id], env);
    expect(w.code, w.stderr).toBe(0);
    expect(json(w.stdout).result).toMatchObject({ status: 'Completed', backupId: expect.stringMatching(new RegExp(`^${a.name}@`)) });
    const backups = json((await cli(['--json', 'backups', '--host', a.name], env)).stdout);
    expect(backups[0]).toMatchObject({ id: json(w.stdout).result.backupId, restorable: true, jobId: job.id });
  });

  it('fails a job whose agent is gone, with a message naming the host and address', async () => {
    const a = agents[4];
    a.hold = true;
    const r = await cli(['--json', 'backup', 'create', '--host', a.name, '--no-wait'], env);
    const [job] = json(r.stdout).jobs;
    await until(() => a.running.size > 0, 10_000, 'the agent to start the job');
    await controller.stop('SIGKILL');
    a.kill();
    controller = await startController(configFile);
    env = { ...env, controller: controller.address };
    const got = json((await cli(['--json', 'job', 'get', job.id], env)).stdout);
    expect(got.state).toBe('Failed');
    expect(got.errorCode).toBe('BOXBACK_ERR_UNREACHABLE');
    expect(got.errorMessage).toContain(`agent ${a.name} at ${a.address}`);
    const w = await cli(['job', 'watch', job.id], env);
    expect(w.code).toBe(6); // failed because its agent did not answer: 6, as --help says
    expect(w.stderr).toMatch(new RegExp(`^boxback: BOXBACK_ERR_UNREACHABLE: job ${job.id} ended Failed: agent ${a.name} at `, 'm'));
  });
});
