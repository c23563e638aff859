// The catalog on both of its databases, with the same tests: a SQLite file, and a throwaway
// PostgreSQL cluster (initdb in a temp dir, a free port; the catalog connects over TCP with a
// password as a controller would). Migrations, reopening, derived Restorable, the append-only
// audit log, refusing a catalog from a newer controller, int8 values as numbers, status
// queries, and the one-job-per-schedule-slot guarantee.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../../packages/controller/src/catalog/migrations.js';
import { MAX_WRITES_PER_COMMIT, SqliteCatalog } from '../../packages/controller/src/catalog/sqlite.js';
import { PgCatalog, pgClientConfig } from '../../packages/controller/src/catalog/postgres.js';
import type { Catalog, JobRow } from '../../packages/controller/src/catalog/types.js';
import { createToken, hashToken } from '../../packages/controller/src/auth.js';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-catalog-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Backend {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  open(): Promise<Catalog>;
  /** The schema version and tables as the database itself records them. */
  inspect(): Promise<{ version: number; tables: string[] }>;
  /** Run one statement directly on the database (not through the catalog). */
  exec(sql: string): Promise<void>;
  /** Make a second catalog whose recorded schema is `version`; returns what open() would take. */
  openOther(version: number): Promise<Catalog>;
  /** How the refusal names the catalog. */
  names: RegExp;
}

function sqliteBackend(): Backend {
  const file = path.join(dir, 'sub', 'catalog.db');
  return {
    name: 'SQLite',
    setup: async () => undefined,
    teardown: async () => undefined,
    open: async () => SqliteCatalog.open(file),
    inspect: async () => {
      const db = new Database(file, { readonly: true });
      try {
        expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
        const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type='table'").all() as { name: string }[]).map((t) => t.name);
        return { version: db.pragma('user_version', { simple: true }) as number, tables };
      } finally {
        db.close();
      }
    },
    exec: async (sql) => {
      const db = new Database(file);
      try {
        db.prepare(sql).run();
      } finally {
        db.close();
      }
    },
    openOther: async (version) => {
      const newer = path.join(dir, 'newer.db');
      const db = new Database(newer);
      db.pragma(`user_version = ${version}`);
      db.close();
      return SqliteCatalog.open(newer);
    },
    names: /newer\.db has schema version \d+, newer than this controller knows/,
  };
}

function postgresBackend(): Backend {
  let cluster: PgCluster;
  const url = (db: string) => `postgres://bb@127.0.0.1:${cluster.port}/${db}`;
  const withClient = async <T>(fn: (c: pg.Client) => Promise<T>, db = 'boxback'): Promise<T> => {
    const c = new pg.Client(pgClientConfig({ url: url(db), password: 'bb-pw' }));
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };
  return {
    name: 'PostgreSQL',
    setup: async () => {
      cluster = await startPgCluster();
      cluster.createApp('bb', 'bb-pw', 'boxback');
    },
    teardown: async () => cluster?.stop(),
    open: () => PgCatalog.open({ url: url('boxback'), password: 'bb-pw' }),
    inspect: () =>
      withClient(async (c) => {
        const v = await c.query<{ version: number }>('SELECT version FROM schema_version');
        const t = await c.query<{ tablename: string }>("SELECT tablename FROM pg_tables WHERE schemaname = 'public'");
        return { version: v.rows[0].version, tables: t.rows.map((r) => r.tablename) };
      }),
    exec: (sql) => withClient(async (c) => void (await c.query(sql))),
    openOther: async (version) => {
      cluster.admin('create database newer owner bb;');
      cluster.admin(
        `create table schema_version (one integer primary key default 1, version integer not null); alter table schema_version owner to bb;
         insert into schema_version (version) values (${version});`,
        'newer',
      );
      return PgCatalog.open({ url: url('newer'), password: 'bb-pw' });
    },
    names: /postgres:\/\/bb@127\.0\.0\.1:\d+\/newer has schema version \d+, newer than this controller knows/,
  };
}

const host = (name: string, over: Record<string, unknown> = {}) => ({
  name,
  address: '10.0.0.5:7444',
  group: 'ci',
  rpoSeconds: 3600,
  planName: '',
  product: '',
  productVersion: '',
  agentVersion: '',
  lastSeenMs: 0,
  createdAtMs: 1,
  ...over,
});

const backup = (id: string, over: Record<string, unknown> = {}) => ({
  id,
  host: 'gocd1',
  createdAtMs: Date.parse('2026-11-21T20:10:00Z'),
  sizeBytes: 1234,
  consistency: 'quiesced',
  status: 'Completed' as const,
  verifiedAtMs: 0,
  verifyFailed: false,
  path: `gocd1/backup_${id.split('@')[1]}`,
  productVersion: '23.1.0',
  jobId: 'backup-1',
  origin: 'boxback',
  manifestJson: '{"format":"boxback/manifest@1"}',
  quiesceWindowMs: 1500,
  fileCount: 7,
  warningCount: 0,
  errorCount: 0,
  errorMessage: '',
  ...over,
});

const job = (id: string, over: Partial<JobRow> = {}): JobRow => ({
  id,
  kind: 'backup',
  host: 'gocd1',
  state: 'Running',
  phase: 'BACKUP_DATABASE',
  progressJson: '',
  requestedBy: 'alice',
  createdAtMs: 1,
  startedAtMs: 2,
  endedAtMs: 0,
  errorCode: '',
  errorMessage: '',
  backupId: '',
  warningCount: 0,
  dryRunReport: '',
  paramsJson: '{}',
  resultJson: '',
  ...over,
});

describe.each([sqliteBackend(), postgresBackend()])('catalog on $name', (be) => {
  beforeAll(() => be.setup(), 60_000);
  afterAll(() => be.teardown());

  it('creates the database and migrates it to the newest schema', async () => {
    const c = await be.open();
    expect(c.schemaVersion).toBe(MIGRATIONS.length);
    await c.close();
    const { version, tables } = await be.inspect();
    expect(version).toBe(MIGRATIONS.length);
    expect(tables).toEqual(expect.arrayContaining(['hosts', 'backups', 'jobs', 'tokens', 'audit', 'schedule_slots']));
    // opening again changes nothing
    await (await be.open()).close();
    expect((await be.inspect()).version).toBe(MIGRATIONS.length);
  });

  it('keeps hosts, backups, jobs, tokens and the audit log across a reopen', async () => {
    let c = await be.open();
    await c.addHost(host('gocd1'));
    await expect(c.addHost(host('gocd1', { address: 'x:1', group: '' }))).rejects.toMatchObject({ code: 'BOXBACK_ERR_ALREADY_EXISTS' });
    await c.putBackup(backup('gocd1@20261121-201000'));
    await c.putBackup(
      backup('gocd1@20261121-211000', { createdAtMs: Date.parse('2026-11-21T21:10:00Z'), status: 'Failed', manifestJson: '' }),
    );
    await c.createJob(job('backup-1'), { jobId: 'backup-1', atMs: 3, phase: '', state: 'queued', message: 'requested by alice via grpc' });
    const { token } = await createToken(c, 'ci-bot', 'viewer');
    await expect(createToken(c, 'ci-bot', 'admin')).rejects.toMatchObject({ code: 'BOXBACK_ERR_ALREADY_EXISTS' });
    await c.appendAudit({ atMs: 5, who: 'alice', action: 'AddHost', target: 'gocd1', result: 'ok', detail: '' });
    await c.close();

    c = await be.open();
    expect((await c.getHost('gocd1'))?.group).toBe('ci');
    expect((await c.listHosts('ci')).map((h) => h.name)).toEqual(['gocd1']);
    const list = await c.listBackups('gocd1');
    expect(list.map((b) => b.id)).toEqual(['gocd1@20261121-211000', 'gocd1@20261121-201000']); // newest first
    expect(list.map((b) => b.restorable)).toEqual([false, true]);
    expect(list[0].manifestJson).toBe(''); // listings leave the manifest out
    expect((await c.getBackup('gocd1@20261121-201000'))?.manifestJson).toContain('boxback/manifest@1');
    expect((await c.lastRestorable('gocd1'))?.id).toBe('gocd1@20261121-201000');
    expect((await c.listJobs({ states: ['Running'] })).map((j) => j.id)).toEqual(['backup-1']);
    expect(await c.getJob('backup-1')).toMatchObject({ schedule: '', slotMs: 0, attempt: 0, owner: '' });
    expect(await c.listJobEvents('backup-1')).toEqual([
      { jobId: 'backup-1', atMs: 3, phase: '', state: 'queued', message: 'requested by alice via grpc' },
    ]);
    const t = await c.findTokenByHash(hashToken(token));
    expect(t).toMatchObject({ name: 'ci-bot', role: 'viewer' });
    expect(typeof t?.id).toBe('number');
    expect(JSON.stringify(await c.listTokens())).not.toContain(token); // only the hash is stored
    // expiry and revocation (migration 8): by name, then by ID; the first revocation's time stays
    const { row: exp } = await createToken(c, 'short', 'viewer', 3600);
    expect((await c.findTokenByHash(exp.hash))?.expiresAtMs).toBe(exp.expiresAtMs);
    expect((await c.revokeToken('ci-bot', 1000))?.revokedAtMs).toBe(1000);
    expect((await c.revokeToken(String(t!.id), 2000))?.revokedAtMs).toBe(1000);
    expect((await c.revokeToken(String(exp.id), 3000))?.name).toBe('short');
    expect(await c.revokeToken('nobody', 1)).toBeUndefined();
    expect((await c.listTokens()).map((x) => [x.name, x.revokedAtMs])).toEqual([
      ['ci-bot', 1000],
      ['short', 3000],
    ]);
    expect(await c.listAudit()).toEqual([expect.objectContaining({ who: 'alice', action: 'AddHost', target: 'gocd1', result: 'ok' })]);
    await c.close();
  });

  it('derives Restorable: Completed with a manifest and no failed verification', async () => {
    const c = await be.open();
    await c.putBackup(backup('gocd1@20261121-221000', { manifestJson: '' }));
    expect((await c.getBackup('gocd1@20261121-221000'))?.restorable).toBe(false);
    await c.putBackup(backup('gocd1@20261121-231000', { status: 'PartiallyFailed' }));
    expect((await c.getBackup('gocd1@20261121-231000'))?.restorable).toBe(false);
    await c.updateBackup('gocd1@20261121-201000', { verifiedAtMs: 9, verifyFailed: true, errorMessage: 'db.zip: SHA-256 mismatch' });
    const b = await c.getBackup('gocd1@20261121-201000');
    expect(b).toMatchObject({ restorable: false, verifiedAtMs: 9, verifyFailed: true });
    expect(await c.lastRestorable('gocd1')).toBeUndefined();
    await c.close();
  });

  it('returns 64-bit values as numbers, and answers the status and metrics queries', async () => {
    const c = await be.open();
    const big = 5_000_000_000; // > 2^32: BIGINT on PostgreSQL, parsed to a number
    await c.addHost(host('gocd2', { group: 'ci' }));
    await c.putBackup(backup('gocd2@20261122-010000', { host: 'gocd2', sizeBytes: big, createdAtMs: Date.parse('2026-11-22T01:00:00Z') }));
    await c.putBackup(backup('gocd2@20261122-020000', { host: 'gocd2', createdAtMs: Date.parse('2026-11-22T02:00:00Z') }));
    await c.updateBackup('gocd2@20261122-010000', {
      drillPassedAtMs: 77,
      drillAtMs: 77,
      drillDurationMs: 5,
      drillResult: 'passed on spare',
    });
    const b = await c.getBackup('gocd2@20261122-010000');
    expect(b?.sizeBytes).toBe(big);
    expect(typeof b?.createdAtMs).toBe('number');
    const { lastRestorable, lastDrilled } = await c.statusBackups();
    expect(lastRestorable.get('gocd2')?.id).toBe('gocd2@20261122-020000');
    expect(lastRestorable.has('gocd1')).toBe(false); // its only good backup failed verification above
    expect(lastDrilled.get('gocd2')?.id).toBe('gocd2@20261122-010000');
    expect((await c.lastDrilled('gocd2'))?.drillResult).toBe('passed on spare');
    // a replaced backup starts its drill record afresh (as SQLite's INSERT OR REPLACE)
    await c.putBackup(backup('gocd2@20261122-010000', { host: 'gocd2', sizeBytes: big }));
    expect(await c.getBackup('gocd2@20261122-010000')).toMatchObject({ drillPassedAtMs: 0, drillResult: '' });

    await c.updateHosts([
      { name: 'gocd1', update: { agentVersion: '1.2.3', lastSeenMs: big } },
      { name: 'gocd2', update: { product: 'gocd', productVersion: '23.1.0' } },
    ]);
    expect(await c.getHost('gocd1')).toMatchObject({ agentVersion: '1.2.3', lastSeenMs: big });
    expect(await c.getHost('gocd2')).toMatchObject({ product: 'gocd', productVersion: '23.1.0' });

    await c.updateJob('backup-1', { state: 'Completed', endedAtMs: big });
    await c.updateJobProgress('backup-1', 'PUBLISH', '{"phase":"PUBLISH"}');
    expect(await c.getJob('backup-1')).toMatchObject({ state: 'Completed', endedAtMs: big, phase: 'PUBLISH' });
    expect(await c.countJobs()).toEqual([{ host: 'gocd1', kind: 'backup', state: 'Completed', count: 1 }]);
    expect((await c.lastCompletedBackupJobs()).map((j) => j.id)).toEqual(['backup-1']);

    await c.setScheduleSlot('nightly', big);
    await c.setScheduleSlot('nightly', big + 1000);
    expect(await c.listScheduleSlots()).toEqual(new Map([['nightly', big + 1000]]));
    expect(await c.removeHost('gocd2')).toBe(true);
    expect(await c.removeHost('gocd2')).toBe(false);
    await c.close();
  });

  it('holds at most one job per schedule, slot, host and attempt', async () => {
    const c = await be.open();
    const slot = Date.parse('2026-11-22T03:00:00Z');
    const fired = { schedule: 'nightly', slotMs: slot, attempt: 1, owner: 'a:1' };
    await c.createJob(job('backup-s1', fired));
    await expect(c.createJob(job('backup-s2', { ...fired, owner: 'b:2' }))).rejects.toMatchObject({
      code: 'BOXBACK_ERR_ALREADY_EXISTS',
      message: expect.stringContaining('schedule nightly already fired slot 2026-11-22T03:00:00.000Z'),
    });
    await c.createJob(job('backup-s3', { ...fired, attempt: 2 })); // a retry of that slot
    await c.createJob(job('backup-s4', { ...fired, host: 'gocd2' })); // another host
    await c.createJob(job('backup-s5', { ...fired, slotMs: slot + 60_000 })); // the next slot
    await c.createJob(job('backup-m1')); // jobs asked for by callers are not limited
    await c.createJob(job('backup-m2'));
    expect(await c.getJob('backup-s1')).toMatchObject({ schedule: 'nightly', slotMs: slot, attempt: 1, owner: 'a:1' });
    expect(await c.getJob('backup-s2')).toBeUndefined();
    await c.close();
  });

  it('keeps drill and verify evidence after the backup is deleted; the newest passed one per host', async () => {
    const c = await be.open();
    await c.addHost(host('ev1'));
    await c.putBackup(backup('ev1@20261120-010000'));
    const base = { host: 'ev1', backupId: 'ev1@20261120-010000', target: '', jobId: '', detail: '' };
    await c.appendEvidence({ ...base, kind: 'drill', atMs: 1_000, passed: true, durationMs: 61_000, target: 'spare1', jobId: 'drill-1' });
    await c.appendEvidence({ ...base, kind: 'drill', atMs: 2_000, passed: false, durationMs: 5_000, target: 'spare1', jobId: 'drill-2' });
    await c.appendEvidence({ ...base, kind: 'verify', atMs: 3_000, passed: true, durationMs: 1_200 });
    expect(await c.deleteBackup('ev1@20261120-010000')).toBe(true);
    await c.close();

    const again = await be.open();
    const all = await again.listEvidence({ host: 'ev1' });
    expect(all.map((e) => [e.kind, e.atMs, e.passed])).toEqual([
      ['verify', 3_000, true],
      ['drill', 2_000, false],
      ['drill', 1_000, true],
    ]);
    expect(all[2]).toMatchObject({ durationMs: 61_000, target: 'spare1', jobId: 'drill-1', backupId: 'ev1@20261120-010000' });
    expect(typeof all[2].durationMs).toBe('number');
    expect((await again.listEvidence({ host: 'ev1', kind: 'drill', limit: 1 })).map((e) => e.atMs)).toEqual([2_000]);
    const lastDrill = await again.lastPassedEvidence('drill');
    expect(lastDrill.get('ev1')).toMatchObject({ atMs: 1_000, passed: true, jobId: 'drill-1' });
    expect((await again.lastPassedEvidence('verify')).get('ev1')?.atMs).toBe(3_000);
    // one host's (status reads a changed host alone)
    expect([...(await again.lastPassedEvidence('drill', 'ev1')).values()].map((e) => e.jobId)).toEqual(['drill-1']);
    expect((await again.lastPassedEvidence('drill', 'ev2')).size).toBe(0);
    await again.close();
  });

  it('refuses to change or delete audit entries', async () => {
    await expect(be.exec("UPDATE audit SET who = 'mallory'")).rejects.toThrow(/append-only/);
    await expect(be.exec('DELETE FROM audit')).rejects.toThrow(/append-only/);
  });

  it('refuses a catalog written by a newer controller, naming it', async () => {
    await expect(be.openOther(MIGRATIONS.length + 5)).rejects.toMatchObject({
      code: 'BOXBACK_ERR_CATALOG',
      message: expect.stringMatching(be.names),
    });
  });
});

describe('SQLite group commit', () => {
  // the commits' time slice off where a test counts commits (a loaded machine would split them)
  const unsliced = { commitSliceMs: Number.POSITIVE_INFINITY };

  it('commits writes made together in one transaction; a refused one rejects alone; the rows survive a reopen', async () => {
    const file = path.join(dir, 'group', 'catalog.db');
    const c = SqliteCatalog.open(file, unsliced);
    const before = { ...c.commits };
    const ids = Array.from({ length: 200 }, (_, i) => `backup-g${i}`);
    const slot = { schedule: 'nightly', slotMs: 1_000, attempt: 1 };
    const results = await Promise.allSettled([
      ...ids.map((id) => c.createJob(job(id))),
      c.createJob(job('backup-dup1', slot)),
      c.createJob(job('backup-dup2', slot)), // the same slot: refused, the others stay
      c.appendAudit({ atMs: 1, who: 'test', action: 'GroupCommit', target: '', result: 'ok', detail: '' }),
    ]);
    expect(results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason.code)).toEqual([
      'BOXBACK_ERR_ALREADY_EXISTS',
    ]);
    expect(c.commits.writes - before.writes).toBe(203);
    expect(c.commits.batches - before.batches).toBe(Math.ceil(203 / MAX_WRITES_PER_COMMIT)); // 2: at most 200 a commit
    const gen = c.generation;
    const added = c.addHost({ ...host('gc1'), address: '10.0.0.9:7444' });
    expect(c.generation).toBe(gen); // not before the host is committed: a reader would cache the rows without it
    await added;
    expect(c.generation).toBe(gen + 1);
    await c.close();
    const again = SqliteCatalog.open(file);
    for (const id of [...ids, 'backup-dup1']) expect((await again.getJob(id))?.id).toBe(id);
    expect(await again.getJob('backup-dup2')).toBeUndefined();
    expect((await again.listAudit(5)).map((a) => a.action)).toContain('GroupCommit');
    expect((await again.getHost('gc1'))?.address).toBe('10.0.0.9:7444');
    await again.close();
  });

  it('commits a large queue in commits of at most MAX_WRITES_PER_COMMIT with turns of the event loop between them; close commits them all', async () => {
    const file = path.join(dir, 'group-large', 'catalog.db');
    const c = SqliteCatalog.open(file, unsliced);
    await c.createJob(job('backup-l0'));
    const before = { ...c.commits };
    const ids = Array.from({ length: 450 }, (_, i) => `backup-l${i + 1}`);
    const writes: Promise<unknown>[] = ids.map((id) => c.createJob(job(id)));
    // a progress update queued after 450 inserts, replaced by a newer one: one statement, in the last commit
    writes.push(c.updateJobProgress('backup-l450', 'BACKUP_DATABASE', '{"n":1}'));
    writes.push(c.updateJobProgress('backup-l450', 'PUBLISH', '{"n":2}'));
    let committedAtTurn = -1;
    setImmediate(() => (committedAtTurn = c.commits.batches - before.batches));
    await Promise.all(writes);
    expect(committedAtTurn).toBe(1); // other work ran after the first commit, before the rest
    expect(c.commits.batches - before.batches).toBe(3);
    expect(c.commits.largest).toBe(MAX_WRITES_PER_COMMIT);
    expect(c.commits.writes - before.writes).toBe(451);
    expect(await c.getJob('backup-l450')).toMatchObject({ phase: 'PUBLISH', progressJson: '{"n":2}' });
    // close with 450 writes queued and none awaited: every one is committed
    const more = Array.from({ length: 450 }, (_, i) => `backup-m${i}`);
    const pending = more.map((id) => c.createJob(job(id)));
    await c.close();
    await Promise.all(pending);
    const again = SqliteCatalog.open(file);
    for (const id of [...ids, ...more]) expect((await again.getJob(id))?.id).toBe(id);
    await again.close();
  });

  it("stops a commit's writes once its time slice is used: the rest, in order, at the next turns; a job's first log line in its row's write", async () => {
    const file = path.join(dir, 'group-slice', 'catalog.db');
    const c = SqliteCatalog.open(file, { commitSliceMs: 0 }); // every write's time is over the slice: one write a commit
    await c.createJob(job('backup-s0'));
    const before = { ...c.commits };
    const ids = Array.from({ length: 30 }, (_, i) => `backup-s${i + 1}`);
    const order: string[] = [];
    const writes: Promise<unknown>[] = ids.map((id) =>
      c.createJob(job(id), { jobId: id, atMs: 1, phase: '', state: 'queued', message: `first line of ${id}` }).then(() => order.push(id)),
    );
    writes.push(c.updateJobProgress('backup-s30', 'BACKUP_DATABASE', '{"n":1}'));
    let committedAtTurn = -1;
    setImmediate(() => (committedAtTurn = c.commits.batches - before.batches));
    writes.push(c.updateJobProgress('backup-s30', 'PUBLISH', '{"n":2}')); // replaces the queued one, still queued
    await Promise.all(writes);
    expect(committedAtTurn).toBe(1); // a turn of the event loop after the first write's commit
    expect(c.commits.batches - before.batches).toBe(31);
    expect(c.commits.largest).toBe(1);
    expect(order).toEqual(ids); // committed in the order queued
    expect(await c.getJob('backup-s30')).toMatchObject({ phase: 'PUBLISH', progressJson: '{"n":2}' });
    await c.close();
    const again = SqliteCatalog.open(file);
    for (const id of ids) expect((await again.listJobEvents(id)).map((e) => e.message)).toEqual([`first line of ${id}`]);
    await again.close();
  });

  it('fsyncs once for the batches committed while an fsync runs; each write resolves after an fsync begun after its commit', async () => {
    const file = path.join(dir, 'group-fsync', 'catalog.db');
    const c = SqliteCatalog.open(file);
    await c.createJob(job('backup-f0'));
    const before = { ...c.commits };
    // 40 durable writes, each in a turn of its own: 40 batches
    const writes: Promise<unknown>[] = [];
    for (let i = 1; i <= 40; i++) {
      writes.push(c.createJob(job(`backup-f${i}`)));
      await new Promise((r) => setImmediate(r));
    }
    await Promise.all(writes);
    const batches = c.commits.batches - before.batches;
    const fsyncs = c.commits.fsyncs - before.fsyncs;
    expect(batches).toBe(40);
    expect(fsyncs).toBeGreaterThanOrEqual(1);
    expect(fsyncs).toBeLessThan(batches); // coalesced (one fsync per batch before)
    // a write made after the others settled gets an fsync of its own
    await c.createJob(job('backup-f41'));
    expect(c.commits.fsyncs - before.fsyncs).toBe(fsyncs + 1);
    await c.close();
    const again = SqliteCatalog.open(file);
    for (let i = 0; i <= 41; i++) expect((await again.getJob(`backup-f${i}`))?.id).toBe(`backup-f${i}`);
    await again.close();
  });

  it("joins a job's progress and log lines to the queue: a job's progress queued again replaces the queued one, in order with the other writes", async () => {
    const file = path.join(dir, 'group-light', 'catalog.db');
    const c = SqliteCatalog.open(file, unsliced);
    await c.createJob(job('backup-p1'));
    await c.createJob(job('backup-p2'));
    const before = { ...c.commits };
    const progress = (n: number) => JSON.stringify({ bytesDone: n });
    await Promise.all([
      c.updateJobProgress('backup-p1', 'BACKUP_DATABASE', progress(1)),
      c.appendJobEvent({ jobId: 'backup-p1', atMs: 1, phase: 'BACKUP_DATABASE', state: 'done', message: 'first' }),
      c.updateJobProgress('backup-p1', 'BACKUP_TREES', progress(2)),
      c.updateJobProgress('backup-p2', 'BACKUP_DATABASE', progress(5)),
      c.appendJobEvent({ jobId: 'backup-p1', atMs: 2, phase: 'BACKUP_TREES', state: 'done', message: 'second' }),
      c.updateJobProgress('backup-p1', 'PUBLISH', progress(3)),
      // the job's end, queued after its progress: it is what the row keeps
      c.updateJob('backup-p2', { state: 'Completed', phase: 'PUBLISH', progressJson: progress(100) }),
    ]);
    // p1's three progress updates ran as one statement; one commit for all
    expect(c.commits.writes - before.writes).toBe(5);
    expect(c.commits.batches - before.batches).toBe(1);
    await c.close();
    const again = SqliteCatalog.open(file);
    expect(await again.getJob('backup-p1')).toMatchObject({ phase: 'PUBLISH', progressJson: progress(3) });
    expect(await again.getJob('backup-p2')).toMatchObject({ state: 'Completed', phase: 'PUBLISH', progressJson: progress(100) });
    expect((await again.listJobEvents('backup-p1')).map((e) => e.message)).toEqual(['first', 'second']);
    await again.close();
  });

  it('marks each host its writes changed with the generation they moved to; a host added or removed marks every host', async () => {
    const c = SqliteCatalog.open(path.join(dir, 'marks', 'catalog.db'));
    for (const n of ['m1', 'm2', 'm3']) await c.addHost(host(n));
    await c.putBackup(backup('m3@20261120-010000', { host: 'm3', path: 'm3/backup_20261120-010000' }));
    const g0 = c.generation;
    expect([...c.changedHosts(g0)!]).toEqual([]);
    await c.putBackup(backup('m1@20261120-010000', { host: 'm1', path: 'm1/backup_20261120-010000' }));
    const g1 = c.generation;
    expect(g1).toBeGreaterThan(g0);
    expect([...c.changedHosts(g0)!]).toEqual(['m1']);
    await c.updateHost('m2', { rpoSeconds: 60 });
    await c.updateBackup('m3@20261120-010000', { pinned: true });
    expect([...c.changedHosts(g0)!].sort()).toEqual(['m1', 'm2', 'm3']);
    expect([...c.changedHosts(g1)!].sort()).toEqual(['m2', 'm3']);
    const g2 = c.generation;
    await c.updateHosts([{ name: 'm1', update: { lastSeenMs: 5 } }]);
    expect([...c.changedHosts(g2)!]).toEqual(['m1']);
    const g3 = c.generation;
    expect(await c.deleteBackup('m3@20261120-010000')).toBe(true);
    await c.appendEvidence({
      host: 'm2',
      kind: 'drill',
      backupId: 'x',
      atMs: 1,
      passed: true,
      durationMs: 1,
      target: '',
      jobId: '',
      detail: '',
    });
    expect([...c.changedHosts(g3)!].sort()).toEqual(['m2', 'm3']);
    // a write that changes no host's rows moves nothing
    const g4 = c.generation;
    await c.appendAudit({ atMs: 1, who: 'alice', action: 'X', target: '', result: 'ok', detail: '' });
    await c.updateBackup('no-such@1', { pinned: true });
    expect(c.generation).toBe(g4);
    await c.addHost(host('m4'));
    expect(c.changedHosts(g4)).toBeUndefined();
    const g5 = c.generation;
    expect([...c.changedHosts(g5)!]).toEqual([]);
    await c.removeHost('m4');
    expect(c.changedHosts(g5)).toBeUndefined();
    await c.close();
  });
});
