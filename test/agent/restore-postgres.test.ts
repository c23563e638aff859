// The restore engine with a postgres dataset (issue 8), on a throwaway cluster: a writer
// process commits rows while runBackup dumps the database; runRestore loads the dump into
// ANOTHER database (a second plan naming it) beside a small zip dataset, and the restored
// rows are exactly 1..K with K between the counts when the dump started and ended. The old
// database is kept as the safety database until confirm. A health check failing after
// RESTORE_DATABASE rolls back: the previous database content is back.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { createLogger, type Manifest } from '@boxback/common';
import { runBackup } from '../../packages/agent/src/backup/backup.js';
import { loadAgentConfig, type AgentConfig } from '../../packages/agent/src/config.js';
import type { JobContext, ProgressUpdate } from '../../packages/agent/src/job.js';
import { runRestore } from '../../packages/agent/src/restore/restore.js';
import { confirmRestore, listSafetyCopies } from '../../packages/agent/src/restore/safety-copies.js';
import { pgBinDir, startPgCluster, writePasswordFile, type PgCluster } from '../helpers/pg-cluster.js';

const PASSWORD = 'r3store-pw';
const log = createLogger('test', process.env.BOXBACK_TEST_LOG ?? 'silent');

describe.skipIf(!pgBinDir())('restore of a postgres dataset', () => {
  let cluster: PgCluster;
  let dir: string;
  let source: AgentConfig;
  let target: AgentConfig;
  let writer: ChildProcess | undefined;
  let writerExit: Promise<unknown> = Promise.resolve();
  const sql = (q: string, db = 'app') => cluster.admin(q, db);
  const count = (db = 'app') => Number(sql('select count(*) from events;', db));
  const failFlag = () => path.join(dir, 'box', 'unhealthy');
  const data = (which: string) => path.join(dir, 'box', which);

  function config(name: string, database: string, dataDir: string): AgentConfig {
    const planFile = path.join(dir, `plan-${name}.yaml`);
    writeFileSync(
      planFile,
      stringify({
        name: `pg-${name}`,
        quiesce: { mode: 'none' },
        datasets: [
          {
            name: 'database',
            kind: 'postgres',
            archive: `db.${database}`,
            postgres: {
              host: '127.0.0.1',
              port: cluster.port,
              database,
              user: 'app',
              passwordFile: path.join(dir, 'box', 'pg.password'),
              binDir: cluster.binDir,
            },
          },
          { name: 'settings', archive: 'settings.zip', path: dataDir },
        ],
        health: { command: ['sh', '-c', `test ! -e '${failFlag()}'`], timeoutSeconds: 2, intervalSeconds: 0.2 },
      }),
    );
    const agentFile = path.join(dir, `agent-${name}.yaml`);
    writeFileSync(
      agentFile,
      stringify({
        name,
        listen: '127.0.0.1:0',
        tls: { ca: 'unused', cert: 'unused', key: 'unused' },
        store: path.join(dir, 'store'),
        stateDir: path.join(dir, `state-${name}`),
        plan: planFile,
        allowedRoots: [path.join(dir, 'box')],
      }),
    );
    return loadAgentConfig(agentFile);
  }

  function job(config: AgentConfig, jobId: string, onEvent?: (u: ProgressUpdate) => void): { ctx: JobContext; events: ProgressUpdate[] } {
    const events: ProgressUpdate[] = [];
    const ctx: JobContext = {
      config,
      log: log.child({ jobId }),
      jobId,
      signal: new AbortController().signal,
      emit: (u) => {
        events.push(u);
        onEvent?.(u);
      },
    };
    return { ctx, events };
  }

  beforeAll(async () => {
    cluster = await startPgCluster();
    dir = mkdtempSync(path.join(os.tmpdir(), 'bb-pgrestore-'));
    mkdirSync(path.join(dir, 'store'));
    mkdirSync(data('settings-a'), { recursive: true });
    mkdirSync(data('settings-b'), { recursive: true });
    writeFileSync(path.join(data('settings-a'), 'app.conf'), 'mode=backed-up\n');
    writeFileSync(path.join(data('settings-b'), 'app.conf'), 'mode=before-restore\n');
    writePasswordFile(path.join(dir, 'box'), PASSWORD);
    cluster.createApp('app', PASSWORD, 'app');
    sql(`
      create table events (seq int primary key, n int not null);
      create table filler (id int primary key, pad text not null);
      insert into filler select g, repeat(md5(g::text), 4) from generate_series(1, 60000) g;
      create table writer_stop (stop bool);
      alter table events owner to app; alter table filler owner to app; alter table writer_stop owner to app;
    `);
    // The restore target: another database with other content (kept as the safety database).
    sql('create database app_restored owner app;', 'postgres');
    sql(
      "create table previous (note text); insert into previous values ('before the restore'); alter table previous owner to app;",
      'app_restored',
    );
    source = config('pga', 'app', data('settings-a'));
    target = config('pgb', 'app_restored', data('settings-b'));
    // The writer: one committed row per loop turn until writer_stop has a row.
    writer = spawn(
      path.join(cluster.binDir, 'psql'),
      [
        '-X',
        '-q',
        '-v',
        'ON_ERROR_STOP=1',
        '-h',
        cluster.socketDir,
        '-p',
        String(cluster.port),
        '-U',
        'postgres',
        '-d',
        'app',
        '-c',
        `do $$ declare i int := 0; begin loop i := i + 1; insert into events values (i, i * 2); commit;
           exit when i % 10 = 0 and exists (select 1 from writer_stop); perform pg_sleep(0.0005); end loop; end $$;`,
      ],
      { stdio: 'ignore' },
    );
    const w = writer;
    writerExit = new Promise((resolve) => w.on('exit', resolve));
    const end = Date.now() + 15_000;
    while (count() < 200) {
      if (Date.now() > end) throw new Error('the writer did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
  }, 60_000);

  afterAll(async () => {
    if (cluster && writer) {
      sql('insert into writer_stop values (true);');
      await writerExit;
    }
    cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  let backupPath = '';
  const counts = { start: -1, end: -1 };

  it('backs up under load and restores onto another database: rows 1..K, K within the dump', async () => {
    const { ctx } = job(source, 'pgbk-1', (u) => {
      // The writer's count right before pg_dump starts and right after it ended.
      if (u.phase !== 'BACKUP_DATABASE') return;
      if (u.state === 'started') counts.start = count();
      if (u.state === 'done') counts.end = count();
    });
    const bk = await runBackup(ctx, { jobId: 'pgbk-1', live: false, initiatedBy: 'test', initiatedVia: 'cli' });
    expect(bk.errorMessage).toBe('');
    expect(bk.backupPath).not.toBe('');
    backupPath = bk.backupPath;
    expect(counts.start).toBeGreaterThan(0);
    expect(counts.end).toBeGreaterThan(counts.start); // the writer committed while pg_dump ran
    const m = JSON.parse(bk.manifestJson) as Manifest;
    expect(m.datasets.map((d) => [d.archive, d.kind])).toEqual([
      ['db.app', 'postgres'],
      ['settings.zip', 'zip'],
    ]);

    const dry = await runRestore(job(target, 'pgdry-1').ctx, { jobId: 'pgdry-1', backupPath, dryRun: true, force: false, backupId: '' });
    expect(dry.status).toBe('Completed');
    expect(dry.dryRunReport).toMatch(
      /RESTORE_DATABASE db\.app \(custom dump of PostgreSQL [\d.]+, .*\) -> database app_restored at 127\.0\.0\.1:\d+ .*version: same-or-older/,
    );
    expect(dry.dryRunReport).toMatch(/database app_restored renamed aside as app_restored_boxback_safety_pgdry1/);
    expect(Number(sql("select count(*) from pg_database where datname = 'app_restored';", 'postgres'))).toBe(1);

    const { ctx: rctx, events } = job(target, 'pgrs-1');
    const res = await runRestore(rctx, { jobId: 'pgrs-1', backupPath, dryRun: false, force: false, backupId: '' });
    expect(res.errorMessage).toBe('');
    expect(res.status).toBe('Completed');
    const phases = [...new Set(events.map((e) => e.phase))];
    expect(phases.indexOf('RESTORE_DATABASE')).toBeGreaterThan(phases.indexOf('SWAP'));
    expect(phases.indexOf('VERSION_CHECK')).toBeLessThan(phases.indexOf('STOP'));

    const [n, min, max] = sql('select count(*), min(seq), max(seq) from events;', 'app_restored').split('|').map(Number);
    expect(min).toBe(1);
    expect(n).toBe(max); // contiguous 1..K
    expect(max).toBeGreaterThanOrEqual(counts.start);
    expect(max).toBeLessThanOrEqual(counts.end);
    expect(Number(sql('select count(*) from filler;', 'app_restored'))).toBe(60000);
    expect(sql("select to_regclass('public.previous') is null;", 'app_restored')).toBe('t'); // truly emptied first
    expect(readFileSync(path.join(data('settings-b'), 'app.conf'), 'utf8')).toBe('mode=backed-up\n');
    expect(sql("select pg_get_userbyid(datdba) from pg_database where datname = 'app_restored';", 'postgres')).toBe('app');

    // The old database is the safety copy until confirm.
    const safety = sql("select datname from pg_database where datname like 'app_restored_boxback_safety_%';", 'postgres');
    expect(safety).toBe('app_restored_boxback_safety_pgrs1');
    expect(sql('select note from previous;', safety)).toBe('before the restore');
    const listed = await listSafetyCopies(target);
    expect(listed.find((c) => c.jobId === 'pgrs-1')?.paths).toContain(`postgresql://127.0.0.1:${cluster.port}/${safety}`);
    await confirmRestore(target, 'pgrs-1', log);
    expect(sql("select count(*) from pg_database where datname like 'app_restored_boxback_safety_%';", 'postgres')).toBe('0');
    expect(existsSync(`${data('settings-b')}.boxback-safety-pgrs-1`)).toBe(false);
  }, 60_000);

  it('a health check failing after RESTORE_DATABASE rolls back: the previous database is back', async () => {
    expect(backupPath).not.toBe('');
    sql(
      "create table marker (note text); insert into marker values ('between the restores'); alter table marker owner to app;",
      'app_restored',
    );
    const rowsBefore = count('app_restored');
    writeFileSync(path.join(data('settings-b'), 'app.conf'), 'mode=edited-after\n');
    writeFileSync(failFlag(), '');
    try {
      const { ctx, events } = job(target, 'pgrs-2');
      const res = await runRestore(ctx, { jobId: 'pgrs-2', backupPath, dryRun: false, force: false, backupId: '' });
      expect(res.status).toBe('RolledBack');
      expect(res.failedStep).toBe('HEALTH_CHECK');
      expect(events.some((e) => e.phase === 'RESTORE_DATABASE' && e.state === 'done')).toBe(true);
      expect(events.some((e) => e.phase === 'ROLLBACK' && e.state === 'done')).toBe(true);
    } finally {
      rmSync(failFlag(), { force: true });
    }
    expect(sql('select note from marker;', 'app_restored')).toBe('between the restores');
    expect(count('app_restored')).toBe(rowsBefore);
    expect(sql("select count(*) from pg_database where datname like 'app_restored_boxback_safety_%';", 'postgres')).toBe('0');
    expect(readFileSync(path.join(data('settings-b'), 'app.conf'), 'utf8')).toBe('mode=edited-after\n');
  }, 60_000);
});
