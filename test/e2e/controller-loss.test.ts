// The controller dies during a backup (docs/design/protocol.md, "Losing the controller"), with the
// real controller, agent and CLI processes and real rsync. The agent's store is its own directory,
// not the controller's (as with a store mounted only on the agents): the controller cannot adopt
// the backup from the store, so what reaches the catalog comes through the agent's outbox.
//   - SIGKILL of the controller inside the quiesce window: the agent goes on, resumes the
//     services, publishes; the result waits in its outbox; the restarted controller lists the
//     backup, its job ends Completed with a note, and the agent's outbox is emptied (acknowledged);
//   - the result lost right after PUBLISH (controller SIGKILLed while the post-backup hook runs),
//     and the agent restarted too before the controller is back: the outbox survives the agent's
//     restart; the controller, back, records the backup and corrects the job it had failed.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startCluster } from '../../scripts/lib/cluster.mjs';
import { createSampleBox } from '../../scripts/lib/sample-box.mjs';
import { until } from '../controller/helpers.js';

type Box = Awaited<ReturnType<typeof createSampleBox>>;
type Cluster = Awaited<ReturnType<typeof startCluster>>;

let dir: string;
let cluster: Cluster;
let box: Box;
let agentStore: string;
const HOST = 'loss1';
let holdWindow: string;
let holdPost: string;

interface Job {
  id: string;
  state: string;
  phase: string;
  backupId: string;
  errorCode: string;
}

async function cliJson<T>(args: string[], code = 0): Promise<T> {
  const r = await cluster.cli([...args, '--json']);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
  return JSON.parse(r.stdout) as T;
}

/** Wait for a condition (the shared poller of the controller tests), naming it when it never comes. */
const waitFor = <T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, ms = 120_000): Promise<T> =>
  until(fn, ms, what);

const outboxDir = () => path.join(dir, 'agents', HOST, 'state', 'outbox');
const outbox = () => (existsSync(outboxDir()) ? readdirSync(outboxDir()).filter((n) => n.endsWith('.json')) : []);
const published = () =>
  existsSync(path.join(agentStore, HOST)) ? readdirSync(path.join(agentStore, HOST)).filter((n) => n.startsWith('backup_')) : [];
const agentSaid = (re: RegExp) => cluster.agents[HOST].daemon.lines.some((l: string) => re.test(l));

async function jobOf(id: string): Promise<Job> {
  const r = await cluster.cli(['job', 'get', id, '--json']);
  return JSON.parse(r.stdout) as Job;
}

async function startBackup(): Promise<string> {
  const r = await cliJson<{ jobs: Array<{ id: string }> }>(['backup', 'create', '--host', HOST, '--no-wait', '--yes']);
  return r.jobs[0].id;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-ctlloss-'));
  agentStore = path.join(dir, 'agent-store');
  mkdirSync(agentStore);
  holdWindow = path.join(dir, 'hold-window');
  holdPost = path.join(dir, 'hold-post');
  box = await createSampleBox({ root: path.join(dir, 'box'), port: await freePort(), seed: 31, hostname: HOST, artifacts: 10 });
  const wait = (f: string) => `[sh, -c, "while [ -e '${f}' ]; do sleep 0.1; done"]`;
  const plan = readFileSync(box.planFile, 'utf8')
    .replace('  leaseSeconds: 120\n', `  leaseSeconds: 120\n  inWindow:\n    - { command: ${wait(holdWindow)}, timeoutSeconds: 110 }\n`)
    .concat(`hooks:\n  postBackup:\n    - { command: ${wait(holdPost)}, timeoutSeconds: 120 }\n`);
  writeFileSync(box.planFile, plan);
  await box.start();
  cluster = await startCluster({ dir, controllerExtra: 'pollSeconds: 2\n' });
  await cluster.addAgent({ name: HOST, box, store: agentStore });
  const r = await cluster.cli(['hosts', 'add', HOST, '--address', cluster.agents[HOST].address]);
  expect(r.code, r.stderr).toBe(0);
}, 300_000);

afterAll(async () => {
  for (const f of [holdWindow, holdPost]) if (f && existsSync(f)) unlinkSync(f);
  await cluster?.stop();
  await box?.stop().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the controller dies during a backup', () => {
  it('SIGKILL inside the window: the agent goes on and publishes; the restarted controller lists the backup, the job Completed', async () => {
    writeFileSync(holdWindow, '');
    const id = await startBackup();
    await waitFor('the backup inside its window', async () => (await jobOf(id)).phase === 'QUIESCE' && !(await box.healthy()));
    await cluster.controller.stop('SIGKILL');
    await waitFor('the agent to notice', () => agentSaid(/the controller went away; the backup goes on/), 30_000);
    unlinkSync(holdWindow);

    // with no controller: the services run again, the backup is published, its result waits in the outbox
    await waitFor('the services running again', () => box.healthy());
    await waitFor('the backup published', () => published().length === 1);
    await waitFor('the result in the outbox', () => outbox().includes(`${id}.json`), 30_000);
    const kept = JSON.parse(readFileSync(path.join(outboxDir(), `${id}.json`), 'utf8')) as { result: { status: string; backupId: string } };
    expect(kept.result.status).toBe('Completed');
    expect(existsSync(path.join(agentStore, HOST, published()[0], 'manifest.json'))).toBe(true);

    await cluster.restartController();
    const done = await waitFor('the job corrected', async () => {
      const j = await jobOf(id);
      return j.state === 'Completed' && j.backupId ? j : undefined;
    });
    expect(done.backupId).toBe(kept.result.backupId);
    const backups = await cliJson<Array<{ id: string; restorable: boolean; jobId: string }>>(['backups', '--host', HOST]);
    expect(backups.map((b) => [b.id, b.restorable])).toEqual([[kept.result.backupId, true]]);
    const logs = await cluster.cli(['job', 'logs', id]);
    expect(logs.stdout).toMatch(/corrected by the agent's report: loss1 published backup \S+ for this job after it was recorded Failed/);
    await waitFor('the outbox acknowledged', () => outbox().length === 0, 60_000);
    expect(await box.healthy()).toBe(true);
  }, 300_000);

  it('the result lost right after PUBLISH, the agent restarted too: the outbox survives and the catalog gets the backup', async () => {
    writeFileSync(holdPost, '');
    const before = published();
    const id = await startBackup();
    await waitFor('the post-backup hook (after PUBLISH)', async () => (await jobOf(id)).phase === 'POST_BACKUP_SCRIPT');
    expect(published().length).toBe(before.length + 1);
    await cluster.controller.stop('SIGKILL');
    unlinkSync(holdPost);
    await waitFor('the result in the outbox', () => outbox().includes(`${id}.json`), 60_000);
    await waitFor(
      'the agent done with the job',
      () => agentSaid(/"msg":"backup finished"/) && agentSaid(/the result waits in the outbox/),
      30_000,
    );

    await cluster.agents[HOST].daemon.stop('SIGKILL');
    await cluster.agents[HOST].restart();
    expect(outbox()).toContain(`${id}.json`);

    await cluster.restartController();
    const done = await waitFor('the job corrected', async () => {
      const j = await jobOf(id);
      return j.state === 'Completed' && j.backupId ? j : undefined;
    });
    const backups = await cliJson<Array<{ id: string; restorable: boolean }>>(['backups', '--host', HOST]);
    expect(backups.find((b) => b.id === done.backupId)?.restorable).toBe(true);
    expect(backups.length).toBe(before.length + 1);
    const logs = await cluster.cli(['job', 'logs', id]);
    expect(logs.stdout).toMatch(/corrected by the agent's report/);
    await waitFor('the outbox acknowledged', () => outbox().length === 0, 60_000);
    expect(await box.healthy()).toBe(true);
  }, 300_000);
});
