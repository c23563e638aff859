// The postgres dataset kind (issue 8) against a real, throwaway PostgreSQL cluster and the
// real pg_dump / pg_restore / psql: a writer process commits rows while the dump runs, the
// dump is restored onto a second database, and the restore holds exactly the rows committed
// before the dump's snapshot. Then: emptying and safety copies, clean mode, the newer-major
// refusal, a failed load put back, the password kept off command lines and out of logs.
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, appendFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BoxbackError } from '@boxback/common';
import { dumpPostgres, manifestExtra, type DumpResult } from '../../packages/agent/src/postgres/dump.js';
import { parsePostgresDataset, type PostgresDataset } from '../../packages/agent/src/postgres/plan.js';
import {
  dropSafetyDatabase,
  dryRunDescribe,
  inspectDump,
  metaFromManifest,
  preflightPostgres,
  putBackSafetyDatabase,
  restorePostgres,
} from '../../packages/agent/src/postgres/restore.js';
import { startPgCluster, writePasswordFile, type PgCluster } from '../helpers/pg-cluster.js';

let cluster: PgCluster;
let dir: string;
let passwordFile: string;
// Characters that need escaping in a .pgpass line, and a quote.
const PW_TAG = Math.random().toString(36).slice(2, 10);
const PASSWORD = `S3cret:pa\\ss'${PW_TAG}`;

function dataset(database: string, pg: Record<string, unknown> = {}, index = 0): PostgresDataset {
  return parsePostgresDataset(
    {
      name: 'database',
      kind: 'postgres',
      archive: `db.${database}`,
      postgres: { host: '127.0.0.1', port: cluster.port, database, user: 'app', passwordFile, binDir: cluster.binDir, ...pg },
    },
    index,
  );
}

const sql = (q: string, db = 'app') => cluster.admin(q, db);
const count = (db: string, table = 'events') => Number(sql(`select count(*) from ${table};`, db));
const dbExists = (db: string) => sql(`select count(*) from pg_database where datname = '${db}';`) === '1';

async function rejects(p: Promise<unknown>): Promise<BoxbackError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(BoxbackError);
    return err as BoxbackError;
  }
  throw new Error('expected a rejection');
}

function capturingLogger(): { log: pino.Logger; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, stream), text: () => chunks.join('') };
}

beforeAll(async () => {
  cluster = await startPgCluster({ settings: { track_commit_timestamp: 'on' } });
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-pgtest-'));
  passwordFile = writePasswordFile(dir, PASSWORD);
  cluster.createApp('app', PASSWORD, 'app');
  sql(`
    create table events (seq int primary key, committed_at timestamptz not null, writer_pid int not null);
    create table event_lines (seq int primary key references events, n int not null);
    create table filler (id int primary key, pad text not null);
    insert into filler select g, repeat(md5(g::text), 6) from generate_series(1, 120000) g;
    create table writer_stop (stop bool);
    alter table events owner to app; alter table event_lines owner to app; alter table filler owner to app; alter table writer_stop owner to app;
  `);
});

afterAll(() => {
  cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/**
 * The writer: a real psql process whose server-side loop commits one transaction per
 * sequence number, each inserting into two tables, until writer_stop has a row.
 */
function startWriter(): ChildProcess {
  const loop = `do $$
    declare i int := coalesce((select max(seq) from events), 0);
    begin
      loop
        i := i + 1;
        insert into events values (i, clock_timestamp(), pg_backend_pid());
        insert into event_lines values (i, i * 2);
        commit;
        exit when i % 10 = 0 and exists (select 1 from writer_stop);
        perform pg_sleep(0.0005);
      end loop;
    end $$;`;
  return spawn(
    path.join(cluster.binDir, 'psql'),
    ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', cluster.socketDir, '-p', String(cluster.port), '-U', 'postgres', '-d', 'app', '-c', loop],
    { stdio: 'ignore' },
  );
}

async function waitFor(cond: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Dump under load and record the server's clock and the committed count just before and after. */
async function dumpUnderLoad(
  ds: PostgresDataset,
  file: string,
): Promise<{ res: DumpResult; before: number; after: number; tBefore: string; tAfter: string }> {
  const [tBefore, before] = sql(`select clock_timestamp(), (select count(*) from events);`).split('|');
  const res = await dumpPostgres(ds, file);
  const [tAfter, after] = sql(`select clock_timestamp(), (select count(*) from events);`).split('|');
  return { res, before: Number(before), after: Number(after), tBefore, tAfter };
}

/** The proof: the restore holds rows 1..K in both tables, all committed before the dump ended, every row committed before it started, and the writer went on past K. */
function checkSnapshot(copy: string, d: { before: number; after: number; tBefore: string; tAfter: string }): number {
  const [n, min, max, lines, linesMax] = sql(
    `select count(*), min(seq), max(seq), (select count(*) from event_lines), (select max(seq) from event_lines) from events;`,
    copy,
  )
    .split('|')
    .map(Number);
  const k = max;
  expect(n).toBe(k); // contiguous 1..K: nothing missing in the middle
  expect(min).toBe(1);
  expect(lines).toBe(k); // the second table was read in the same snapshot
  expect(linesMax).toBe(k);
  expect(k).toBeGreaterThanOrEqual(d.before); // committed before the dump started: present
  expect(k).toBeLessThanOrEqual(d.after); // committed after it ended: absent
  // By the source's real commit timestamps (track_commit_timestamp): every row committed
  // before the dump started is in, none committed after it ended, and the writer committed
  // rows while the dump ran (so the check has teeth).
  const [inBefore, lastIn, duringDump] = sql(
    `select (select count(*) from events where pg_xact_commit_timestamp(xmin) < '${d.tBefore}'),
            (select max(pg_xact_commit_timestamp(xmin)) < '${d.tAfter}' from events where seq <= ${k}),
            (select count(*) from events where pg_xact_commit_timestamp(xmin) between '${d.tBefore}' and '${d.tAfter}');`,
  ).split('|');
  expect(k).toBeGreaterThanOrEqual(Number(inBefore));
  expect(lastIn).toBe('t');
  expect(Number(duringDump)).toBeGreaterThan(0);
  expect(count('app')).toBeGreaterThan(k); // rows after the snapshot exist in the source, not in the copy
  expect(Number(sql('select count(*) from filler;', copy))).toBe(120000);
  return k;
}

describe('postgres dataset under load', () => {
  let writer: ChildProcess;
  let writerExit: Promise<number | null>;
  const dumps: Record<string, { res: DumpResult; k: number; file: string }> = {};

  beforeAll(async () => {
    writer = startWriter();
    writerExit = new Promise((resolve) => writer.on('exit', (code) => resolve(code)));
    await waitFor(() => count('app') >= 300);
  });

  afterAll(async () => {
    sql('insert into writer_stop values (true);');
    await writerExit;
  });

  it.each(['custom', 'plain'] as const)('%s format: the copy holds exactly the rows committed before the snapshot', async (format) => {
    const ds = dataset('app', { format });
    const file = path.join(dir, `db.app.${format}`);
    const d = await dumpUnderLoad(ds, file);
    expect(d.res).toMatchObject({ format, database: 'app', serverVersionNum: cluster.version, sizeBytes: statSync(file).size });
    expect(d.res.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(d.res.serverVersion).toMatch(/^\d+\.\d+$/);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    await waitFor(() => count('app') > d.after + 20); // the writer goes on past the snapshot

    const copy = `app_copy_${format}`;
    const meta = metaFromManifest(JSON.parse(JSON.stringify(manifestExtra(d.res))), `db.app`);
    const r = await restorePostgres(dataset(copy), file, meta, { jobId: `job-${format}` });
    expect(r).toMatchObject({ database: copy, format, emptiedWith: 'recreate', safetyDatabase: null, forcedNewer: false });
    const k = checkSnapshot(copy, d);
    expect(sql(`select pg_get_userbyid(datdba) from pg_database where datname = '${copy}';`)).toBe('app');
    expect(sql(`select string_agg(distinct tableowner, ',') from pg_tables where schemaname = 'public';`, copy)).toBe('app');
    dumps[format] = { res: d.res, k, file };
  });

  it('reads a dump file it did not record (a GoCD-made backup): format and versions from the header', async () => {
    for (const [format, { file, res }] of Object.entries(dumps)) {
      const meta = await inspectDump(dataset('app'), file);
      expect(meta).toMatchObject({ format, serverVersionNum: cluster.version, dumpVersion: res.dumpVersion, sizeBytes: res.sizeBytes });
    }
  });

  it('empties an existing database: leftovers gone, the old one kept as the safety copy, put back or dropped on request', async () => {
    const { file, res, k } = dumps.custom;
    const copy = 'app_copy_custom';
    sql(
      'create table leftover (x int); insert into leftover values (42); delete from event_lines where seq > 5; delete from events where seq > 5;',
      copy,
    );
    const ds = dataset(copy);
    // A session left connected to the database (a service that did not quite stop) is ended.
    const idle = spawn(
      path.join(cluster.binDir, 'psql'),
      ['-X', '-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'app', '-d', copy, '-c', 'select pg_sleep(120)'],
      { stdio: 'ignore', env: { ...process.env, PGPASSWORD: PASSWORD } }, // the service's session, not the agent's
    );
    const idleExit = new Promise((resolve) => idle.on('exit', resolve));
    await waitFor(() => sql(`select count(*) from pg_stat_activity where datname = '${copy}' and query like '%pg_sleep(120)%';`) === '1');
    const r = await restorePostgres(ds, file, manifestExtra(res) as never, { jobId: 'job-2' });
    await idleExit;
    expect(r.warnings).toContain(`ended 1 session(s) still connected to database ${copy}`);
    expect(r.safetyDatabase).toBe('app_copy_custom_boxback_safety_job2');
    expect(sql(`select to_regclass('public.leftover') is null;`, copy)).toBe('t');
    expect(count(copy)).toBe(k);
    expect(sql('select x from leftover;', r.safetyDatabase!)).toBe('42');

    // ROLLBACK after a later step failed: the previous database is back.
    await putBackSafetyDatabase(ds, r.safetyDatabase!);
    expect(dbExists(r.safetyDatabase!)).toBe(false);
    expect(sql('select x from leftover;', copy)).toBe('42');
    expect(count(copy)).toBe(5);

    // restore confirm: the safety copy is dropped.
    const r2 = await restorePostgres(ds, file, manifestExtra(res) as never, { jobId: 'job-3' });
    await dropSafetyDatabase(ds, r2.safetyDatabase!);
    expect(dbExists(r2.safetyDatabase!)).toBe(false);
    expect(count(copy)).toBe(k);
  });

  it('emptyWith: clean restores with pg_restore --clean --if-exists in one transaction', async () => {
    const { file, res, k } = dumps.custom;
    const copy = 'app_copy_plain';
    sql('delete from event_lines where seq > 3; delete from events where seq > 3;', copy);
    const r = await restorePostgres(dataset(copy, { emptyWith: 'clean' }), file, manifestExtra(res) as never);
    expect(r).toMatchObject({ emptiedWith: 'clean', safetyDatabase: null });
    expect(count(copy)).toBe(k);
    expect(count(copy, 'event_lines')).toBe(k);
  });

  it('a failed load leaves the previous database in place, and the error carries the last stderr line', async () => {
    const { file, res } = dumps.plain;
    const broken = path.join(dir, 'db.broken');
    copyFileSync(file, broken);
    appendFileSync(broken, '\nselect 1/0;\n');
    const copy = 'app_copy_plain';
    sql("create table marker (v text); insert into marker values ('before');", copy);
    const err = await rejects(restorePostgres(dataset(copy), broken, manifestExtra(res) as never, { jobId: 'job-broken' }));
    expect(err.code).toBe('BOXBACK_ERR_RESTORE_FAILED');
    expect(err.message).toMatch(/division by zero/);
    expect(sql('select v from marker;', copy)).toBe('before');
    expect(sql(`select count(*) from pg_database where datname like '%boxback_safety_jobbroken%';`)).toBe('0');
  });
});

describe('version rule', () => {
  let file: string;
  let res: DumpResult;
  beforeAll(async () => {
    file = path.join(dir, 'db.app.small');
    res = await dumpPostgres(dataset('app', { extraArgs: ['--exclude-table-data=public.filler'] }), file);
    sql('create database app_target owner app;');
    sql("create table marker (v text); insert into marker values ('untouched');", 'app_target');
  });

  it('refuses a dump from a newer major server, naming both versions, and changes nothing', async () => {
    const meta = { ...manifestExtra(res), serverVersion: '17.2', serverVersionNum: 170002 };
    const ds = dataset('app_target');
    const err = await rejects(restorePostgres(ds, file, meta as never));
    expect(err.code).toBe('BOXBACK_ERR_VERSION_NEWER');
    expect(err.message).toContain('PostgreSQL 17.2');
    expect(err.message).toContain(`PostgreSQL ${res.serverVersion}`);
    expect(err.message).toMatch(/--force/);
    expect(sql('select v from marker;', 'app_target')).toBe('untouched');
    const pre = await rejects(preflightPostgres(ds, file, meta as never));
    expect(pre.code).toBe('BOXBACK_ERR_VERSION_NEWER');
    await expect(preflightPostgres(ds, file, meta as never, { force: true })).resolves.toMatchObject({ verdict: 'newer-forced' });

    const dry = await dryRunDescribe(ds, meta as never, { jobId: 'j1' });
    expect(dry.verdict).toBe('newer-refused');
    expect(dry.warnings.join('\n')).toContain('17.2');
    expect(dry.steps.join('\n')).toContain('app_target_boxback_safety_j1');
    expect(sql('select v from marker;', 'app_target')).toBe('untouched');
  });

  it('--force restores it anyway, loudly; an older-or-same dump passes', async () => {
    const meta = { ...manifestExtra(res), serverVersion: '17.2', serverVersionNum: 170002 };
    const r = await restorePostgres(dataset('app_target'), file, meta as never, { force: true });
    expect(r.forcedNewer).toBe(true);
    expect(r.warnings.join('\n')).toMatch(/17\.2.*--force/);
    expect(Number(sql('select count(*) from filler;', 'app_target'))).toBe(0);
    const older = await restorePostgres(dataset('app_target'), file, { ...manifestExtra(res), serverVersionNum: 140009 } as never);
    expect(older.forcedNewer).toBe(false);
    await dropSafetyDatabase(dataset('app_target'), r.safetyDatabase!);
    await dropSafetyDatabase(dataset('app_target'), older.safetyDatabase!);
  });
  it('a restore cancelled during the load puts the previous database back', async () => {
    sql("create table marker2 (v text); insert into marker2 values ('kept');", 'app_target');
    const ac = new AbortController();
    const onProgress = (m: string) => {
      if (m.startsWith('loading')) ac.abort();
    };
    const err = await rejects(
      restorePostgres(dataset('app_target'), file, manifestExtra(res) as never, { signal: ac.signal, onProgress, jobId: 'cancel' }),
    );
    expect(err.code).toBe('BOXBACK_ERR_CANCELLED');
    expect(sql('select v from marker2;', 'app_target')).toBe('kept');
    expect(dbExists('app_target_boxback_safety_cancel')).toBe(false);
  });
});

describe('the password', () => {
  it('is on no command line, in no environment, log line, result or error; its temporary file is 0600 and removed', async () => {
    const { log, text } = capturingLogger();
    const ours = new Set<string>(); // temporary PGPASSFILE directories holding this test's password
    const seen: { cmdlines: string[]; environs: string[]; passModes: string[] } = { cmdlines: [], environs: [], passModes: [] };
    let polling = true;
    const poll = (async () => {
      while (polling) {
        for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
          try {
            const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
            if (!/pg_dump|psql|pg_restore/.test(cmd) || !cmd.includes('--username=app')) continue;
            seen.cmdlines.push(cmd.split('\0').join(' '));
            // A process that has exited but not been reaped yet (a zombie) still shows its
            // command line but reads an empty environment: that is "gone", not "no PGPASSFILE".
            const environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
            if (environ !== '') seen.environs.push(environ);
          } catch {
            /* gone */
          }
        }
        for (const d of readdirSync(os.tmpdir()).filter((f) => f.startsWith('boxback-pgpass-'))) {
          try {
            const pgpass = path.join(os.tmpdir(), d, 'pgpass');
            if (!readFileSync(pgpass, 'utf8').includes(PW_TAG)) continue;
            ours.add(path.join(os.tmpdir(), d));
            const st = statSync(pgpass);
            seen.passModes.push(`${(statSync(path.join(os.tmpdir(), d)).mode & 0o777).toString(8)}/${(st.mode & 0o777).toString(8)}`);
          } catch {
            /* gone */
          }
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const file = path.join(dir, 'db.app.pw');
    const res = await dumpPostgres(dataset('app'), file, { log });
    const r = await restorePostgres(dataset('app_pw'), file, manifestExtra(res) as never, { log });
    polling = false;
    await poll;
    expect(seen.cmdlines.some((c) => c.includes('pg_dump'))).toBe(true);
    for (const c of seen.cmdlines) expect(c).not.toContain(PASSWORD);
    expect(seen.environs.length).toBeGreaterThan(0);
    for (const e of seen.environs) {
      expect(e).not.toContain(PASSWORD);
      expect(e).toMatch(/PGPASSFILE=/);
      expect(e).not.toMatch(/PGPASSWORD=/);
    }
    expect(seen.passModes.length).toBeGreaterThan(0);
    expect(new Set(seen.passModes)).toEqual(new Set(['700/600']));
    expect(text()).toContain('pg_dump started');
    expect(text()).not.toContain(PASSWORD);
    expect(JSON.stringify(res) + JSON.stringify(r)).not.toContain(PASSWORD);
    expect([...ours].filter((d) => existsSync(d))).toEqual([]);
    const dumped = readFileSync(file);
    expect(dumped.includes(Buffer.from(PASSWORD))).toBe(false);
  });

  it("a wrong password fails with the server's reason and without the password", async () => {
    const wrong = writePasswordFile(dir, 'not-the-password-xyz', 0o600, 'wrong.password');
    const err = await rejects(dumpPostgres(dataset('app', { passwordFile: wrong }), path.join(dir, 'db.app.wrong')));
    expect(err.code).toBe('BOXBACK_ERR_ARCHIVE_FAILED');
    expect(err.message).toMatch(/password authentication failed for user "app"/);
    expect(err.message).not.toContain('not-the-password-xyz');
    expect(readdirSync(dir).filter((f) => f.startsWith('db.app.wrong') || f.startsWith('.db.app.wrong'))).toEqual([]);
  });

  it('a password file readable by group or others is refused, naming the key and the mode', async () => {
    const loose = writePasswordFile(dir, PASSWORD, 0o644, 'loose.password');
    const err = await rejects(dumpPostgres(dataset('app', { passwordFile: loose }, 4), path.join(dir, 'db.app.loose')));
    expect(err.code).toBe('BOXBACK_ERR_PLAN_INVALID');
    expect(err.message).toMatch(/datasets\.4\.postgres\.passwordFile: .*loose\.password.*\(mode 0644\).*chmod 600/);
  });

  it('a cancelled dump leaves no file behind', async () => {
    const ac = new AbortController();
    const file = path.join(dir, 'db.app.cancel');
    const p = dumpPostgres(dataset('app'), file, { signal: ac.signal, onProgress: () => ac.abort() });
    const err = await rejects(p);
    expect(err.code).toBe('BOXBACK_ERR_CANCELLED');
    expect(readdirSync(dir).filter((f) => f.includes('db.app.cancel'))).toEqual([]);
  });
});
