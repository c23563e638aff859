// Every way a backup can go wrong, driven directly (runBackup): services are resumed, no
// Restorable backup is left, and the error says what to do.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runBackup } from '../../packages/agent/src/backup/backup.js';
import type { ProgressUpdate } from '../../packages/agent/src/job.js';
import { makeBackupBox, req, type BackupBox } from '../helpers/backup-box.js';

const boxes: BackupBox[] = [];
afterEach(async () => {
  while (boxes.length) await boxes.pop()!.cleanup();
});
async function newBox(o: Parameters<typeof makeBackupBox>[0] = {}) {
  const b = await makeBackupBox(o);
  boxes.push(b);
  return b;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pidOf = (b: BackupBox) => (existsSync(b.box.pidFile) ? Number(readFileSync(b.box.pidFile, 'utf8')) : 0);
const alive = (pid: number) => {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const running = (b: BackupBox) => alive(pidOf(b));
const hostEntries = (b: BackupBox) => {
  const d = path.join(b.store, b.name);
  return existsSync(d) ? readdirSync(d).sort() : [];
};
async function waitFor(cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(50);
  }
}
/** In-window command: mark the window, then wait while the hold file exists. */
const holdCmd = (dir: string) => ['sh', '-c', `touch ${dir}/in-window; while [ -f ${dir}/hold ]; do sleep 0.05; done`];

/** After a failed backup: services up, no lease record, nothing Restorable, nothing temporary. */
async function expectCleanFailure(b: BackupBox) {
  await waitFor(() => running(b), 5000);
  await waitFor(() => b.box.healthy(), 5000);
  expect(existsSync(path.join(b.stateDir, 'quiesce.json'))).toBe(false);
  expect(hostEntries(b).filter((n) => n.startsWith('backup_') || n.startsWith('.tmp-'))).toEqual([]);
}

describe('backup failures resume services and leave nothing Restorable', () => {
  it('a failing step inside the window (onError: fail) resumes the stand-in', async () => {
    const b = await newBox();
    b.editPlan((p) => {
      p.quiesce.inWindow = [{ command: ['sh', '-c', 'echo checkpoint refused >&2; exit 4'] }];
    });
    await b.box.start();
    const res = await runBackup(b.job().ctx, req());
    expect(res.status).toBe('Failed');
    expect(res.errorCode).toBe('BOXBACK_ERR_QUIESCE_FAILED');
    expect(res.errorMessage).toContain('checkpoint refused');
    expect(res.failedStep).toBe('QUIESCE');
    await expectCleanFailure(b);
  });

  it('a missing dataset source fails the copy and resumes', async () => {
    const b = await newBox();
    b.editPlan((p) => {
      p.datasets[0].path = path.join(b.box.root, 'var/lib/go-server/db/nope');
    });
    await b.box.start();
    const res = await runBackup(b.job().ctx, req());
    expect(res.status).toBe('Failed');
    expect(res.errorMessage).toMatch(/dataset database: .*nope does not exist/);
    await expectCleanFailure(b);
  });

  it('lease expiry (a step that outlives leaseSeconds) resumes the services at the deadline', async () => {
    const b = await newBox();
    b.editPlan((p) => {
      p.quiesce.leaseSeconds = 3;
      p.quiesce.inWindow = [{ command: ['sleep', '30'], timeoutSeconds: 60 }];
    });
    await b.box.start();
    const t0 = Date.now();
    const res = await runBackup(b.job().ctx, req());
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(res.status).toBe('Failed');
    expect(res.errorCode).toBe('BOXBACK_ERR_TIMEOUT');
    expect(res.errorMessage).toMatch(/quiesce lease of 3s expired.*services were resumed/);
    await expectCleanFailure(b);
  });

  it('an aborted job (cancelled RPC, SIGTERM) inside the window resumes and removes the partial backup', async () => {
    const b = await newBox();
    b.editPlan((p) => {
      p.quiesce.inWindow = [{ command: holdCmd(b.dir), timeoutSeconds: 60 }];
    });
    writeFileSync(path.join(b.dir, 'hold'), '');
    await b.box.start();
    const ac = new AbortController();
    const pending = runBackup(b.job('job-abort', ac.signal).ctx, req());
    await waitFor(() => existsSync(path.join(b.dir, 'in-window')));
    expect(running(b)).toBe(false);
    expect(existsSync(path.join(b.stateDir, 'quiesce.json'))).toBe(true);
    expect(hostEntries(b).some((n) => n.startsWith('.tmp-backup_'))).toBe(true);
    ac.abort(new Error('the caller cancelled the job'));
    const res = await pending;
    expect(res.status).toBe('Failed');
    expect(res.errorCode).toBe('BOXBACK_ERR_CANCELLED');
    expect(res.errorMessage).toMatch(/cancelled.*services were resumed.*partial backup was removed/);
    await expectCleanFailure(b);
  });

  it('an abort while trees sync (after RESUME) removes the partial backup', async () => {
    const b = await newBox({ artifacts: 300 });
    await b.box.start();
    const ac = new AbortController();
    const { ctx } = b.job('job-abort-sync', ac.signal);
    const seen: ProgressUpdate[] = [];
    const res = await runBackup(
      {
        ...ctx,
        emit: (u) => {
          seen.push(u);
          if (u.phase === 'SYNC_ARTIFACTS' && u.state === 'started') ac.abort(new Error('shutting down'));
        },
      },
      req(),
    );
    expect(res.status).toBe('Failed');
    expect(res.errorCode).toBe('BOXBACK_ERR_CANCELLED');
    expect(seen.some((u) => u.phase === 'RESUME' && u.state === 'done')).toBe(true);
    await expectCleanFailure(b);
  });

  it('a full store (3 MiB tmpfs) fails with BOXBACK_ERR_DISK_FULL, removes the partial directory and resumes', async () => {
    const b0 = await newBox({ artifacts: 80 });
    const store = path.join(b0.dir, 'small-store');
    mkdirSync(store);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', store]);
    try {
      const b = b0;
      const agentYaml = path.join(b.dir, 'agent.yaml');
      writeFileSync(agentYaml, readFileSync(agentYaml, 'utf8').replace(/^store: .*$/m, `store: ${store}`));
      b.store = store;
      b.editPlan(() => undefined);
      await b.box.start();
      const res = await runBackup(b.job().ctx, req());
      expect(res.status).toBe('Failed');
      expect(res.errorCode).toBe('BOXBACK_ERR_DISK_FULL');
      expect(res.errorMessage).toMatch(
        new RegExp(`^store ${store} is full \\(a 3\\.0 MiB filesystem, .* free\\) at ${res.failedStep}: .*partial backup removed$`),
      );
      expect(res.errorMessage).toMatch(/free space in it or delete old backups/);
      await expectCleanFailure(b);
      expect(Number(execFileSync('du', ['-s', '--block-size=1', store], { encoding: 'utf8' }).split('\t')[0])).toBeLessThan(64 * 1024);
    } finally {
      // rsync's receiver (a forked child) may take a moment to exit after a kill: on a box
      // loaded by other work (load average 12) 5 s was once not enough; 20 s, then the
      // processes still holding the store are named.
      for (let i = 0; ; i++) {
        try {
          execFileSync('umount', [store], { stdio: 'ignore' });
          break;
        } catch (err) {
          if (i >= 200) {
            const users = execFileSync(
              'sh',
              [
                '-c',
                `for p in /proc/[0-9]*; do ls -l $p/fd $p/cwd 2>/dev/null | grep -q small-store && echo $p $(tr "\\0" " " < $p/cmdline) $(ls -l $p/fd $p/cwd 2>/dev/null | grep small-store | sed "s/.*-> //"); done; true`,
              ],
              { encoding: 'utf8' },
            );
            execFileSync('umount', ['-l', store]);
            throw new Error(`${(err as Error).message}\n${users}`);
          }
          await sleep(100);
        }
      }
    }
  });

  it('a stale .tmp-backup_ from a crash is removed by the next backup and never counted', async () => {
    const b = await newBox();
    const stale = path.join(b.store, b.name, '.tmp-backup_20200101-000000-crashed');
    mkdirSync(stale, { recursive: true });
    writeFileSync(path.join(stale, 'db.zip'), 'half a zip');
    const res = await runBackup(b.job().ctx, req());
    expect(res.status).toBe('Completed');
    expect(hostEntries(b)).toEqual([path.basename(res.backupPath)]);
  });
});
