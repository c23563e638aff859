/**
 * Restore a postgres dataset's dump into the plan's database, as its owner role (issue 8).
 * The engine runs it while the services are stopped (between STOP and START).
 *
 *   1. target server version (psql); refuse a dump from a newer MAJOR server unless
 *      --force (BOXBACK_ERR_VERSION_NEWER names both versions)
 *   2. check the file reads as the recorded format (pg_restore --list / the SQL header)
 *   -- nothing has changed so far --
 *   3. empty the database, as the plan's postgres.emptyWith says:
 *      recreate (default): the current database is renamed aside as the safety copy
 *        <db>_boxback_safety_<job> (other sessions terminated first), and a new empty one is
 *        created from template0 with the old one's encoding, collation and settings, owned by
 *        the owner role. Chosen because it leaves the database truly empty (objects created
 *        after the backup are gone too, which pg_restore --clean would leave behind) and
 *        because the old database stays whole for a rollback, as the engine's directory
 *        safety copies do. Needs CREATEDB and ownership of the database; checked first.
 *      clean: pg_restore --clean --if-exists (plain dumps carry their DROP ... IF EXISTS)
 *        in the same single transaction as the load, for roles without CREATEDB.
 *   4. load in ONE transaction, stopping at the first error, objects owned by the owner role:
 *        custom  pg_restore --no-owner --role=<owner> --exit-on-error --single-transaction -d <db>
 *        plain   psql -X -v ON_ERROR_STOP=1 --single-transaction -c 'SET ROLE <owner>' -f <file>
 *   5. on failure: the new database dropped and the safety copy renamed back (recreate), or
 *      nothing to do (clean: the transaction rolled back). Errors carry the last stderr line.
 *
 * preflightPostgres() is steps 1-2 alone, for the engine's VERSION_CHECK before STOP.
 * putBackSafetyDatabase() is the engine's ROLLBACK for a later step's failure (health check);
 * dropSafetyDatabase() is `restore confirm`. dryRunDescribe() reads only.
 */
import { promises as fsp } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { BoxbackError, type Logger } from '@boxback/common';
import {
  connArgs,
  ident,
  literal,
  majorOf,
  majorText,
  offlineConnection,
  pgBin,
  pgError,
  query,
  runPg,
  serverVersion,
  versionText,
  withConnection,
  type PgConnection,
} from './exec.js';
import type { PostgresDataset } from './plan.js';

/** What the backup recorded about a dump (ManifestDataset.extra). */
export const pgDumpMetaSchema = z
  .object({
    format: z.enum(['custom', 'plain']),
    serverVersion: z.string().optional(),
    serverVersionNum: z.number().int().positive().optional(),
    dumpVersion: z.string().optional(),
    sizeBytes: z.number().int().nonnegative().optional(),
    database: z.string().optional(),
  })
  .loose();
export type PgDumpMeta = z.output<typeof pgDumpMetaSchema>;

/** Read the recorded facts from a manifest dataset's `extra`; BOXBACK_ERR_MANIFEST_INVALID when they make no sense. */
export function metaFromManifest(extra: unknown, archive: string): PgDumpMeta {
  const r = pgDumpMetaSchema.safeParse(extra ?? {});
  if (!r.success)
    throw new BoxbackError(
      'BOXBACK_ERR_MANIFEST_INVALID',
      `the manifest's record of ${archive} is not a pg_dump record: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  return r.data;
}

export interface PgRestoreOptions {
  force?: boolean;
  signal?: AbortSignal;
  log?: Logger;
  /** Names the safety database (<db>_boxback_safety_<job>). */
  jobId?: string;
  onProgress?: (message: string) => void;
}

export interface PgRestoreResult {
  database: string;
  format: 'custom' | 'plain';
  emptiedWith: 'recreate' | 'clean';
  /** The previous database, renamed aside (recreate, when there was one): drop it on confirm, rename it back on rollback. */
  safetyDatabase: string | null;
  dumpServerVersion: string | null;
  targetServerVersion: string;
  forcedNewer: boolean;
  warnings: string[];
  durationMs: number;
}

/** "15.18" -> 150018, "9.6.24" -> 90624; null when unreadable. */
export function versionNum(v: string | undefined): number | null {
  const m = /^(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(v ?? '');
  if (!m) return null;
  const [a, b, c] = [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
  return a >= 10 ? a * 10000 + b : a * 10000 + b * 100 + c;
}

const dumpServerNum = (meta: PgDumpMeta): number | null => meta.serverVersionNum ?? versionNum(meta.serverVersion);

/** The version rule: refuse a dump from a newer major server than the target's unless forced. */
export function checkServerVersions(
  ds: PostgresDataset,
  meta: PgDumpMeta,
  targetNum: number,
  force: boolean,
): { verdict: 'same-or-older' | 'newer-forced' | 'unknown'; warnings: string[] } {
  const dumpNum = dumpServerNum(meta);
  if (dumpNum === null)
    return {
      verdict: 'unknown',
      warnings: [
        `${meta.database ? `db.${meta.database}` : ds.archive}: the backup does not record the server version it was dumped from; restoring without the version check`,
      ],
    };
  if (majorOf(dumpNum) <= majorOf(targetNum)) return { verdict: 'same-or-older', warnings: [] };
  const label = meta.database ? `db.${meta.database}` : ds.archive;
  const what = `${label} was dumped from PostgreSQL ${versionText(dumpNum)} (major ${majorText(dumpNum)}), newer than the target server's PostgreSQL ${versionText(targetNum)} (major ${majorText(targetNum)}) at ${ds.pg.host}:${ds.pg.port}`;
  if (!force)
    throw new BoxbackError('BOXBACK_ERR_VERSION_NEWER', `${what}; refusing to restore it (--force to try anyway)`, {
      dumpServerVersion: versionText(dumpNum),
      targetServerVersion: versionText(targetNum),
    });
  return { verdict: 'newer-forced', warnings: [`${what}; restoring anyway because of --force`] };
}

export function safetyName(database: string, jobId?: string): string {
  const suffix =
    (jobId ?? Date.now().toString(36))
      .toLowerCase()
      .replace(/[^a-z0-9]/g, '')
      .slice(0, 16) || Date.now().toString(36);
  return `${database.slice(0, 30)}_boxback_safety_${suffix}`;
}

/** Read a dump file's header: its format and the versions it names (for GoCD-made backups with no manifest). */
export async function inspectDump(ds: PostgresDataset, file: string, signal?: AbortSignal): Promise<PgDumpMeta> {
  const fh = await fsp.open(file, 'r');
  let head: string;
  try {
    const buf = Buffer.alloc(8192);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    head = buf.subarray(0, bytesRead).toString('latin1');
  } finally {
    await fh.close();
  }
  const size = (await fsp.stat(file)).size;
  if (head.startsWith('PGDMP')) {
    const conn = offlineConnection(ds);
    const argv = [pgBin(ds, 'pg_restore'), '--list', file];
    const r = await runPg(conn, argv, { timeoutMs: 120_000, signal, captureStdout: true });
    if (!r.ok) throw pgError(conn, `reading the custom-format dump ${ds.archive}`, argv, r, 120_000, 'BOXBACK_ERR_RESTORE_FAILED');
    const server = /Dumped from database version: (\S+)/.exec(r.stdout)?.[1];
    const dumper = /Dumped by pg_dump version: (\S+)/.exec(r.stdout)?.[1];
    const db = /dbname: (\S+)/.exec(r.stdout)?.[1];
    return {
      format: 'custom',
      serverVersion: server,
      serverVersionNum: versionNum(server) ?? undefined,
      dumpVersion: dumper,
      database: db,
      sizeBytes: size,
    };
  }
  if (/^--\s*\n-- PostgreSQL database dump/.test(head)) {
    const server = /-- Dumped from database version (\S+)/.exec(head)?.[1];
    const dumper = /-- Dumped by pg_dump version (\S+)/.exec(head)?.[1];
    return {
      format: 'plain',
      serverVersion: server,
      serverVersionNum: versionNum(server) ?? undefined,
      dumpVersion: dumper,
      sizeBytes: size,
    };
  }
  throw new BoxbackError(
    'BOXBACK_ERR_RESTORE_FAILED',
    `${ds.archive} is neither a custom-format pg_dump archive nor a plain pg_dump script`,
  );
}

async function checkFile(ds: PostgresDataset, file: string, meta: PgDumpMeta, signal?: AbortSignal): Promise<void> {
  const seen = await inspectDump(ds, file, signal);
  if (seen.format !== meta.format)
    throw new BoxbackError(
      'BOXBACK_ERR_RESTORE_FAILED',
      `${ds.archive} is a ${seen.format} dump but the backup recorded ${meta.format}; refusing to restore it`,
    );
}

/**
 * End the sessions still connected to `db` that this user may end (its own roles', or any
 * non-superuser's with pg_signal_backend; all as a superuser). Any left make the rename or
 * drop fail with the server's "being accessed by other users".
 */
async function terminateSessions(conn: PgConnection, db: string, serverNum: number, signal?: AbortSignal): Promise<number> {
  const { pg } = conn.ds;
  // Since PostgreSQL 14 pg_terminate_backend can wait for the session to be gone.
  const terminate = serverNum >= 140000 ? 'pg_terminate_backend(a.pid, 5000)' : 'pg_terminate_backend(a.pid)';
  const sql = `select count(${terminate})
    from pg_stat_activity a join pg_roles r on r.oid = a.usesysid, (select rolsuper from pg_roles where rolname = current_user) me
    where a.datname = ${literal(db)} and a.pid <> pg_backend_pid()
      and (me.rolsuper or (not r.rolsuper and (pg_has_role(current_user, a.usesysid, 'MEMBER') or pg_has_role(current_user, 'pg_signal_backend', 'MEMBER'))));`;
  const rows = await query(conn, pg.maintenanceDatabase, sql, {
    signal,
    code: 'BOXBACK_ERR_RESTORE_FAILED',
    what: `ending the sessions on database ${db}`,
  });
  return Number(rows[0]?.[0] ?? 0);
}

/**
 * A session we may not end (another role's, an autovacuum worker's) makes the drop fail; such
 * sessions are short, so the drop is tried again for about 10 s before it fails.
 */
const BUSY_DB = /must be a member of the role whose process is being terminated|is being accessed by other users/i;

async function dropDatabase(conn: PgConnection, db: string, serverNum: number, signal?: AbortSignal): Promise<void> {
  const force = serverNum >= 130000 ? ' with (force)' : '';
  for (let attempt = 1; ; attempt++) {
    await terminateSessions(conn, db, serverNum, signal);
    try {
      await query(conn, conn.ds.pg.maintenanceDatabase, `drop database if exists ${ident(db)}${force};`, {
        signal,
        code: 'BOXBACK_ERR_RESTORE_FAILED',
        what: `dropping database ${db}`,
      });
      return;
    } catch (err) {
      if (attempt >= 20 || !BUSY_DB.test((err as Error).message)) throw err;
      await sleep(500, undefined, { signal });
    }
  }
}

/** Step 3, recreate: returns the safety copy's name (null when the database did not exist). */
async function recreate(
  conn: PgConnection,
  safety: string,
  serverNum: number,
  opts: PgRestoreOptions,
  warnings: string[],
): Promise<{ safety: string | null }> {
  const { pg } = conn.ds;
  const q = (sql: string, what: string) =>
    query(conn, pg.maintenanceDatabase, sql, { signal: opts.signal, code: 'BOXBACK_ERR_RESTORE_FAILED', what });
  const [priv] = await q(
    `select (r.rolsuper or r.rolcreatedb)::text, case when exists (select 1 from pg_roles where rolname = ${literal(pg.ownerRole)}) then pg_has_role(current_user, ${literal(pg.ownerRole)}, 'MEMBER')::text else 'missing' end from pg_roles r where r.rolname = current_user;`,
    'checking privileges',
  );
  const key = `datasets.${conn.ds.index}.postgres`;
  if (priv?.[0] !== 'true')
    throw new BoxbackError(
      'BOXBACK_ERR_RESTORE_FAILED',
      `user ${pg.user} may not create databases, which ${key}.emptyWith: recreate needs: ALTER ROLE ${pg.user} CREATEDB, or set ${key}.emptyWith: clean`,
    );
  if (priv?.[1] === 'missing')
    throw new BoxbackError('BOXBACK_ERR_RESTORE_FAILED', `${key}.ownerRole: role ${pg.ownerRole} does not exist on ${pg.host}:${pg.port}`);
  if (priv?.[1] !== 'true')
    throw new BoxbackError(
      'BOXBACK_ERR_RESTORE_FAILED',
      `user ${pg.user} is not a member of ${pg.ownerRole} (${key}.ownerRole), so cannot restore as it: GRANT ${pg.ownerRole} TO ${pg.user}`,
    );
  const [old] = await q(
    `select pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, coalesce((select array_to_string(s.setconfig, chr(31)) from pg_db_role_setting s where s.setdatabase = d.oid and s.setrole = 0), '') from pg_database d where d.datname = ${literal(pg.database)};`,
    `reading database ${pg.database}`,
  );
  let renamed = false;
  if (old) {
    const n = await terminateSessions(conn, pg.database, serverNum, opts.signal);
    if (n > 0) warnings.push(`ended ${n} session(s) still connected to database ${pg.database}`);
    opts.onProgress?.(`renaming database ${pg.database} aside as ${safety}`);
    await q(`alter database ${ident(pg.database)} rename to ${ident(safety)};`, `renaming database ${pg.database} aside`);
    renamed = true;
  }
  try {
    const enc = old ? ` encoding ${literal(old[0])} lc_collate ${literal(old[1])} lc_ctype ${literal(old[2])}` : '';
    opts.onProgress?.(`creating an empty database ${pg.database}`);
    await q(
      `create database ${ident(pg.database)} with owner ${ident(pg.ownerRole)} template template0${enc};`,
      `creating database ${pg.database}`,
    );
    const settings = old?.[3] ? old.slice(3).filter(Boolean) : [];
    for (const s of settings) {
      const eq = s.indexOf('=');
      await q(
        `alter database ${ident(pg.database)} set ${ident(s.slice(0, eq))} = ${literal(s.slice(eq + 1))};`,
        `copying setting ${s.slice(0, eq)}`,
      );
    }
  } catch (err) {
    if (renamed) await putBack(conn, safety, serverNum, opts, err);
    throw err;
  }
  return { safety: renamed ? safety : null };
}

async function putBack(conn: PgConnection, safety: string, serverNum: number, opts: PgRestoreOptions, cause: unknown): Promise<void> {
  const { pg } = conn.ds;
  try {
    // Not under the job's signal: a cancelled restore must still put the old database back.
    await dropDatabase(conn, pg.database, serverNum);
    await query(conn, pg.maintenanceDatabase, `alter database ${ident(safety)} rename to ${ident(pg.database)};`, {
      code: 'BOXBACK_ERR_ROLLBACK_FAILED',
      what: `renaming ${safety} back to ${pg.database}`,
    });
    opts.log?.warn({ database: pg.database, safety }, 'database restore failed: the previous database was put back');
  } catch (err) {
    const first = cause instanceof Error ? cause.message : String(cause);
    throw new BoxbackError(
      'BOXBACK_ERR_ROLLBACK_FAILED',
      `${first}; and putting the previous database back failed too: ${(err as Error).message}; it is kept as database ${safety}`,
      { safetyDatabase: safety },
      { cause },
    );
  }
}

/** The load command for a format (exported so tests and the dry run show the real thing). */
export function loadArgv(conn: PgConnection, file: string, format: 'custom' | 'plain', clean: boolean): string[] {
  const { pg } = conn.ds;
  if (format === 'custom') {
    return [
      pgBin(conn.ds, 'pg_restore'),
      ...connArgs(conn, pg.database),
      '--no-owner',
      `--role=${pg.ownerRole}`,
      '--exit-on-error',
      '--single-transaction',
      ...(clean ? ['--clean', '--if-exists'] : []),
      file,
    ];
  }
  return [
    pgBin(conn.ds, 'psql'),
    ...connArgs(conn, pg.database),
    '-X',
    '-q',
    '-v',
    'ON_ERROR_STOP=1',
    '--single-transaction',
    '-c',
    `SET ROLE ${ident(pg.ownerRole)}`,
    '-f',
    file,
  ];
}

/** Steps 1 and 2: the target's version, the version rule, the file's format. Changes nothing. */
async function preflight(conn: PgConnection, file: string, meta: PgDumpMeta, opts: PgRestoreOptions) {
  const { ds } = conn;
  const probeDb = ds.pg.emptyWith === 'recreate' ? ds.pg.maintenanceDatabase : ds.pg.database;
  const target = await serverVersion(conn, probeDb, { signal: opts.signal, code: 'BOXBACK_ERR_RESTORE_FAILED' });
  const check = checkServerVersions(ds, meta, target.num, !!opts.force);
  for (const w of check.warnings) opts.log?.warn({ dataset: ds.name }, w);
  await checkFile(ds, file, meta, opts.signal);
  return { target, check };
}

/**
 * For the engine's VERSION_CHECK, before it stops anything: reach the target server, apply
 * the version rule (BOXBACK_ERR_VERSION_NEWER unless force) and read the file back.
 * restorePostgres() checks the same again before it changes anything.
 */
export async function preflightPostgres(
  ds: PostgresDataset,
  file: string,
  meta: PgDumpMeta,
  opts: { force?: boolean; signal?: AbortSignal; log?: Logger } = {},
): Promise<{ targetServerVersion: string; verdict: 'same-or-older' | 'newer-forced' | 'unknown'; warnings: string[] }> {
  return withConnection(ds, async (conn) => {
    const { target, check } = await preflight(conn, file, meta, opts);
    return { targetServerVersion: target.text, verdict: check.verdict, warnings: check.warnings };
  });
}

export async function restorePostgres(
  ds: PostgresDataset,
  file: string,
  meta: PgDumpMeta,
  opts: PgRestoreOptions = {},
): Promise<PgRestoreResult> {
  const started = Date.now();
  const { pg } = ds;
  const timeoutMs = pg.timeoutSeconds * 1000;
  const warnings: string[] = [];
  return withConnection(ds, async (conn) => {
    const { target, check } = await preflight(conn, file, meta, opts);
    warnings.push(...check.warnings);

    let safety: string | null = null;
    if (pg.emptyWith === 'recreate')
      safety = (await recreate(conn, safetyName(pg.database, opts.jobId), target.num, opts, warnings)).safety;
    const argv = loadArgv(conn, file, meta.format, pg.emptyWith === 'clean');
    opts.log?.info({ dataset: ds.name, database: pg.database, argv: argv.slice(1), safety }, 'database restore started');
    opts.onProgress?.(`loading ${ds.archive} into ${pg.database} (${meta.format})`);
    const r = await runPg(conn, argv, { timeoutMs, signal: opts.signal });
    if (!r.ok) {
      const err = pgError(conn, `restoring ${ds.archive} into database ${pg.database}`, argv, r, timeoutMs, 'BOXBACK_ERR_RESTORE_FAILED');
      if (safety) await putBack(conn, safety, target.num, opts, err);
      throw err;
    }
    const result: PgRestoreResult = {
      database: pg.database,
      format: meta.format,
      emptiedWith: pg.emptyWith,
      safetyDatabase: safety,
      dumpServerVersion: (() => {
        const n = dumpServerNum(meta);
        return n === null ? null : versionText(n);
      })(),
      targetServerVersion: target.text,
      forcedNewer: check.verdict === 'newer-forced',
      warnings,
      durationMs: Date.now() - started,
    };
    opts.log?.info({ dataset: ds.name, database: pg.database, durationMs: result.durationMs, safety }, 'database restored');
    return result;
  });
}

/**
 * ROLLBACK after a later step failed: drop the restored database and rename the safety copy
 * back. Looks first: when the safety copy does not exist (never made, or already put back,
 * as restorePostgres does itself when the load fails) nothing is dropped; returns false.
 */
export async function putBackSafetyDatabase(
  ds: PostgresDataset,
  safety: string,
  opts: { signal?: AbortSignal; log?: Logger } = {},
): Promise<boolean> {
  return withConnection(ds, async (conn) => {
    const v = await serverVersion(conn, ds.pg.maintenanceDatabase, { signal: opts.signal, code: 'BOXBACK_ERR_ROLLBACK_FAILED' });
    const there = await query(conn, ds.pg.maintenanceDatabase, `select 1 from pg_database where datname = ${literal(safety)};`, {
      signal: opts.signal,
      code: 'BOXBACK_ERR_ROLLBACK_FAILED',
      what: `looking for the safety copy ${safety}`,
    });
    if (there.length === 0) return false;
    await putBack(conn, safety, v.num, opts, new Error(`rolling back database ${ds.pg.database}`));
    return true;
  });
}

/** `restore confirm` (or the age limit): drop the safety copy. */
export async function dropSafetyDatabase(
  ds: PostgresDataset,
  safety: string,
  opts: { signal?: AbortSignal; log?: Logger } = {},
): Promise<void> {
  await withConnection(ds, async (conn) => {
    const v = await serverVersion(conn, ds.pg.maintenanceDatabase, { signal: opts.signal });
    await dropDatabase(conn, safety, v.num, opts.signal);
    opts.log?.info({ database: ds.pg.database, safety }, 'safety copy of the database dropped');
  });
}

const size = (n: number | undefined) =>
  n === undefined ? '?' : n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`;

/**
 * For the restore's --dry-run report: what a restore of this dump would do, and whether the
 * version rule lets it. Connects only to read the server version and whether the database exists.
 */
export async function dryRunDescribe(
  ds: PostgresDataset,
  meta: PgDumpMeta,
  opts: { force?: boolean; jobId?: string; signal?: AbortSignal; probe?: boolean } = {},
): Promise<{ steps: string[]; warnings: string[]; verdict: 'same-or-older' | 'newer-forced' | 'newer-refused' | 'unknown' }> {
  const { pg } = ds;
  const warnings: string[] = [];
  let verdict: 'same-or-older' | 'newer-forced' | 'newer-refused' | 'unknown' = 'unknown';
  let target = '?';
  let exists: boolean | null = null;
  if (opts.probe !== false) {
    try {
      await withConnection(ds, async (conn) => {
        const probeDb = pg.emptyWith === 'recreate' ? pg.maintenanceDatabase : pg.database;
        const v = await serverVersion(conn, probeDb, { signal: opts.signal });
        target = v.text;
        try {
          const c = checkServerVersions(ds, meta, v.num, !!opts.force);
          verdict = c.verdict;
          warnings.push(...c.warnings);
        } catch (err) {
          verdict = 'newer-refused';
          warnings.push((err as Error).message);
        }
        if (pg.emptyWith === 'recreate')
          exists =
            (await query(conn, probeDb, `select 1 from pg_database where datname = ${literal(pg.database)};`, { signal: opts.signal }))
              .length > 0;
      });
    } catch (err) {
      warnings.push(`${ds.archive}: could not reach PostgreSQL at ${pg.host}:${pg.port} to check the target: ${(err as Error).message}`);
    }
  }
  const dumpNum = dumpServerNum(meta);
  const steps = [
    `RESTORE_DATABASE ${ds.archive} (${meta.format} dump of PostgreSQL ${dumpNum === null ? '?' : versionText(dumpNum)}, ${size(meta.sizeBytes)}) -> database ${pg.database} at ${pg.host}:${pg.port} (PostgreSQL ${target}), objects owned by ${pg.ownerRole}; version: ${verdict}`,
  ];
  if (pg.emptyWith === 'recreate') {
    const safety = safetyName(pg.database, opts.jobId);
    steps.push(
      exists === false
        ? `RESTORE_DATABASE database ${pg.database} does not exist: created empty from template0, owned by ${pg.ownerRole}`
        : `RESTORE_DATABASE database ${pg.database} renamed aside as ${safety} (the safety copy), a new empty one created from template0, owned by ${pg.ownerRole}`,
    );
  }
  const load =
    meta.format === 'custom'
      ? `pg_restore --no-owner --role=${pg.ownerRole} --exit-on-error --single-transaction${pg.emptyWith === 'clean' ? ' --clean --if-exists' : ''} -d ${pg.database}`
      : `psql -v ON_ERROR_STOP=1 --single-transaction -c 'SET ROLE ${pg.ownerRole}' -f ${ds.archive} -d ${pg.database}`;
  steps.push(`RESTORE_DATABASE ${load}`);
  return { steps, warnings, verdict };
}
