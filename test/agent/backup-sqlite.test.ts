// kind: sqlite with the real sqlite3: a --live backup through the online backup API while a
// writer commits numbered rows (and a counter row in the same transaction) and rewrites old
// ones; the copy passes PRAGMA integrity_check, restores consistent (rows 1..K, no gap,
// counter = K), and the old database's WAL is moved aside; a damaged database fails the probe.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '@boxback/common';
import { runBackup } from '../../packages/agent/src/backup/backup.js';
import { runRestore } from '../../packages/agent/src/restore/restore.js';
import { makeBackupBox, req, type BackupBox } from '../helpers/backup-box.js';
import { job, restoreReq } from '../helpers/restore-box.js';

const sql = (db: string, s: string) => execFileSync('sqlite3', ['-bail', db, s], { encoding: 'utf8' }).trim();
const prefix = (db: string) => {
  const [rows, max, min, counter] = sql(db, 'SELECT COUNT(*), MAX(id), MIN(id), (SELECT last FROM counter) FROM builds;')
    .split('|')
    .map(Number);
  return { rows, max, min, counter };
};

/** A sqlite3 session fed on stdin: row n and counter = n per transaction, then an old row rewritten. */
function startWriter(db: string, from: number) {
  const sh = spawn('sqlite3', [db], { stdio: ['pipe', 'ignore', 'ignore'] });
  let n = from;
  let running = true;
  sh.stdin.write('PRAGMA busy_timeout = 10000;\n');
  const pump = () => {
    while (running) {
      const old = 1 + ((n * 7919) % (n - 1));
      const s = `BEGIN; INSERT INTO builds VALUES (${n}, randomblob(300)); UPDATE counter SET last = ${n}; COMMIT; UPDATE builds SET payload = randomblob(${300 + (n % 500)}) WHERE id = ${old};\n`;
      n++;
      if (!sh.stdin.write(s)) return void sh.stdin.once('drain', pump);
    }
  };
  pump();
  return {
    async stop() {
      running = false;
      sh.stdin.end();
      await new Promise((r) => (sh.exitCode !== null ? r(null) : sh.once('exit', r)));
      return n - from;
    },
  };
}

describe('kind: sqlite with the real sqlite3', () => {
  let b: BackupBox;
  let db: string;
  const seeded = 5000;
  beforeAll(async () => {
    b = await makeBackupBox();
    db = path.join(b.box.root, 'woodpecker', 'woodpecker.sqlite');
    mkdirSync(path.dirname(db));
    sql(
      db,
      `PRAGMA journal_mode = WAL; CREATE TABLE builds (id INTEGER PRIMARY KEY, payload BLOB); CREATE TABLE counter (last INTEGER);
       WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < ${seeded}) INSERT INTO builds SELECT x, randomblob(300) FROM s;
       INSERT INTO counter VALUES (${seeded});`,
    );
    b.editPlan((p) => {
      p.datasets[0] = { name: 'database', kind: 'sqlite', archive: 'woodpecker-db.zip', sqlite: { file: db } };
    });
  });
  afterAll(async () => {
    await b?.cleanup();
  });

  it('a --live backup under writes passes integrity_check and restores consistent; the old WAL is moved aside', async () => {
    const writer = startWriter(db, seeded + 1);
    let res;
    try {
      await new Promise((r) => setTimeout(r, 300));
      const { ctx } = b.job('sq-1');
      res = await runBackup(ctx, req({ live: true, jobId: 'sq-1' }));
    } finally {
      await writer.stop();
    }
    expect(res.errorMessage).toBe('');
    expect(res.status).toBe('Completed');
    const m = JSON.parse(res.manifestJson) as Manifest;
    const ds = m.datasets.find((d) => d.name === 'database')!;
    expect(ds).toMatchObject({ kind: 'sqlite', capture: 'engine', probe: { result: 'ok', method: 'PRAGMA integrity_check' } });
    const open = mkdtempSync(path.join(os.tmpdir(), 'bb-sq-'));
    execFileSync('unzip', ['-q', path.join(b.store, res.backupPath, 'woodpecker-db.zip'), '-d', open]);
    const copied = prefix(path.join(open, 'woodpecker.sqlite'));
    rmSync(open, { recursive: true, force: true });
    expect(copied.min).toBe(1);
    expect(copied.rows).toBe(copied.max);
    expect(copied.counter).toBe(copied.max);
    expect(copied.rows).toBeGreaterThan(seeded); // the writer wrote during the backup

    // Changes after the backup, and a WAL of them left beside the file: the restore must undo both.
    sql(db, 'DELETE FROM builds WHERE id > 100; UPDATE counter SET last = -1;');
    writeFileSync(`${db}-wal`, Buffer.alloc(8192, 7));
    const { ctx } = job(b.config, 'sqrs-1');
    const rr = await runRestore(ctx, restoreReq(res.backupPath));
    expect(rr.errorMessage).toBe('');
    expect(rr.status).toBe('Completed');
    expect(existsSync(`${db}-wal.boxback-safety-sqrs-1`)).toBe(true);
    expect(prefix(db)).toEqual(copied);
    expect(sql(db, 'PRAGMA integrity_check;')).toBe('ok');
  }, 120_000);

  it('a damaged database fails the probe with SQLite’s words, and nothing is published', async () => {
    const bad = path.join(b.box.root, 'woodpecker', 'damaged.sqlite');
    sql(
      bad,
      `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 20000) INSERT INTO t SELECT x, hex(randomblob(50)) FROM s; CREATE INDEX tv ON t(v);`,
    );
    const fd = openSync(bad, 'r+');
    writeSync(fd, Buffer.alloc(4096 * 3, 0x41), 0, 4096 * 3, Math.floor(statSync(bad).size / 4096 / 2) * 4096);
    closeSync(fd);
    const before = readdirSync(path.join(b.store, b.name)).filter((f) => f.startsWith('backup_')).length;
    b.editPlan((p) => {
      p.datasets[0] = { name: 'database', kind: 'sqlite', archive: 'woodpecker-db.zip', sqlite: { file: bad } };
    });
    const { ctx } = b.job('sq-bad');
    const res = await runBackup(ctx, req({ live: true, jobId: 'sq-bad' }));
    expect(res.status).toBe('Failed');
    expect(res.errorCode).toBe('BOXBACK_ERR_PROBE_FAILED');
    expect(res.errorMessage).toMatch(/woodpecker-db\.zip: PRAGMA integrity_check (found damage|.*malformed)/);
    expect(readdirSync(path.join(b.store, b.name)).filter((f) => f.startsWith('backup_')).length).toBe(before);
  }, 60_000);
});
