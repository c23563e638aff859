// How jobs fail, as an operator sees it through the real CLI, controller and agents (real rsync),
// with the store on a small tmpfs (mounted here as root):
//   - an agent SIGKILLed during a backup: the CLI exits 6 (UNREACHABLE), as `boxback --help`
//     says, with one `boxback: BOXBACK_ERR_UNREACHABLE: ...` line; `job get` exits 6 too;
//   - restoring a backup that is not Restorable: exit 8 (NOT_POSSIBLE) and the reason, with or
//     without --yes (never "needs confirmation", a usage error);
//   - the store fills up during SYNC_ARTIFACTS: the progress lines, the job's phase, the job log
//     and the result all name SYNC_ARTIFACTS (the archives lane is "stopped", not "failed");
//     BOXBACK_ERR_DISK_FULL with a message saying the store, its size and what to do; nothing
//     Restorable, no partial directory, the services run.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startCluster } from '../../scripts/lib/cluster.mjs';
import { createSampleBox } from '../../scripts/lib/sample-box.mjs';

type Box = Awaited<ReturnType<typeof createSampleBox>>;
type Cluster = Awaited<ReturnType<typeof startCluster>>;

let dir: string;
let store: string;
let cluster: Cluster;
let small: Box;
let big: Box;
const SMALL = 'fail-small';
const BIG = 'fail-big';
/** While this file exists the small box's quiesce window stays open. */
let hold: string;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function cliJson<T = Record<string, unknown>>(args: string[], code = 0): Promise<T> {
  const r = await cluster.cli([...args, '--json']);
  expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
  return JSON.parse(r.stdout) as T;
}

async function waitFor(what: string, ok: () => Promise<boolean> | boolean, ms = 90_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(150);
  }
}

function lastLine(s: string): string {
  return s.trimEnd().split('\n').pop() ?? '';
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-jobfail-'));
  store = path.join(dir, 'store');
  mkdirSync(store);
  // 6 MiB: the small box's backups fit, the big box's artifacts (about 5 MiB) and its stage do not.
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', store]);
  hold = path.join(dir, 'hold');
  small = await createSampleBox({
    root: path.join(dir, 'small'),
    port: await freePort(),
    seed: 21,
    hostname: SMALL,
    artifacts: 6,
    dbBytes: 20_000,
  });
  const plan = readFileSync(small.planFile, 'utf8').replace(
    '  leaseSeconds: 120\n',
    `  leaseSeconds: 120\n  inWindow:\n    - { command: [sh, -c, "while [ -e '${hold}' ]; do sleep 0.1; done"], timeoutSeconds: 90 }\n`,
  );
  writeFileSync(small.planFile, plan);
  big = await createSampleBox({
    root: path.join(dir, 'big'),
    port: await freePort(),
    seed: 22,
    hostname: BIG,
    artifacts: 300,
    dbBytes: 20_000,
  });
  await small.start();
  await big.start();
  cluster = await startCluster({ dir });
  for (const [name, box] of [
    [SMALL, small],
    [BIG, big],
  ] as const) {
    const a = await cluster.addAgent({ name, box });
    const r = await cluster.cli(['hosts', 'add', name, '--address', a.address]);
    expect(r.code, r.stderr).toBe(0);
  }
}, 300_000);

afterAll(async () => {
  await cluster?.stop();
  await small?.stop().catch(() => undefined);
  await big?.stop().catch(() => undefined);
  if (store) {
    for (let i = 0; i < 50; i++) {
      try {
        execFileSync('umount', [store], { stdio: 'ignore' });
        break;
      } catch {
        await sleep(100); // rsync's receiver may take a moment to exit
      }
    }
    if (existsSync(store) && readdirSync(store).length) execFileSync('umount', ['-l', store]);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('exit codes', () => {
  it('an agent SIGKILLed during a backup: the CLI exits 6 with one UNREACHABLE line; the restarted agent resumes the services', async () => {
    writeFileSync(hold, '');
    const following = cluster.cli(['backup', 'create', '--host', SMALL, '--yes']);
    let id = '';
    await waitFor('the backup inside its window', async () => {
      const jobs = await cliJson<Array<{ id: string; phase: string; state: string }>>(['jobs', '--host', SMALL, '--state', 'active']);
      id = jobs[0]?.id ?? '';
      return jobs[0]?.phase === 'QUIESCE' && !(await small.healthy());
    });
    await cluster.agents[SMALL].daemon.stop('SIGKILL');
    const r = await following;
    expect(r.code, r.stderr).toBe(6);
    expect(lastLine(r.stderr)).toMatch(new RegExp(`^boxback: BOXBACK_ERR_UNREACHABLE: job ${id} ended Failed: agent ${SMALL} at \\S+ `));
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const get = await cluster.cli(['job', 'get', id]);
    expect(get.code).toBe(6);
    expect(get.stdout).toMatch(/State\s+Failed/);

    unlinkSync(hold);
    await cluster.agents[SMALL].restart();
    await waitFor('the services running again (the lease resumed by the restarted agent)', () => small.healthy());
  }, 240_000);

  it('restoring a backup that is not Restorable exits 8 with the reason, with or without --yes', async () => {
    const made = await cluster.cli(['backup', 'create', '--host', SMALL, '--yes']);
    expect(made.code, made.stderr).toBe(0);
    const [b] = await cliJson<Array<{ id: string; path: string; restorable: boolean }>>(['backups', '--host', SMALL]);
    expect(b.restorable).toBe(true);
    // damage it in the store: verify finds it, and it is no longer Restorable
    const version = path.join(store, b.path, 'version.txt');
    writeFileSync(version, `${readFileSync(version, 'utf8')}tampered\n`);
    const v = await cluster.cli(['backup', 'verify', b.id]);
    expect(v.code).toBe(5);
    for (const extra of [[], ['--yes'], ['--dry-run']]) {
      const r = await cluster.cli(['backup', 'restore', b.id, ...extra]);
      expect(r.code, `${extra.join(' ')}: ${r.stderr}`).toBe(8);
      expect(r.stderr).toMatch(
        new RegExp(
          `^boxback: BOXBACK_ERR_NOT_RESTORABLE: backup ${b.id} is not Restorable \\(its last verification failed: .*\\); pick a Restorable one`,
        ),
      );
      expect(r.stderr).not.toMatch(/pass --yes/);
    }
    expect(await cliJson<Array<unknown>>(['jobs', '--host', SMALL, '--kind', 'restore'])).toEqual([]);
  }, 240_000);
});

describe('a full store', () => {
  it('names the step that filled it everywhere, says DISK_FULL a person can act on, keeps nothing, and the services run', async () => {
    const r = await cluster.cli(['backup', 'create', '--host', BIG, '--yes']);
    expect(r.code, r.stderr).toBe(5);
    const end = lastLine(r.stderr);
    // Which step's write hits the full disk first is a race (the artifacts fill it; a zip
    // written beside them may be the first to be refused): that step is named everywhere.
    const step = /^boxback: BOXBACK_ERR_DISK_FULL: job \S+ ended Failed at ([A-Z_]+): /.exec(end)?.[1] ?? '';
    expect(step, end).toMatch(/^(SYNC|BACKUP)_[A-Z_]+$/);
    expect(end).toMatch(new RegExp(`^boxback: BOXBACK_ERR_DISK_FULL: job \\S+ ended Failed at ${step}: store ${store} is full `));
    expect(end).toMatch(new RegExp(`\\(a 6\\.0 MiB filesystem, [\\d.]+ \\S+ free\\) at ${step}: `));
    expect(end).toMatch(
      new RegExp(`free space in it or delete old backups \\(\`boxback backups --host ${BIG}\`, \`boxback backup delete ID\`\\)`),
    );
    expect(end).toMatch(/services were resumed; partial backup removed$/);

    // the progress lines: that step failed, and no other phase "failed" (a sibling is "stopped")
    const lines = r.stdout.split('\n').filter((l) => l.startsWith(BIG));
    const failedPhases = lines.map((l) => /^\S+\s+(\S+)\s+failed\b/.exec(l)?.[1]).filter(Boolean);
    expect(failedPhases, r.stdout).toEqual([step]);
    for (const l of lines.filter((x) => /\sstopped\s/.test(x))) expect(l).toMatch(new RegExp(`stopped: ${step} failed`));

    const [job] = await cliJson<Array<{ id: string; state: string; phase: string; errorCode: string }>>(['jobs', '--host', BIG]);
    expect(job).toMatchObject({ state: 'Failed', phase: step, errorCode: 'BOXBACK_ERR_DISK_FULL' });
    const logs = await cluster.cli(['job', 'logs', job.id]);
    const logFailed = logs.stdout
      .split('\n')
      .map((l) => /^\S+ \S+\s+(\S+)\s+failed\s/.exec(l)?.[1])
      .filter(Boolean);
    expect(logFailed, logs.stdout).toEqual([step]);
    expect(logs.stdout).toMatch(new RegExp(`${step}\\s+Failed\\s+BOXBACK_ERR_DISK_FULL; store `));

    expect(await cliJson<Array<{ restorable: boolean }>>(['backups', '--host', BIG])).toEqual([]);
    const hostDir = path.join(store, BIG);
    await waitFor('no partial directory', () => !existsSync(hostDir) || readdirSync(hostDir).every((n) => !n.startsWith('.tmp-')), 10_000);
    expect(await big.healthy()).toBe(true);
    expect(existsSync(path.join(dir, 'agents', BIG, 'state', 'quiesce.json'))).toBe(false);
  }, 240_000);
});
