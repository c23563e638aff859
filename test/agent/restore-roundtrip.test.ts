// A backup taken by the real backup engine (runBackup) restores with the restore engine:
// byte-equal trees, the service healthy. Plus clean-up steps, and an agent that crashed
// half-way through a swap rolling the restore back when it starts again.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBackup } from '../../packages/agent/src/backup/backup.js';
import { newRecord, saveRecord, readRecords } from '../../packages/agent/src/restore/record.js';
import { runRestore } from '../../packages/agent/src/restore/restore.js';
import { pruneSafetyCopies } from '../../packages/agent/src/restore/safety-copies.js';
import { makeBackupBox, req, type BackupBox } from '../helpers/backup-box.js';
import { snapshot } from '../helpers/make-backup.js';
import { healthySoon, restoreReq } from '../helpers/restore-box.js';

let bb: BackupBox;
let backupPath: string;
let atBackup: Record<string, string>;

const skip = (rel: string) =>
  rel.includes('.boxback-') || rel.startsWith('run') || rel.startsWith('var/log') || rel === 'plan.yaml' || rel.endsWith('cruise.mv.db');

beforeAll(async () => {
  bb = await makeBackupBox({ name: 'gocd5', seed: 5 });
  const { ctx } = bb.job('b-1');
  const r = await runBackup(ctx, req({ jobId: 'b-1' }));
  expect(r.errorMessage).toBe('');
  expect(['Completed', 'PartiallyFailed']).toContain(r.status);
  backupPath = r.backupPath;
  atBackup = snapshot(bb.box.root, skip);
});

afterAll(async () => {
  await bb?.cleanup();
});

describe('round trip with the backup engine', () => {
  it('restores what runBackup wrote, with clean-up steps run', async () => {
    const nomad = path.join(bb.box.root, 'opt', 'nomad');
    mkdirSync(nomad, { recursive: true });
    writeFileSync(path.join(nomad, 'state'), 'old scheduler state');
    writeFileSync(path.join(bb.box.configDir, 'drift.xml'), 'drift');
    const marker = path.join(bb.dir, 'cleanup-ran');
    bb.editPlan((p) => {
      p.restore = {
        cleanup: [
          { name: 'nomad state', remove: [nomad] },
          { name: 'mark running builds failed', command: ['sh', '-c', `echo "$BOXBACK_JOB_ID" > ${marker}`] },
          { name: 'optional', command: ['false'], onError: 'continue' },
        ],
      };
      p.hostFiles = [{ glob: path.join(bb.box.root, 'etc', 'default', 'go-*') }];
    });
    await bb.box.start();
    const { ctx, events } = bb.job('r-round');
    const r = await runRestore(ctx, restoreReq(backupPath));
    expect(r.errorMessage).toBe('');
    expect(r.status).toBe('Completed');
    expect(r.warnings.join('\n')).toMatch(/clean-up step optional failed and was skipped/);
    expect(events.some((e) => e.phase === 'CLEANUP' && e.state === 'done')).toBe(true);
    expect(await bb.box.healthy()).toBe(true);
    await bb.box.stop();
    expect(existsSync(nomad)).toBe(false);
    expect(readFileSync(path.join(`${nomad}.boxback-safety-r-round`, 'state'), 'utf8')).toBe('old scheduler state');
    expect(readFileSync(marker, 'utf8').trim()).toBe('r-round');
    const got = snapshot(bb.box.root, (rel) => skip(rel) || rel.startsWith('opt'));
    expect(got).toEqual(atBackup);
  });

  it('an agent that died half-way through a swap rolls the restore back when it starts', async () => {
    // What a crash between the two renames of a swap leaves behind.
    const target = bb.box.configDir;
    const before = readFileSync(path.join(target, 'cruise-config.xml'));
    const rec = newRecord('r-crashed', 'x@1', 'x/backup_20260101-000000');
    const staging = `${target}.boxback-staging-r-crashed`;
    const safety = `${target}.boxback-safety-r-crashed`;
    mkdirSync(staging);
    writeFileSync(path.join(staging, 'cruise-config.xml'), 'half-restored');
    rec.staging.push(staging);
    rec.moves.push({ kind: 'dir', target, safety, staging, state: 'planned' });
    await saveRecord(bb.stateDir, rec);
    renameSync(target, safety);
    await pruneSafetyCopies(bb.config, bb.job('x').ctx.log);
    expect(readFileSync(path.join(target, 'cruise-config.xml')).equals(before)).toBe(true);
    expect(existsSync(staging)).toBe(false);
    expect(existsSync(safety)).toBe(false);
    expect((await readRecords(bb.stateDir)).find((x) => x.jobId === 'r-crashed')?.status).toBe('rolled-back');
    expect(await healthySoon(bb.box)).toBe(true);
    await bb.box.stop();
    rmSync(path.join(bb.dir, 'cleanup-ran'), { force: true });
  });
});
