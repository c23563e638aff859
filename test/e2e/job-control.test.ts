// Job control through the real CLI, controller and agent, on a GoCD-like box whose stand-in
// server runs as a real process: `boxback jobs`, `job get|watch|cancel|logs`.
//   - a backup cancelled inside its quiesce window (the plan holds the window open with an
//     in-window command): the server runs again afterwards and no backup is Restorable;
//   - a restore cancelled after its swap (a clean-up step holds it): it rolls back, the
//     box's files are those from before, the server runs;
//   - Ctrl-C while watching, as SIGINT to the CLI process and as a real ^C typed on a
//     pseudo-terminal (script(1)): "job X goes on", cursor and line wrap restored, exit 130,
//     and the job still runs; on the terminal the overall line sits above the phase line.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, freePort, startCluster } from '../../scripts/lib/cluster.mjs';
import { createSampleBox } from '../../scripts/lib/sample-box.mjs';
import { liveParts, snapshotTree as snapshot } from '../../scripts/lib/tree-snapshot.mjs';

type Box = Awaited<ReturnType<typeof createSampleBox>>;
type Cluster = Awaited<ReturnType<typeof startCluster>>;

let dir: string;
let cluster: Cluster;
let box: Box;
const HOST = 'gocd-j';
let latestId = '';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function cliJson<T = Record<string, unknown>>(args: string[], code = 0): Promise<T> {
  const r = await cluster.cli([...args, '--json']);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
  return JSON.parse(r.stdout) as T;
}

/** Poll `job get` until `ok(job)`, for at most `ms`. */
async function waitJob(id: string, ok: (j: { state: string; phase: string }) => boolean, ms = 30_000) {
  const until = Date.now() + ms;
  for (;;) {
    const r = await cluster.cli(['job', 'get', id, '--json']);
    const j = JSON.parse(r.stdout) as { state: string; phase: string };
    if (ok(j)) return j;
    if (Date.now() > until) throw new Error(`job ${id} never got there: ${r.stdout}`);
    await sleep(200);
  }
}

async function startBackup(extra: string[] = []): Promise<string> {
  const r = await cliJson<{ jobs: Array<{ id: string }> }>(['backup', 'create', '--host', HOST, '--no-wait', '--yes', ...extra]);
  return r.jobs[0].id;
}

/** The stand-in server answers /health again (it was started by RESUME; it takes a moment to listen). */
async function serverBack(ms = 10_000): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await box.healthy()) return true;
    await sleep(100);
  }
  return false;
}

/** Inside the window: the job is in QUIESCE and the server is down. */
async function inWindow(id: string): Promise<void> {
  await waitJob(id, (j) => j.phase === 'QUIESCE');
  const until = Date.now() + 20_000;
  while (await box.healthy()) {
    if (Date.now() > until) throw new Error('the server never stopped');
    await sleep(100);
  }
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-jobctl-'));
  box = await createSampleBox({ root: path.join(dir, 'box'), port: await freePort(), seed: 11, hostname: HOST, artifacts: 10 });
  // Hold the quiesce window open, and a restore after its swap, until cancelled.
  const plan = readFileSync(box.planFile, 'utf8')
    .replace('  leaseSeconds: 120\n', '  leaseSeconds: 120\n  inWindow:\n    - { command: [sleep, "60"], timeoutSeconds: 90 }\n')
    .concat('restore:\n  cleanup:\n    - { name: hold, command: [sleep, "60"], timeoutSeconds: 90 }\n');
  writeFileSync(box.planFile, plan);
  await box.start();
  cluster = await startCluster({ dir });
  await cluster.addAgent({ name: HOST, box });
  const r = await cluster.cli(['hosts', 'add', HOST, '--address', cluster.agents[HOST].address]);
  expect(r.code, r.stderr).toBe(0);
});

afterAll(async () => {
  await cluster?.stop();
  await box?.stop().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('job control', () => {
  it('cancels a backup inside its quiesce window: the server runs after, nothing is Restorable', async () => {
    const id = await startBackup();
    await inWindow(id);
    const active = await cliJson<Array<{ id: string; state: string }>>(['jobs', '--host', HOST, '--state', 'active']);
    expect(active.map((j) => j.id)).toEqual([id]);

    const c = await cluster.cli(['job', 'cancel', id]);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toContain(`${id} cancelled: the services run again and no backup was kept`);
    expect(await serverBack()).toBe(true);

    const j = await cliJson<{ state: string; errorCode: string; errorMessage: string }>(['job', 'get', id], 5);
    expect(j).toMatchObject({ state: 'Failed', errorCode: 'BOXBACK_ERR_CANCELLED' });
    expect(j.errorMessage).toMatch(/cancelled by quickstart-admin/);
    const backups = await cliJson<Array<{ restorable: boolean }>>(['backups', '--host', HOST]);
    expect(backups.filter((b) => b.restorable)).toEqual([]);
    expect(readdirNames(path.join(cluster.store, HOST)).filter((n) => n.startsWith('.tmp-') || n.startsWith('backup_'))).toEqual([]);

    const logs = await cluster.cli(['job', 'logs', id]);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toMatch(/job\s+queued\s+requested by quickstart-admin/);
    expect(logs.stdout).toMatch(/QUIESCE\s+started/);
    expect(logs.stdout).toMatch(/QUIESCE\s+cancel\s+cancel requested by quickstart-admin/);
    expect(logs.stdout).toMatch(/RESUME\s+done/);
    expect(logs.stdout).toMatch(/Failed\s+BOXBACK_ERR_CANCELLED/);

    const failed = await cluster.cli(['jobs', '--kind', 'backup', '--state', 'failed']);
    expect(failed.stdout).toMatch(new RegExp(`${id}\\s+backup\\s+${HOST}\\s+Failed \\(cancelled\\)`));
    const again = await cluster.cli(['job', 'cancel', id]);
    expect(again.code).toBe(8);
    expect(again.stderr).toMatch(/already ended \(Failed\); there is nothing to cancel/);
  }, 90_000);

  it('Ctrl-C while watching: the job goes on, the CLI says how to follow it and exits 130', async () => {
    const id = await startBackup();
    await inWindow(id);
    const child = spawn(process.execPath, [BIN.cli, '--config', cluster.cliConfig, 'job', 'watch', id], {
      cwd: cluster.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const until = Date.now() + 15_000;
      while (!out.includes('QUIESCE') && Date.now() < until) await sleep(50);
      expect(out).toContain('QUIESCE');
      child.kill('SIGINT');
      expect(await exited).toBe(130);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    expect(err).toContain(`job ${id} goes on; \`boxback job watch ${id}\``);
    expect((await cliJson<{ state: string }>(['job', 'get', id])).state).toBe('Running');

    // A real ^C on a terminal: the bars had hidden the cursor and turned line wrap off.
    const tty = spawn('script', ['-qfec', `${process.execPath} ${BIN.cli} --config ${cluster.cliConfig} job watch ${id}`, '/dev/null'], {
      cwd: cluster.dir,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let screen = '';
    tty.stdout.on('data', (d) => (screen += d));
    const ttyExit = new Promise<number | null>((r) => tty.on('exit', (code) => r(code)));
    try {
      const until = Date.now() + 15_000;
      while (!screen.includes('QUIESCE') && Date.now() < until) await sleep(50);
      expect(screen).toContain('\x1b[?25l'); // cursor hidden while the bars draw
      // the overall line (percent of bytes, rate, ETA) above the host's phase line
      expect(screen).toMatch(/overall\s+(--|\d+)%/);
      expect(screen.indexOf('overall')).toBeLessThan(screen.indexOf('QUIESCE'));
      tty.stdin.write('\x03');
      expect(await ttyExit).toBe(130);
    } finally {
      if (tty.exitCode === null) tty.kill('SIGKILL');
    }
    const after = screen.slice(screen.lastIndexOf('\x1b[?25l'));
    expect(after).toContain('\x1b[?25h');
    expect(after).toContain('\x1b[?7h');
    expect(after).toContain(`job ${id} goes on; \`boxback job watch ${id}\``);
    expect((await cliJson<{ state: string }>(['job', 'get', id])).state).toBe('Running');

    const c = await cluster.cli(['job', 'cancel', id]);
    expect(c.code, c.stderr).toBe(0);
    expect(await serverBack()).toBe(true);
  }, 90_000);

  it('cancels a restore after its swap: it rolls back and the box is as before', async () => {
    const made = await cluster.cli(['backup', 'create', '--host', HOST, '--live', '--yes', '--json']);
    expect(made.code, made.stderr).toBe(0);
    const backupId = JSON.parse(made.stdout).jobs[0].result.backupId as string;
    writeFileSync(path.join(box.configDir, 'cruise-config.xml'), '<cruise>changed after the backup</cruise>\n');
    const before = snapshot(box.root, liveParts(box));

    const start = spawn(process.execPath, [BIN.cli, '--config', cluster.cliConfig, 'backup', 'restore', backupId, '--yes'], {
      cwd: cluster.dir,
      stdio: 'ignore',
    });
    const restoreExit = new Promise<number | null>((res) => start.on('exit', (code) => res(code)));
    try {
      const jobs = await waitForJob('restore');
      await waitJob(jobs, (j) => j.phase === 'CLEANUP');
      const c = await cluster.cli(['job', 'cancel', jobs]);
      expect(c.code, c.stderr).toBe(0);
      expect(c.stdout).toContain(`${jobs} rolled back: the previous data is back and the services run`);
      expect(await restoreExit).toBe(5);
    } finally {
      if (start.exitCode === null) start.kill('SIGKILL');
    }
    expect(snapshot(box.root, liveParts(box))).toEqual(before);
    expect(await serverBack()).toBe(true);
    latestId = backupId;
  }, 120_000);

  it('takes HOST@latest wherever a backup ID is taken: the newest Restorable backup', async () => {
    expect(latestId).not.toBe('');
    const b = await cliJson<{ id: string }>(['backup', 'get', `${HOST}@latest`]);
    expect(b.id).toBe(latestId);
    const v = await cluster.cli(['backup', 'verify', `${HOST}@latest`]);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout.startsWith(`${latestId}: ok`)).toBe(true);
    const dry = await cluster.cli(['backup', 'restore', `${HOST}@latest`, '--dry-run', '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(JSON.parse(dry.stdout).result).toMatchObject({ status: 'Completed', backupId: latestId });
    const none = await cluster.cli(['backup', 'verify', 'nohost@latest']);
    expect(none.code).toBe(3);
    expect(none.stderr).toMatch(/host "nohost" has no Restorable backup/);
  }, 60_000);
});

async function waitForJob(kind: string): Promise<string> {
  const until = Date.now() + 20_000;
  for (;;) {
    const jobs = await cliJson<Array<{ id: string; kind: string }>>(['jobs', '--kind', kind, '--state', 'active']);
    if (jobs.length) return jobs[0].id;
    if (Date.now() > until) throw new Error(`no active ${kind} job`);
    await sleep(100);
  }
}

function readdirNames(d: string): string[] {
  return existsSync(d) ? readdirSync(d) : [];
}
