// The backup engine driven directly (runBackup with a JobContext) on a real sample box:
// real files, the real rsync and zip/unzip, a real stand-in server process.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { verifyBackupDir, type Manifest } from '@boxback/common';
import { runBackup } from '../../packages/agent/src/backup/backup.js';
import { makeBackupBox, req, type BackupBox } from '../helpers/backup-box.js';

const boxes: BackupBox[] = [];
const scratch: string[] = [];
afterEach(async () => {
  while (boxes.length) await boxes.pop()!.cleanup();
  while (scratch.length) rmSync(scratch.pop()!, { recursive: true, force: true });
});
async function newBox(o: Parameters<typeof makeBackupBox>[0] = {}) {
  const b = await makeBackupBox(o);
  boxes.push(b);
  return b;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pidOf = (b: BackupBox) => (existsSync(b.box.pidFile) ? Number(readFileSync(b.box.pidFile, 'utf8')) : 0);
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
/** A shell command that writes "alive" or "dead" for the stand-in's pid into `out`. */
const probeCmd = (b: BackupBox, out: string) => [
  'sh',
  '-c',
  `if [ -f ${b.box.pidFile} ] && kill -0 $(cat ${b.box.pidFile}) 2>/dev/null; then echo alive; else echo dead; fi > ${out}`,
];

/** Compare two trees: same entries, types, modes, bytes and symlink targets. */
function compareTrees(a: string, b: string, rel = ''): string[] {
  const diffs: string[] = [];
  const names = new Set([...readdirSync(path.join(a, rel)), ...readdirSync(path.join(b, rel))]);
  for (const n of names) {
    const r = path.join(rel, n);
    const pa = path.join(a, r);
    const pb = path.join(b, r);
    if (!existsSync(pa) && !lstatExists(pa)) diffs.push(`${r}: missing in source`);
    else if (!lstatExists(pb)) diffs.push(`${r}: missing in copy`);
    else {
      const sa = lstatSync(pa);
      const sb = lstatSync(pb);
      if ((sa.mode & 0o170000) !== (sb.mode & 0o170000)) diffs.push(`${r}: type differs`);
      else if (sa.isSymbolicLink()) {
        if (readlinkSync(pa) !== readlinkSync(pb)) diffs.push(`${r}: link target differs`);
      } else if ((sa.mode & 0o7777) !== (sb.mode & 0o7777))
        diffs.push(`${r}: mode ${(sa.mode & 0o7777).toString(8)} vs ${(sb.mode & 0o7777).toString(8)}`);
      else if (sa.isDirectory()) diffs.push(...compareTrees(a, b, r));
      else if (!readFileSync(pa).equals(readFileSync(pb))) diffs.push(`${r}: content differs`);
    }
  }
  return diffs;
}
function lstatExists(p: string) {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}
function unzipTo(zip: string): string {
  const out = mkdtempSync(path.join(os.tmpdir(), 'boxback-unzip-'));
  scratch.push(out);
  execFileSync('unzip', ['-q', zip, '-d', out]);
  return out;
}
function backupDirs(b: BackupBox): string[] {
  const d = path.join(b.store, b.name);
  return existsSync(d) ? readdirSync(d).sort() : [];
}
/** Add what a config dir may hold beyond plain files: a symlink, a group-readable file, an empty dir. */
function enrichConfigDir(b: BackupBox) {
  symlinkSync('keystore', path.join(b.box.configDir, 'current.keystore'));
  writeFileSync(path.join(b.box.configDir, 'passwd.properties'), 'admin=secret\n');
  chmodSync(path.join(b.box.configDir, 'passwd.properties'), 0o640);
  mkdirSync(path.join(b.box.configDir, 'plugins-conf'), { mode: 0o750 });
  chmodSync(path.join(b.box.configDir, 'plugins-conf'), 0o750);
}

describe('backup engine (runBackup on a real sample box)', () => {
  it('stop mode: the stand-in is really stopped during the window and running after; archives, trees and checksums are exact', async () => {
    const b = await newBox();
    enrichConfigDir(b);
    const probe = path.join(b.dir, 'probe');
    b.editPlan((p) => {
      p.quiesce.inWindow = [{ command: probeCmd(b, probe) }];
    });
    await b.box.start();
    await sleep(300);
    const pidBefore = pidOf(b);
    const { ctx, events } = b.job('job-stop');
    const res = await runBackup(ctx, req());
    expect(res.errorMessage).toBe('');
    expect(res.status).toBe('Completed');
    expect(readFileSync(probe, 'utf8').trim()).toBe('dead');
    const pidAfter = pidOf(b);
    expect(pidAfter).not.toBe(pidBefore);
    expect(alive(pidAfter)).toBe(true);
    expect(await b.box.healthy()).toBe(true);
    expect(existsSync(path.join(b.stateDir, 'quiesce.json'))).toBe(false);

    const m = JSON.parse(res.manifestJson) as Manifest;
    expect(m.consistency).toBe('quiesced');
    expect(m.quiesce.mode).toBe('stop');
    expect(m.quiesce.windowMs).toBeGreaterThan(0);
    // The service's own stop and start are reported apart from our part of the window.
    const q = m.quiesce as Required<Manifest['quiesce']>;
    expect(q.stopMs).toBeGreaterThan(0);
    expect(q.startMs).toBeGreaterThan(0);
    expect(q.stopMs + q.copyMs + q.startMs).toBeLessThanOrEqual(q.windowMs);
    expect(m.source).toEqual({ hostname: 'gocd-box-1', addresses: ['10.20.0.11'] });
    expect(m.product.version).toBe(b.box.version);
    const dir = path.join(b.store, res.backupPath);
    expect(res.backupPath).toMatch(/^gocd1\/backup_\d{8}-\d{6}$/);
    expect(readdirSync(dir).sort()).toEqual(
      [
        'addons.zip',
        'artifacts',
        'config-dir.zip',
        'config-repo.zip',
        'db.zip',
        'env-files.zip',
        'manifest.json',
        'plugins.zip',
        'test-reports',
        'version.txt',
        'wrapper-config-dir.zip',
      ].sort(),
    );
    expect(readFileSync(path.join(dir, 'version.txt'), 'utf8')).toBe(b.box.version); // no newline, GoCD style

    // Phases: GoCD's names plus ours, each started and done, in the window's order.
    const phases = events.filter((e) => e.state === 'done').map((e) => e.phase);
    for (const ph of [
      'CREATING_DIR',
      'QUIESCE',
      'RESUME',
      'BACKUP_DATABASE',
      'BACKUP_CONFIG',
      'BACKUP_WRAPPER_CONFIG',
      'BACKUP_CONFIG_REPO',
      'BACKUP_VERSION_FILE',
      'SYNC_ARTIFACTS',
      'SYNC_TEST_REPORTS',
      'VERIFY',
      'PUBLISH',
    ]) {
      expect(phases, ph).toContain(ph);
    }
    // Neither the trees nor the archives of the window's copies are in the window: they start
    // once the copy is done, beside the services' start.
    const started = events.filter((e) => e.state === 'started').map((e) => e.phase);
    const quiesceDone = events.findIndex((e) => e.phase === 'QUIESCE' && e.state === 'done');
    expect(quiesceDone).toBeLessThan(events.findIndex((e) => e.phase === 'SYNC_ARTIFACTS' && e.state === 'started'));
    expect(quiesceDone).toBeLessThan(events.findIndex((e) => e.phase === 'BACKUP_DATABASE' && e.state === 'started'));
    expect(started).toContain('SYNC_ARTIFACTS');
    const dbDone = events.find((e) => e.phase === 'BACKUP_DATABASE' && e.state === 'done')!;
    expect(dbDone.bytesDone).toBeGreaterThan(1_000_000);
    expect(dbDone.bytesTotal).toBe(dbDone.bytesDone);

    // Every zip passes `unzip -t`; extracted, each equals its source (modes, symlinks, empty dirs).
    for (const z of readdirSync(dir).filter((f) => f.endsWith('.zip'))) execFileSync('unzip', ['-tq', path.join(dir, z)]);
    const cfg = unzipTo(path.join(dir, 'config-dir.zip'));
    expect(compareTrees(b.box.configDir, cfg)).toEqual([]);
    expect(readlinkSync(path.join(cfg, 'current.keystore'))).toBe('keystore');
    expect(lstatSync(path.join(cfg, 'keystore')).mode & 0o777).toBe(0o600);
    expect(lstatSync(path.join(cfg, 'passwd.properties')).mode & 0o777).toBe(0o640);
    expect(lstatSync(path.join(cfg, 'plugins-conf')).isDirectory()).toBe(true);
    expect(Math.floor(lstatSync(path.join(cfg, 'cruise-config.xml')).mtimeMs / 1000)).toBe(
      Math.floor(lstatSync(path.join(b.box.configDir, 'cruise-config.xml')).mtimeMs / 1000),
    );
    expect(compareTrees(b.box.configRepo, unzipTo(path.join(dir, 'config-repo.zip')))).toEqual([]);
    expect(compareTrees(b.box.plugins, unzipTo(path.join(dir, 'plugins.zip')))).toEqual([]);
    const env = unzipTo(path.join(dir, 'env-files.zip'));
    expect(readdirSync(env)).toEqual(['go-server']);
    expect(readFileSync(path.join(env, 'go-server')).equals(readFileSync(b.box.envFile))).toBe(true);
    // The database copy is consistent: a prefix of the live file ending on a whole record.
    const db = unzipTo(path.join(dir, 'db.zip'));
    expect(readdirSync(db).sort()).toEqual(['cruise.mv.db', 'cruise.trace.db']);
    await b.box.stop();
    const snap = readFileSync(path.join(db, 'cruise.mv.db'));
    const live = readFileSync(b.box.dbFile);
    expect(live.subarray(0, snap.length).equals(snap)).toBe(true);
    expect(snap.toString('latin1').split('\n').at(-2)).toMatch(/^record \d+ at \S+$/);

    // Trees are byte-equal copies, symlink included.
    expect(compareTrees(b.box.artifacts, path.join(dir, 'artifacts'))).toEqual([]);
    expect(compareTrees(b.box.shine, path.join(dir, 'test-reports'))).toEqual([]);
    expect(readlinkSync(path.join(dir, 'artifacts/pipelines/pipe-0/latest'))).toBe('1');

    // The manifest's checksums are what sha256sum says, for every file.
    const sums = execFileSync('sh', ['-c', 'find . -type f ! -name manifest.json -print0 | xargs -0 sha256sum'], {
      cwd: dir,
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
    const fromTool = new Map(
      sums
        .trim()
        .split('\n')
        .map((l) => [l.slice(66).replace(/^\.\//, ''), l.slice(0, 64)]),
    );
    const fromManifest = new Map(m.files.filter((f) => f.type === 'file').map((f) => [f.path, f.sha256]));
    expect(fromManifest).toEqual(fromTool);
    const st = lstatSync(path.join(dir, 'artifacts/pipelines/pipe-0/1/build/job/out-0.jar'));
    const entry = m.files.find((f) => f.path === 'artifacts/pipelines/pipe-0/1/build/job/out-0.jar')!;
    expect(entry).toMatchObject({ size: st.size, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid });
    expect((await verifyBackupDir(dir)).ok).toBe(true);
    expect(m.datasets.map((d) => d.archive)).toEqual([
      'db.zip',
      'config-dir.zip',
      'wrapper-config-dir.zip',
      'config-repo.zip',
      'env-files.zip',
      'plugins.zip',
      'addons.zip',
    ]);
    expect(m.totals.bytes).toBe(res.sizeBytes);
  });

  it("second backup hard-links unchanged tree files to the first, reuses their checksums and the database archive's unchanged blocks", async () => {
    // A database of 6 MiB: its 1 MiB blocks are indexed for reuse (zip-blocks.ts).
    const b = await newBox({ dbBytes: 6 * 1024 * 1024 });
    const first = await runBackup(b.job('j1').ctx, req());
    expect(first.status).toBe('Completed');
    // A CI day in miniature: a new artifact, a changed one, a removed one, database growth.
    appendFileSync(b.box.dbFile, Buffer.alloc(1536 * 1024, 'record growth at a later day\n'));
    const changed = path.join(b.box.artifacts, 'pipelines/pipe-1/1/build/job/out-1.log');
    writeFileSync(changed, 'rebuilt\n');
    writeFileSync(path.join(b.box.artifacts, 'pipelines/pipe-1/1/build/job/new.log'), 'new artifact\n');
    rmSync(path.join(b.box.artifacts, 'pipelines/pipe-2/1/build/job/out-2.log'));
    await sleep(1000); // a new second: a new backup directory
    const second = await runBackup(b.job('j2').ctx, req());
    expect(second.status).toBe('Completed');
    const d1 = path.join(b.store, first.backupPath);
    const d2 = path.join(b.store, second.backupPath);
    const ino = (d: string, rel: string) => lstatSync(path.join(d, rel)).ino;
    const same = 'artifacts/pipelines/pipe-0/1/build/job/out-0.jar';
    expect(ino(d2, same)).toBe(ino(d1, same));
    expect(lstatSync(path.join(d2, same)).nlink).toBe(2);
    expect(ino(d2, 'test-reports/pipe-0/0/junit.xml')).toBe(ino(d1, 'test-reports/pipe-0/0/junit.xml'));
    expect(ino(d2, 'artifacts/pipelines/pipe-1/1/build/job/out-1.log')).not.toBe(
      ino(d1, 'artifacts/pipelines/pipe-1/1/build/job/out-1.log'),
    );
    expect(existsSync(path.join(d2, 'artifacts/pipelines/pipe-2/1/build/job/out-2.log'))).toBe(false);
    expect(compareTrees(b.box.artifacts, path.join(d2, 'artifacts'))).toEqual([]);
    const m2 = JSON.parse(second.manifestJson) as Manifest;
    expect(m2.previous).toBe(first.backupPath);
    const art = m2.trees.find((t) => t.name === 'artifacts')!;
    expect(art.files).toBe(40 + 1 + 1 - 1); // 40 files + symlink + new - removed
    expect(art.linkedFiles).toBe(40 - 2); // all regular files but the changed and the removed one
    expect((await verifyBackupDir(d2)).ok).toBe(true);
    const rebuilt = m2.files.find((f) => f.path === 'artifacts/pipelines/pipe-1/1/build/job/out-1.log')!;
    expect(rebuilt.sha256).toBe(createHash('sha256').update('rebuilt\n').digest('hex'));
    // The database archive: its 6 unchanged MiB copied from the first archive (read back as they
    // were written: VERIFY does not read it again), and it extracts to the database's bytes (the
    // file only grows: the copy is a prefix of it, past the growth).
    const db2 = m2.datasets.find((d) => d.name === 'database')!;
    expect(db2.extra?.reusedBytes).toBe(6 * 1024 * 1024);
    expect(m2.files.find((f) => f.path === 'db.zip')!.sha256).toBe(
      createHash('sha256')
        .update(readFileSync(path.join(d2, 'db.zip')))
        .digest('hex'),
    );
    const verify = m2.phases.find((p) => p.name === 'VERIFY')!;
    expect(verify.bytes).toBe(0);
    const snap = readFileSync(path.join(unzipTo(path.join(d2, 'db.zip')), 'cruise.mv.db'));
    await b.box.stop();
    const live = readFileSync(b.box.dbFile);
    expect(snap.length).toBeGreaterThanOrEqual(7.5 * 1024 * 1024);
    expect(live.subarray(0, snap.length).equals(snap)).toBe(true);
  });

  it('maintenance mode: enter and exit are called around the window; services are never stopped', async () => {
    const b = await newBox();
    const calls: Array<{ url: string; at: number }> = [];
    const srv = http.createServer((rq, rs) => {
      calls.push({ url: rq.url ?? '', at: Date.now() });
      rs.writeHead(204).end();
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as { port: number }).port;
    const marker = path.join(b.dir, 'in-window');
    b.editPlan((p) => {
      p.quiesce = {
        mode: 'maintenance',
        leaseSeconds: 60,
        enter: { http: { url: `http://127.0.0.1:${port}/maintenance/on`, method: 'POST' } },
        exit: { http: { url: `http://127.0.0.1:${port}/maintenance/off`, method: 'POST' } },
        inWindow: [{ command: ['sh', '-c', `date +%s%3N > ${marker}`] }],
      };
    });
    await b.box.start();
    const pid = pidOf(b);
    try {
      const res = await runBackup(b.job().ctx, req());
      expect(res.status).toBe('Completed');
      expect(calls.map((c) => c.url)).toEqual(['/maintenance/on', '/maintenance/off']);
      const at = Number(readFileSync(marker, 'utf8'));
      expect(calls[0].at).toBeLessThanOrEqual(at);
      expect(calls[1].at).toBeGreaterThanOrEqual(at);
      expect(pidOf(b)).toBe(pid);
      const m = JSON.parse(res.manifestJson) as Manifest;
      expect(m.consistency).toBe('quiesced');
      expect(m.quiesce.mode).toBe('maintenance');
    } finally {
      srv.close();
    }
  });

  it('mode none and --live: no quiesce, consistency "live", the stand-in keeps running', async () => {
    const b = await newBox();
    await b.box.start();
    const pid = pidOf(b);
    const live = await runBackup(b.job().ctx, req({ live: true }));
    expect(live.status).toBe('Completed');
    expect(JSON.parse(live.manifestJson)).toMatchObject({ consistency: 'live', quiesce: { mode: 'none', windowMs: 0 } });
    expect(pidOf(b)).toBe(pid);
    b.editPlan((p) => {
      p.quiesce = { mode: 'none' };
    });
    await sleep(1000);
    const { ctx, events } = b.job();
    const none = await runBackup(ctx, req());
    expect(none.status).toBe('Completed');
    expect(JSON.parse(none.manifestJson).consistency).toBe('live');
    expect(events.find((e) => e.phase === 'QUIESCE')?.state).toBe('skipped');
    expect(pidOf(b)).toBe(pid);
    expect(alive(pid)).toBe(true);
    for (const z of ['db.zip', 'config-dir.zip']) execFileSync('unzip', ['-tq', path.join(b.store, none.backupPath, z)]);
  });

  it('hooks: the post-backup hook gets GoCD variables on success and on failure; a failing pre hook stops the backup', async () => {
    const b = await newBox();
    const envOut = path.join(b.dir, 'post-env');
    const dump = ['sh', '-c', `env | grep -E '^(GOCD|BOXBACK)_' | sort >> ${envOut}; echo --- >> ${envOut}`];
    b.editPlan((p) => {
      p.hooks = { preBackup: [{ command: ['true'] }], postBackup: [{ command: dump }] };
    });
    const ok = await runBackup(b.job().ctx, req({ initiatedBy: 'alice', initiatedVia: 'cli' }));
    expect(ok.status).toBe('Completed');
    const [success] = readFileSync(envOut, 'utf8').split('---\n');
    const vars = Object.fromEntries(
      success
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    expect(vars.GOCD_BACKUP_STATUS).toBe('success');
    expect(vars.GOCD_BACKUP_BASE_DIR).toBe(path.join(b.store, 'gocd1'));
    expect(vars.GOCD_BACKUP_PATH).toBe(path.join(b.store, ok.backupPath));
    expect(vars.GOCD_BACKUP_INITIATED_BY_USER).toBe('alice');
    expect(vars.GOCD_BACKUP_INITIATED_VIA).toBeUndefined();
    expect(vars.GOCD_BACKUP_TIMESTAMP).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    // A failing pre hook (onError: fail): no backup, and the post hook hears "failure".
    b.editPlan((p) => {
      p.hooks = { preBackup: [{ command: ['sh', '-c', 'echo disk check failed; exit 3'] }], postBackup: [{ command: dump }] };
    });
    rmSync(envOut);
    const before = backupDirs(b);
    const failed = await runBackup(b.job().ctx, req({ initiatedVia: 'schedule' }));
    expect(failed.status).toBe('Failed');
    expect(failed.errorCode).toBe('BOXBACK_ERR_HOOK_FAILED');
    expect(failed.errorMessage).toContain('disk check failed');
    expect(backupDirs(b)).toEqual(before);
    const text = readFileSync(envOut, 'utf8');
    expect(text).toContain('GOCD_BACKUP_STATUS=failure');
    expect(text).toContain('GOCD_BACKUP_INITIATED_VIA=TIMER');
    expect(text).not.toContain('GOCD_BACKUP_PATH=');

    // onError: continue -> the backup completes as PartiallyFailed with the warning.
    b.editPlan((p) => {
      p.hooks = { preBackup: [{ command: ['false'], onError: 'continue' }], postBackup: [] };
    });
    await sleep(1000);
    const partial = await runBackup(b.job().ctx, req());
    expect(partial.status).toBe('PartiallyFailed');
    expect(partial.warnings.join('\n')).toMatch(/pre-backup hook \(false\) exited with code 1/);
    expect(existsSync(path.join(b.store, partial.backupPath, 'manifest.json'))).toBe(true);
  });
});
