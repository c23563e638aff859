// kind: h2 on a real H2 2.1 engine (libh2-java) serving cruise.mv.db over TCP, with a writer
// committing numbered rows and rewriting old ones the whole time: --live backups through
// H2's own BACKUP TO open in H2 and hold a consistent prefix (rows 1..K, no gap, counter = K),
// five times in a row; a corrupted copy fails the probe and publishes nothing; a restore
// brings a consistent database back that the restarted server serves. One JVM server per file.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, openSync, readdirSync, statSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '@boxback/common';
import { runBackup } from '../../packages/agent/src/backup/backup.js';
import { runRestore } from '../../packages/agent/src/restore/restore.js';
import { freePort, makeBackupBox, req, type BackupBox, type PlanDoc } from '../helpers/backup-box.js';
import { H2_CTL, H2_JAR, SCHEMA, h2, readZipPrefix, startWriter } from '../helpers/h2.js';
import { job, restoreReq } from '../helpers/restore-box.js';

const haveH2 = existsSync(H2_JAR);

describe.skipIf(!haveH2)('kind: h2 on a real H2 server', () => {
  let b: BackupBox;
  let h2dir: string;
  let url: string;
  let pidFile: string;
  let plan: (p: PlanDoc) => void;
  const seeded = 3000;

  beforeAll(async () => {
    b = await makeBackupBox();
    h2dir = path.join(b.box.root, 'h2db');
    mkdirSync(h2dir);
    const port = await freePort();
    pidFile = path.join(b.dir, 'h2.pid');
    url = `jdbc:h2:tcp://127.0.0.1:${port}/cruise`;
    const start = ['node', H2_CTL, 'start', h2dir, String(port), pidFile];
    execFileSync(start[0], start.slice(1));
    h2(
      url,
      `${SCHEMA}; INSERT INTO builds SELECT X, REPEAT('seed-', 60), 0 FROM SYSTEM_RANGE(1, ${seeded}); UPDATE counter SET last = ${seeded}`,
    );
    plan = (p) => {
      p.services.push({
        name: 'h2',
        start,
        stop: ['node', H2_CTL, 'stop', pidFile],
        pidFile,
        stopTimeoutSeconds: 20,
        startTimeoutSeconds: 30,
      });
      p.datasets[0] = { name: 'database', kind: 'h2', archive: 'db.zip', path: h2dir, h2: { url } };
    };
    b.editPlan(plan);
  }, 60_000);
  afterAll(async () => {
    execFileSync('node', [H2_CTL, 'stop', pidFile]);
    await b?.cleanup();
  });

  it('--live backups while rows are committed and rewritten open in H2 and hold a consistent prefix, five times in a row', async () => {
    const writer = startWriter(url, seeded + 1);
    const seen: number[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const { ctx } = b.job(`h2live-${i}`);
        const res = await runBackup(ctx, req({ live: true, jobId: `h2live-${i}` }));
        expect(res.errorMessage).toBe('');
        expect(res.status).toBe('Completed');
        const m = JSON.parse(res.manifestJson) as Manifest;
        const ds = m.datasets.find((d) => d.name === 'database')!;
        expect(ds).toMatchObject({ kind: 'h2', capture: 'engine', probe: { result: 'ok' } });
        expect(ds.probe!.durationMs).toBeGreaterThan(0);
        expect(ds.probe!.message).toMatch(/^[1-9]\d* tables$/); // the application's tables, not only H2's own
        const p = readZipPrefix(path.join(b.store, res.backupPath, 'db.zip'));
        expect(p.min).toBe(1);
        expect(p.rows).toBe(p.max); // no gap
        expect(p.counter).toBe(p.max); // the counter row committed with each row agrees
        expect(p.rows).toBeGreaterThanOrEqual(seen.at(-1) ?? seeded);
        seen.push(p.rows);
      }
    } finally {
      await writer.stop();
    }
    expect(seen.at(-1)!).toBeGreaterThan(seeded); // the writer really wrote during the backups
    // The backup file H2 wrote into the database directory was moved out.
    expect(readdirSync(h2dir).filter((f) => f.startsWith('.boxback-backup-'))).toEqual([]);
  }, 240_000);

  it('a corrupted database copy fails the probe with H2s own words and publishes nothing', async () => {
    const broken = path.join(b.box.root, 'h2broken');
    mkdirSync(broken, { recursive: true });
    const good = path.join(b.dir, 'good-copy');
    mkdirSync(good, { recursive: true });
    // A consistent copy of the database, then everything after the two 4 KiB file headers
    // overwritten: damage only in spots could fall in chunks H2 no longer uses, and pass.
    const { ctx: c0 } = b.job('h2copy');
    const r0 = await runBackup(c0, req({ live: true, jobId: 'h2copy' }));
    execFileSync('unzip', ['-q', path.join(b.store, r0.backupPath, 'db.zip'), '-d', good]);
    copyFileSync(path.join(good, 'cruise.mv.db'), path.join(broken, 'cruise.mv.db'));
    const file = path.join(broken, 'cruise.mv.db');
    const fd = openSync(file, 'r+');
    for (let at = 8192; at < statSync(file).size; at += 65536) writeSync(fd, Buffer.alloc(65536, 0x5a), 0, 65536, at);
    closeSync(fd);
    const before = readdirSync(path.join(b.store, b.name)).filter((f) => f.startsWith('backup_')).length;
    b.editPlan((p) => {
      plan(p);
      p.datasets[0] = { name: 'database', kind: 'h2', archive: 'db.zip', path: broken, h2: { url, quiesce: true } };
    });
    try {
      const { ctx } = b.job('h2bad');
      const res = await runBackup(ctx, req({ jobId: 'h2bad' }));
      expect(res.status).toBe('Failed');
      expect(res.errorCode).toBe('BOXBACK_ERR_PROBE_FAILED');
      expect(res.failedStep).toBe('PROBE_DATABASE');
      expect(res.errorMessage).toMatch(/db\.zip does not open in H2: .*(File corrupted|Unable to read the page|MVStoreException)/);
      expect(res.backupPath).toBe('');
      expect(readdirSync(path.join(b.store, b.name)).filter((f) => f.startsWith('backup_')).length).toBe(before);
    } finally {
      b.editPlan(plan);
    }
  }, 120_000);

  it('restores a live backup taken under writes: the restarted server serves a consistent prefix', async () => {
    const writer = startWriter(url, 1_000_000);
    let res;
    try {
      const { ctx } = b.job('h2rs-bk');
      res = await runBackup(ctx, req({ live: true, jobId: 'h2rs-bk' }));
    } finally {
      await writer.stop();
    }
    expect(res.status).toBe('Completed');
    const inBackup = readZipPrefix(path.join(b.store, res.backupPath, 'db.zip'));
    h2(url, 'DELETE FROM builds WHERE id > 10; UPDATE counter SET last = -1'); // what the restore must undo
    const { ctx, events } = job(b.config, 'h2rs-1');
    const rr = await runRestore(ctx, restoreReq(res.backupPath));
    expect(rr.errorMessage).toBe('');
    expect(rr.status).toBe('Completed');
    expect(events.some((e) => e.phase === 'SWAP')).toBe(true);
    const served = h2(url, "SELECT 'P', COUNT(*), MAX(id), (SELECT last FROM counter) FROM builds");
    const m = /^P\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(-?\d+)/m.exec(served)!;
    expect({ rows: +m[1], max: +m[2], counter: +m[3] }).toEqual({ rows: inBackup.rows, max: inBackup.max, counter: inBackup.counter });
  }, 180_000);
});
