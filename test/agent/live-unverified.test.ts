// A --live backup of a plain zip database dataset (no engine driver) is recorded
// live-unverified, the catalog's consistency says so, and the restore says so, in its dry run
// and in its result, before it changes anything.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { consistencyOf, datasetFacts, type Manifest } from '@boxback/common';
import { runBackup } from '../../packages/agent/src/backup/backup.js';
import { runRestore } from '../../packages/agent/src/restore/restore.js';
import { makeBackupBox, req, type BackupBox } from '../helpers/backup-box.js';
import { job, restoreReq } from '../helpers/restore-box.js';

let b: BackupBox;
beforeAll(async () => {
  b = await makeBackupBox();
  await b.box.start();
});
afterAll(async () => b?.cleanup());

it('a live zip of a database file is live-unverified, and the restore says so', async () => {
  const { ctx } = b.job('lu-1');
  const res = await runBackup(ctx, req({ live: true, jobId: 'lu-1' }));
  expect(res.status).toBe('Completed');
  const m = JSON.parse(res.manifestJson) as Manifest;
  const db = m.datasets.find((d) => d.name === 'database')!;
  expect(db).toMatchObject({ kind: 'zip', capture: 'live-unverified' });
  expect(m.datasets.find((d) => d.name === 'plugins')!.capture).toBe('live'); // quiesce: false: needs no window
  expect(consistencyOf(m)).toBe('live-unverified');
  expect(datasetFacts(db)).toMatch(/LIVE-UNVERIFIED/);

  const dry = await runRestore(job(b.config, 'lu-dry').ctx, restoreReq(res.backupPath, { dryRun: true }));
  expect(dry.dryRunReport).toMatch(/warning: db\.zip \(database\) was copied live, .*\(live-unverified\): it may not open/);
  const { ctx: rctx, events } = job(b.config, 'lu-rs');
  const rr = await runRestore(rctx, restoreReq(res.backupPath));
  expect(rr.status).toBe('Completed');
  expect(rr.warnings[0]).toMatch(/db\.zip \(database\) was copied live.*live-unverified/);
  expect(events.some((e) => /live-unverified/.test(e.message ?? ''))).toBe(true);

  const { ctx: qctx } = b.job('lu-2');
  const quiesced = JSON.parse((await runBackup(qctx, req({ jobId: 'lu-2' }))).manifestJson) as Manifest;
  expect(quiesced.datasets.find((d) => d.name === 'database')!.capture).toBe('quiesced');
  expect(consistencyOf(quiesced)).toBe('quiesced');
}, 120_000);
