/**
 * Running the PostgreSQL client programs (psql, pg_dump, pg_restore) for a postgres
 * dataset. Not run-command.ts's runCommand, because these need a clean environment
 * (no PGPASSWORD, PGSERVICE or PGOPTIONS inherited from the agent's), psql's stdout
 * apart from its stderr, and the password kept off every command line:
 *
 *   withConnection(ds)   read the password file, write it to a temporary 0600 PGPASSFILE
 *                        in a 0700 directory, run the body, remove the directory
 *   runPg(conn, prog)    execa with a timeout and cancel signal; result shaped like
 *                        run-command's CommandResult (so describeFailure words errors)
 *   query(conn, sql)     psql -XAtq -v ON_ERROR_STOP=1: rows as arrays of strings
 *
 * Every message built from a program's output goes through redact(): the password is
 * replaced by *** should a server or program ever echo it.
 */
import { existsSync, promises as fsp, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { BoxbackError, type ErrorCode } from '@boxback/common';
import type { CommandResult } from '../run-command.js';
import { readPasswordFile, type PostgresDataset } from './plan.js';

export interface PgConnection {
  ds: PostgresDataset;
  /** Environment for the client programs (PGPASSFILE among them; never the password). */
  env: Record<string, string>;
  /** Replace the password in a text meant for a log or an error. */
  redact(text: string): string;
}

export interface PgResult extends CommandResult {
  stdout: string;
}

export interface PgRunOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  /** Extra environment (PGOPTIONS for psql's role). */
  env?: Record<string, string>;
  /** Keep stdout (psql queries); otherwise it is discarded. */
  captureStdout?: boolean;
  /** Text fed on stdin. */
  input?: string;
}

const STDERR_TAIL = 4000;
/** Client environment passed through from the agent's (TLS material for sslmode verify-*). */
const PASS_THROUGH = ['PGSSLCERT', 'PGSSLKEY', 'PGSSLROOTCERT', 'PGSSLCRL', 'PGSSLCRLDIR'];

/** Quote an SQL identifier and a string literal (standard_conforming_strings is on since 9.1). */
export const ident = (s: string): string => `"${s.replace(/"/g, '""')}"`;
export const literal = (s: string): string => `'${s.replace(/'/g, "''")}'`;

/** A .pgpass line field: backslash and colon escaped. */
const pgpassField = (s: string) => s.replace(/\\/g, '\\\\').replace(/:/g, '\\:');

/** Path of a PostgreSQL client program: the plan's binDir, else the newest /usr/lib/postgresql/N/bin, else PATH. */
export function pgBin(ds: PostgresDataset, prog: 'psql' | 'pg_dump' | 'pg_restore'): string {
  if (ds.pg.binDir) return path.join(ds.pg.binDir, prog);
  const root = '/usr/lib/postgresql';
  try {
    const majors = readdirSync(root)
      .filter((v) => /^\d+(\.\d+)?$/.test(v))
      .sort((a, b) => parseFloat(b) - parseFloat(a));
    for (const m of majors) {
      const p = path.join(root, m, 'bin', prog);
      if (existsSync(p)) return p;
    }
  } catch {
    /* not a Debian layout */
  }
  return prog;
}

/** Run `body` with a connection environment; the temporary PGPASSFILE is removed afterwards, whatever happens. */
export async function withConnection<T>(ds: PostgresDataset, body: (conn: PgConnection) => Promise<T>): Promise<T> {
  const password = await readPasswordFile(ds);
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    LANG: 'C.UTF-8',
    LC_MESSAGES: 'C',
    PGAPPNAME: 'boxback-agent',
    PGCONNECT_TIMEOUT: '15',
    PGCLIENTENCODING: 'UTF8',
  };
  if (process.env.HOME) env.HOME = process.env.HOME;
  for (const k of PASS_THROUGH) if (process.env[k]) env[k] = process.env[k]!;
  if (ds.pg.sslmode) env.PGSSLMODE = ds.pg.sslmode;
  let dir: string | undefined;
  try {
    if (password !== undefined) {
      dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'boxback-pgpass-'));
      await fsp.chmod(dir, 0o700);
      const file = path.join(dir, 'pgpass');
      // Any host, port and database: the same role also connects to the maintenance database.
      await fsp.writeFile(file, `*:*:*:${pgpassField(ds.pg.user)}:${pgpassField(password)}\n`, { mode: 0o600, flag: 'wx' });
      env.PGPASSFILE = file;
    } else {
      // No password file in the plan: peer, trust or certificate authentication, or the agent user's ~/.pgpass.
    }
    const redact = (text: string) => (password ? text.split(password).join('***') : text);
    return await body({ ds, env, redact });
  } finally {
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** A connection environment without a password, for programs that read only local files (pg_restore --list). */
export function offlineConnection(ds: PostgresDataset): PgConnection {
  return { ds, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8', LC_MESSAGES: 'C' }, redact: (t) => t };
}

/** Connection arguments for a program: host, port, user, database. Never a password. */
export function connArgs(conn: PgConnection, database: string): string[] {
  const { pg } = conn.ds;
  return [`--host=${pg.host}`, `--port=${pg.port}`, `--username=${pg.user}`, `--dbname=${database}`, '--no-password'];
}

export async function runPg(conn: PgConnection, argv: string[], opts: PgRunOptions): Promise<PgResult> {
  const started = Date.now();
  let tail = '';
  const sub = execa(argv[0], argv.slice(1), {
    env: { ...conn.env, ...opts.env },
    extendEnv: false,
    timeout: opts.timeoutMs,
    cancelSignal: opts.signal,
    forceKillAfterDelay: 5000,
    reject: false,
    input: opts.input,
    stdin: opts.input === undefined ? 'ignore' : undefined,
    stdout: opts.captureStdout ? 'pipe' : 'ignore',
    stderr: 'pipe',
    buffer: { stdout: !!opts.captureStdout, stderr: false },
    encoding: 'utf8',
  });
  sub.stderr?.on('data', (chunk: Buffer | string) => {
    tail = (tail + chunk.toString()).slice(-STDERR_TAIL);
  });
  const r = await sub;
  const spawnError = r.failed && r.exitCode === undefined && !r.signal && !r.timedOut && !r.isCanceled ? r.shortMessage : undefined;
  return {
    ok: !r.failed,
    exitCode: r.exitCode,
    signal: r.signal,
    timedOut: r.timedOut,
    cancelled: r.isCanceled,
    durationMs: Date.now() - started,
    outputTail: conn.redact(tail.trim()),
    spawnError: spawnError && conn.redact(spawnError),
    stdout: typeof r.stdout === 'string' ? r.stdout : '',
  };
}

/**
 * The line of a program's stderr that says what went wrong: the last ERROR/FATAL/error
 * line (psql ends a failed login with "password retrieved from file ..."), else the last line.
 */
export function reasonLine(tail: string): string {
  const lines = tail
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return [...lines].reverse().find((l) => /\b(ERROR|FATAL|PANIC|error|could not|aborting)\b/.test(l)) ?? lines.pop() ?? '';
}

/** The error for a failed run: cancelled, timed out, disk full, or `code` with the reason from stderr. */
export function pgError(
  conn: PgConnection,
  what: string,
  argv: string[],
  r: CommandResult,
  timeoutMs: number,
  code: ErrorCode,
): BoxbackError {
  const prog = path.basename(argv[0]);
  let why: string;
  if (r.spawnError) why = `${prog} could not start: ${r.spawnError}`;
  else if (r.timedOut) why = `${prog} timed out after ${Math.round(timeoutMs / 1000)}s`;
  else if (r.cancelled) why = `${prog} was cancelled`;
  else if (r.signal) why = `${prog} was killed by ${r.signal}`;
  else why = `${prog} exited with code ${r.exitCode}`;
  const reason = reasonLine(r.outputTail);
  const msg = conn.redact(`${what} failed (${why})${reason ? `: ${reason}` : ''}`);
  if (r.cancelled) return new BoxbackError('BOXBACK_ERR_CANCELLED', msg);
  if (r.timedOut) return new BoxbackError('BOXBACK_ERR_TIMEOUT', msg);
  if (/No space left on device|could not extend file/i.test(r.outputTail)) return new BoxbackError('BOXBACK_ERR_DISK_FULL', msg);
  return new BoxbackError(code, msg, { stderr: reason, argv: argv.slice(1).join(' ') });
}

/** Run SQL with psql on `database`; returns rows (fields split on the unit separator). Throws `code` on failure. */
export async function query(
  conn: PgConnection,
  database: string,
  sql: string,
  opts: { timeoutMs?: number; signal?: AbortSignal; code?: ErrorCode; what?: string } = {},
): Promise<string[][]> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const argv = [
    pgBin(conn.ds, 'psql'),
    ...connArgs(conn, database),
    '-X',
    '-A',
    '-t',
    '-q',
    '-v',
    'ON_ERROR_STOP=1',
    '-F',
    '\x1f',
    '-f',
    '-',
  ];
  const r = await runPg(conn, argv, { timeoutMs, signal: opts.signal, captureStdout: true, input: sql });
  if (!r.ok) throw pgError(conn, opts.what ?? `psql on database ${database}`, argv, r, timeoutMs, opts.code ?? 'BOXBACK_ERR_INTERNAL');
  return r.stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => l.split('\x1f'));
}

/** Server version of the connection: number (150018) and display form ("15.18"). */
export async function serverVersion(
  conn: PgConnection,
  database: string,
  opts: { signal?: AbortSignal; code?: ErrorCode } = {},
): Promise<{ num: number; text: string }> {
  const rows = await query(conn, database, "select current_setting('server_version_num');", {
    ...opts,
    what: `connecting to PostgreSQL at ${conn.ds.pg.host}:${conn.ds.pg.port} (database ${database}, user ${conn.ds.pg.user})`,
  });
  const num = Number(rows[0]?.[0]);
  if (!Number.isInteger(num) || num <= 0)
    throw new BoxbackError(
      opts.code ?? 'BOXBACK_ERR_INTERNAL',
      `unexpected server_version_num from ${conn.ds.pg.host}:${conn.ds.pg.port}: ${rows[0]?.[0] ?? '(none)'}`,
    );
  return { num, text: versionText(num) };
}

/** 150018 -> "15.18"; 90624 -> "9.6.24". */
export function versionText(num: number): string {
  if (num >= 100000) return `${Math.floor(num / 10000)}.${num % 10000}`;
  return `${Math.floor(num / 10000)}.${Math.floor(num / 100) % 100}.${num % 100}`;
}

/** The major version as a comparable number: 15 -> 1500, 9.6 -> 906. */
export function majorOf(num: number): number {
  return num >= 100000 ? Math.floor(num / 10000) * 100 : Math.floor(num / 100);
}

export function majorText(num: number): string {
  return num >= 100000 ? String(Math.floor(num / 10000)) : `${Math.floor(num / 10000)}.${Math.floor(num / 100) % 100}`;
}

/** "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15.18". */
export async function programVersion(conn: PgConnection, prog: 'pg_dump' | 'pg_restore' | 'psql'): Promise<string> {
  const bin = pgBin(conn.ds, prog);
  const r = await runPg(conn, [bin, '--version'], { timeoutMs: 15_000, captureStdout: true });
  if (!r.ok) throw pgError(conn, `${prog} --version`, [bin, '--version'], r, 15_000, 'BOXBACK_ERR_INTERNAL');
  return /\)\s+(\d+(?:\.\d+)*)/.exec(r.stdout)?.[1] ?? r.stdout.trim();
}
