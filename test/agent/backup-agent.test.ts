// Backups through the real agent process over mutual TLS: progress streaming, the busy
// error, the unquiesce paths that need a process (CancelJob, SIGTERM, SIGKILL and restart), and a
// dropped call: the backup goes on and its result waits in the agent's outbox until acknowledged.
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverStream, unary, type BoxbackError, type JobEvent, type JobResult, type Progress } from '@boxback/common';
import { makeBackupBox, type BackupBox } from '../helpers/backup-box.js';
import { startAgent, type AgentProcess } from '../helpers/agent-process.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFor(cond: () => boolean | Promise<boolean>, ms = 15_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what} not met within ${ms} ms`);
    await sleep(50);
  }
}

let b: BackupBox;
let agent: AgentProcess;
const hold = () => path.join(b.dir, 'hold');
const inWindow = () => path.join(b.dir, 'in-window');
const pidOf = () => (existsSync(b.box.pidFile) ? Number(readFileSync(b.box.pidFile, 'utf8')) : 0);
const running = () => {
  const pid = pidOf();
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const hostEntries = () => {
  const d = path.join(b.store, b.name);
  return existsSync(d) ? readdirSync(d).sort() : [];
};
const restorable = () => hostEntries().filter((n) => n.startsWith('backup_'));

const launch = () =>
  startAgent({
    dir: b.dir,
    name: b.name,
    planFile: b.planFile,
    store: b.store,
    allowedRoots: [b.box.root],
    stateDir: b.stateDir,
    identity: { hostname: 'gocd-box-1', addresses: ['10.20.0.11'] },
  });

/** Start a backup; collect its events; the promise settles with the result or the error. */
function backup(jobId: string, signal?: AbortSignal) {
  const events: Progress[] = [];
  const done = (async (): Promise<JobResult> => {
    let result: JobResult | undefined;
    for await (const ev of serverStream<object, JobEvent>(
      agent.client,
      'Backup',
      { jobId, live: false, initiatedBy: 'alice', initiatedVia: 'cli' },
      { signal },
    )) {
      if (ev.progress) events.push(ev.progress);
      if (ev.result) result = ev.result;
    }
    if (!result) throw new Error('stream ended without a result');
    return result;
  })();
  return { events, done };
}

/** Hold the next backup inside its quiesce window until released. */
async function enterHeldWindow(jobId: string, signal?: AbortSignal) {
  writeFileSync(hold(), '');
  rmSync(inWindow(), { force: true });
  const job = backup(jobId, signal);
  job.done.catch(() => undefined);
  await waitFor(() => existsSync(inWindow()), 15_000, 'backup inside its window');
  expect(running()).toBe(false);
  expect(existsSync(path.join(b.stateDir, 'quiesce.json'))).toBe(true);
  return job;
}

describe('backup through the agent process (mTLS)', () => {
  beforeAll(async () => {
    b = await makeBackupBox({ name: 'gocd1' });
    b.editPlan((p) => {
      p.quiesce.leaseSeconds = 120;
      p.quiesce.inWindow = [
        { command: ['sh', '-c', `touch ${b.dir}/in-window; while [ -f ${b.dir}/hold ]; do sleep 0.05; done`], timeoutSeconds: 100 },
      ];
    });
    await b.box.start();
    agent = await launch();
  });
  afterAll(async () => {
    rmSync(hold(), { force: true });
    await agent?.kill('SIGKILL').catch(() => undefined);
    await b?.cleanup();
  });

  it('streams progress per phase and ends with a Completed result', async () => {
    const { events, done } = backup('job-ok');
    const res = await done;
    expect(res.status).toBe('Completed');
    expect(res.backupId).toMatch(/^gocd1@\d{8}-\d{6}$/);
    expect(existsSync(path.join(b.store, res.backupPath, 'manifest.json'))).toBe(true);
    const phases = [...new Set(events.map((e) => e.phase))];
    expect(phases).toEqual(
      expect.arrayContaining(['CREATING_DIR', 'QUIESCE', 'RESUME', 'BACKUP_DATABASE', 'SYNC_ARTIFACTS', 'VERIFY', 'PUBLISH']),
    );
    const db = events.filter((e) => e.phase === 'BACKUP_DATABASE');
    expect(db[0].state).toBe('started');
    expect(db.at(-1)!.state).toBe('done');
    expect(db.at(-1)!.bytesTotal).toBeGreaterThan(1_000_000);
    expect(running()).toBe(true);
  });

  it('a second backup while one runs gets BOXBACK_ERR_BUSY', async () => {
    const first = await enterHeldWindow('job-long');
    const second = backup('job-second');
    const err = (await second.done.catch((e: unknown) => e)) as BoxbackError;
    expect(err.code).toBe('BOXBACK_ERR_BUSY');
    expect(err.message).toMatch(/gocd1 is busy with backup job job-long/);
    rmSync(hold());
    const res = await first.done;
    expect(res.status).toBe('Completed');
    expect(running()).toBe(true);
  });

  it('a dropped call inside the window: the backup goes on, resumes the stand-in, publishes, and its result waits in the outbox', async () => {
    const before = restorable();
    const ac = new AbortController();
    const job = await enterHeldWindow('job-dropped', ac.signal);
    ac.abort(); // the controller goes away (as when it is killed): its side of the stream ends
    await expect(job.done).rejects.toMatchObject({ code: 'BOXBACK_ERR_CANCELLED' });
    await sleep(500);
    expect(running()).toBe(false); // still inside the window: the job was not cancelled
    rmSync(hold());
    await waitFor(running, 30_000, 'stand-in running again');
    const entry = path.join(b.stateDir, 'outbox', 'job-dropped.json');
    await waitFor(() => existsSync(entry), 60_000, 'the result in the outbox');
    const kept = JSON.parse(readFileSync(entry, 'utf8')) as { result: JobResult };
    expect(kept.result).toMatchObject({ jobId: 'job-dropped', status: 'Completed' });
    expect(restorable()).toEqual([...before, kept.result.backupPath.split('/')[1]].sort());
    expect((await unary<object, { unsentResults: number }>(agent.client, 'GetInfo', {})).unsentResults).toBeGreaterThanOrEqual(1);
    const unsent = await unary<object, { results: JobResult[] }>(agent.client, 'UnsentResults', {});
    // every published backup's result waits until acknowledged (this test talks to the agent without a controller)
    expect(unsent.results.map((r) => r.jobId)).toEqual(expect.arrayContaining(['job-ok', 'job-dropped']));
    const ids = unsent.results.map((r) => r.jobId);
    expect(await unary(agent.client, 'AckResults', { jobIds: [...ids, 'never-ran'] })).toMatchObject({ removed: ids.length });
    expect(existsSync(entry)).toBe(false);
    expect((await unary<object, { unsentResults: number }>(agent.client, 'GetInfo', {})).unsentResults).toBe(0);
  });

  it('CancelJob inside the window resumes the stand-in and leaves no backup', async () => {
    const before = restorable();
    const job = await enterHeldWindow('job-cancel');
    expect(await unary(agent.client, 'CancelJob', { jobId: 'job-cancel', requestedBy: 'alice' })).toMatchObject({ cancelling: true });
    const res = await job.done;
    expect(res).toMatchObject({ status: 'Failed', errorCode: 'BOXBACK_ERR_CANCELLED' });
    await waitFor(running, 15_000, 'stand-in running again');
    await waitFor(() => !existsSync(path.join(b.stateDir, 'quiesce.json')), 5000, 'lease record removed');
    await waitFor(() => !hostEntries().some((n) => n.startsWith('.tmp-')), 5000, 'temporary directory removed');
    expect(restorable()).toEqual(before);
    expect(existsSync(path.join(b.stateDir, 'outbox', 'job-cancel.json'))).toBe(false);
    rmSync(hold(), { force: true });
  });

  it('SIGTERM of the agent inside the window resumes the stand-in before the agent exits', async () => {
    const before = restorable();
    const job = await enterHeldWindow('job-sigterm');
    const exit = await agent.stop();
    expect(exit.code).toBe(0);
    expect(running()).toBe(true);
    expect(existsSync(path.join(b.stateDir, 'quiesce.json'))).toBe(false);
    expect(hostEntries().some((n) => n.startsWith('.tmp-'))).toBe(false);
    expect(restorable()).toEqual(before);
    await job.done.catch(() => undefined);
    rmSync(hold(), { force: true });
    agent = await launch();
  });

  it('SIGKILL of the agent while the stand-in is stopped: the restarted agent starts it again', async () => {
    const before = restorable();
    await enterHeldWindow('job-sigkill');
    const exit = await agent.kill('SIGKILL');
    expect(exit.signal).toBe('SIGKILL');
    rmSync(hold(), { force: true });
    await sleep(300);
    // Nobody is left to resume it: the stand-in stays stopped, the lease record and the partial backup stay on disk.
    expect(running()).toBe(false);
    const record = JSON.parse(readFileSync(path.join(b.stateDir, 'quiesce.json'), 'utf8'));
    expect(record).toMatchObject({ jobId: 'job-sigkill', mode: 'stop', services: ['go-server'] });
    expect(hostEntries().some((n) => n.startsWith('.tmp-backup_'))).toBe(true);
    expect(restorable()).toEqual(before);

    agent = await launch();
    await waitFor(running, 15_000, 'stand-in running after agent restart');
    await waitFor(() => b.box.healthy(), 15_000, 'stand-in healthy');
    expect(existsSync(path.join(b.stateDir, 'quiesce.json'))).toBe(false);
    expect(hostEntries().some((n) => n.startsWith('.tmp-'))).toBe(false);
    expect(agent.output()).toMatch(/services left quiesced by a previous agent were resumed/);

    // And the next backup works.
    const res = await backup('job-after').done;
    expect(res.status).toBe('Completed');
    expect(restorable()).toEqual([...before, path.basename(res.backupPath)].sort());
  });
});
