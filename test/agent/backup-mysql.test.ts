// kind: mysql on a real MariaDB (mariadbd started in a temp dir on a free port, once for this
// file): a --live backup with mariadb-dump --single-transaction while a writer commits
// numbered rows (and a counter row in the same transaction) restores consistent (rows 1..K,
// no gap, counter = K) into the emptied database, with a safety dump of what was there; the
// password only ever in a 0600 defaults file; a full probe loads the dump into a throwaway database.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '@boxback/common';
import { runBackup } from '../../packages/agent/src/backup/backup.js';
import { runRestore } from '../../packages/agent/src/restore/restore.js';
import { freePort, makeBackupBox, req, type BackupBox } from '../helpers/backup-box.js';
import { job, restoreReq } from '../helpers/restore-box.js';

const haveMaria = existsSync('/usr/sbin/mariadbd') || existsSync('/usr/bin/mariadbd');

describe.skipIf(!haveMaria)('kind: mysql on a real MariaDB', () => {
  let dir: string;
  let sock: string;
  let server: ChildProcess;
  let b: BackupBox;
  let port: number;
  const q = (s: string, db = 'app') =>
    execFileSync('mariadb', ['--socket', sock, '--batch', '--skip-column-names', db, '-e', s], { encoding: 'utf8' }).trim();
  const prefix = () => {
    const [rows, max, min, counter] = q('SELECT COUNT(*), MAX(id), MIN(id), (SELECT last FROM counter) FROM builds')
      .split('\t')
      .map(Number);
    return { rows, max, min, counter };
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'bb-maria-'));
    sock = path.join(dir, 's');
    port = await freePort();
    execFileSync('mariadb-install-db', [`--datadir=${dir}/data`, '--skip-test-db', '--user=root'], { stdio: 'ignore' });
    server = spawn(
      'mariadbd',
      [
        `--datadir=${dir}/data`,
        `--port=${port}`,
        '--bind-address=127.0.0.1',
        `--socket=${sock}`,
        '--user=root',
        '--skip-grant-tables',
        `--pid-file=${dir}/pid`,
        `--log-error=${dir}/err.log`,
      ],
      { stdio: 'ignore' },
    );
    for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 100));
    execFileSync('mariadb', ['--socket', sock, '-e', 'CREATE DATABASE app']);
    q(
      'CREATE TABLE builds (id INT PRIMARY KEY, payload VARBINARY(2000)) ENGINE=InnoDB; CREATE TABLE counter (last INT) ENGINE=InnoDB; INSERT INTO counter VALUES (0);',
    );
    b = await makeBackupBox();
    const pw = path.join(b.dir, 'db.password');
    writeFileSync(pw, 'n0t-on-argv\n', { mode: 0o600 });
    b.editPlan((p) => {
      p.datasets[0] = {
        name: 'database',
        kind: 'mysql',
        archive: 'db.app.sql',
        mysql: { host: '127.0.0.1', port, database: 'app', user: 'app', passwordFile: pw, probe: 'full' },
      };
    });
  }, 60_000);
  afterAll(async () => {
    server?.kill('SIGTERM');
    await new Promise((r) => (server?.exitCode !== null ? r(null) : server.once('exit', r)));
    await b?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a --live dump under writes restores consistent into the emptied database, with a safety dump', async () => {
    const w = spawn('mariadb', ['--socket', sock, 'app'], { stdio: ['pipe', 'ignore', 'ignore'] });
    let n = 1;
    let running = true;
    w.stdin!.write('SET autocommit = 0;\n');
    const pump = () => {
      while (running) {
        const old = 1 + ((n * 7919) % Math.max(1, n - 1));
        const s = `INSERT INTO builds VALUES (${n}, RANDOM_BYTES(200)); UPDATE counter SET last = ${n}; COMMIT; UPDATE builds SET payload = REPEAT('x', ${100 + (n % 900)}) WHERE id = ${old}; COMMIT;\n`;
        n++;
        if (!w.stdin!.write(s)) return void w.stdin!.once('drain', pump);
      }
    };
    pump();
    await new Promise((r) => setTimeout(r, 1500));
    let res;
    try {
      const { ctx } = b.job('my-1');
      res = await runBackup(ctx, req({ live: true, jobId: 'my-1' }));
    } finally {
      running = false;
      w.stdin!.end();
      await new Promise((r) => (w.exitCode !== null ? r(null) : w.once('exit', r)));
    }
    expect(res.errorMessage).toBe('');
    expect(res.status).toBe('Completed');
    const m = JSON.parse(res.manifestJson) as Manifest;
    expect(res.manifestJson).not.toContain('n0t-on-argv');
    const ds = m.datasets.find((d) => d.name === 'database')!;
    expect(ds).toMatchObject({
      kind: 'mysql',
      capture: 'engine',
      probe: { result: 'ok', method: 'full: loaded into a throwaway database', message: '2 tables' },
    });
    expect(q('SHOW DATABASES', 'mysql')).not.toMatch(/boxback_probe/); // the throwaway database is gone
    const file = path.join(b.store, res.backupPath, 'db.app.sql');
    expect(readFileSync(file, 'utf8')).toMatch(/-- Dump completed/);
    const live = prefix();
    expect(live.rows).toBeGreaterThan(0);

    q('DELETE FROM builds WHERE id > 3; UPDATE counter SET last = -1; CREATE TABLE later (x INT);');
    const { ctx } = job(b.config, 'myrs-1');
    const rr = await runRestore(ctx, restoreReq(res.backupPath));
    expect(rr.errorMessage).toBe('');
    expect(rr.status).toBe('Completed');
    const restored = prefix();
    expect(restored.min).toBe(1);
    expect(restored.rows).toBe(restored.max); // no gap
    expect(restored.counter).toBe(restored.max); // the counter committed with each row agrees
    expect(restored.rows).toBeGreaterThan(3);
    expect(q("SHOW TABLES LIKE 'later'")).toBe(''); // emptied first: a table made after the backup is gone
    const safety = path.join(b.stateDir, 'restores', 'myrs-1-app.sql');
    expect(readFileSync(safety, 'utf8')).toMatch(/CREATE TABLE `later`/); // what was there is kept
  }, 120_000);
});
