/**
 * BACKUP_DATABASE for a postgres dataset: the real pg_dump into `db.<database>`, as GoCD
 * names it. pg_dump reads everything in one snapshot (a repeatable-read transaction), so
 * the dump is consistent while the service keeps writing: it runs outside the quiesce
 * window unless the plan's `postgres.quiesce` says otherwise.
 *
 *   1. withConnection: the password file is checked (0600) and copied into a temporary
 *      0600 PGPASSFILE; it is removed when the dump ends, whatever happens
 *   2. psql: server_version_num (and a first proof that host, user and password work)
 *   3. pg_dump --format=custom|plain --no-password --file=<out>.tmp-<rand>, the plan's
 *      allow-listed extra options; plain dumps add --no-owner (restored as the owner role)
 *      and --clean --if-exists (so a clean restore drops what it recreates)
 *      progress: the temporary file's size, every 500 ms
 *   4. fsync the file, rename it to <out>, fsync the directory; SHA-256 of the result
 *
 * Failure or cancellation removes the temporary file. Errors carry pg_dump's last stderr
 * line; the password is on no command line, in no log line and in no result field.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fsyncDir, fsyncFile, hashFile, type Logger } from '@boxback/common';
import { connArgs, pgBin, pgError, programVersion, runPg, serverVersion, withConnection } from './exec.js';
import type { PostgresDataset } from './plan.js';

export interface DumpProgress {
  bytesDone: number;
  message: string;
}

export interface DumpOptions {
  signal?: AbortSignal;
  onProgress?: (p: DumpProgress) => void;
  log?: Logger;
}

/** What a dump records; the engine puts it (minus sha256) in ManifestDataset.extra. */
export interface DumpResult {
  format: 'custom' | 'plain';
  /** "15.18" */
  serverVersion: string;
  /** 150018 */
  serverVersionNum: number;
  /** pg_dump's own version, "15.18": a custom archive needs a pg_restore at least this new. */
  dumpVersion: string;
  sizeBytes: number;
  sha256: string;
  database: string;
  durationMs: number;
}

/** The pg_dump command line (no password: it travels in PGPASSFILE). Exported for tests and dry runs. */
export function pgDumpArgv(ds: PostgresDataset, conn: Parameters<typeof connArgs>[0], file: string): string[] {
  const { pg } = ds;
  const argv = [pgBin(ds, 'pg_dump'), ...connArgs(conn, pg.database), `--format=${pg.format}`, `--file=${file}`];
  if (pg.format === 'plain') argv.push('--no-owner', '--clean', '--if-exists');
  argv.push(...pg.extraArgs);
  return argv;
}

export async function dumpPostgres(ds: PostgresDataset, outFile: string, opts: DumpOptions = {}): Promise<DumpResult> {
  const started = Date.now();
  const { pg } = ds;
  const timeoutMs = pg.timeoutSeconds * 1000;
  const dir = path.dirname(outFile);
  const tmp = path.join(dir, `.${path.basename(outFile)}.tmp-${randomBytes(4).toString('hex')}`);
  return withConnection(ds, async (conn) => {
    const server = await serverVersion(conn, pg.database, { signal: opts.signal, code: 'BOXBACK_ERR_ARCHIVE_FAILED' });
    const dumpVersion = await programVersion(conn, 'pg_dump');
    const argv = pgDumpArgv(ds, conn, tmp);
    opts.log?.info(
      {
        dataset: ds.name,
        database: pg.database,
        host: pg.host,
        port: pg.port,
        serverVersion: server.text,
        dumpVersion,
        argv: argv.slice(1),
      },
      'pg_dump started',
    );
    opts.onProgress?.({ bytesDone: 0, message: `pg_dump ${pg.database} (${pg.format}) from PostgreSQL ${server.text}` });
    const ticker = setInterval(() => {
      fsp.stat(tmp).then(
        (st) => opts.onProgress?.({ bytesDone: st.size, message: `pg_dump ${pg.database}` }),
        () => undefined,
      );
    }, 500);
    let done = false;
    try {
      const r = await runPg(conn, argv, { timeoutMs, signal: opts.signal });
      clearInterval(ticker);
      if (!r.ok)
        throw pgError(
          conn,
          `pg_dump of database ${pg.database} on ${pg.host}:${pg.port}`,
          argv,
          r,
          timeoutMs,
          'BOXBACK_ERR_ARCHIVE_FAILED',
        );
      await fsyncFile(tmp);
      await fsp.rename(tmp, outFile);
      done = true;
      await fsyncDir(dir);
      const st = await fsp.stat(outFile);
      opts.onProgress?.({ bytesDone: st.size, message: `pg_dump ${pg.database}: checksumming` });
      const sha256 = await hashFile(outFile);
      const result: DumpResult = {
        format: pg.format,
        serverVersion: server.text,
        serverVersionNum: server.num,
        dumpVersion,
        sizeBytes: st.size,
        sha256,
        database: pg.database,
        durationMs: Date.now() - started,
      };
      opts.log?.info({ dataset: ds.name, database: pg.database, sizeBytes: st.size, durationMs: result.durationMs }, 'pg_dump done');
      return result;
    } finally {
      clearInterval(ticker);
      if (!done) await fsp.rm(tmp, { force: true });
    }
  });
}

/** ManifestDataset.extra for a dump (the file's SHA-256 lives in the manifest's file list). */
export function manifestExtra(r: DumpResult): Record<string, unknown> {
  return {
    format: r.format,
    serverVersion: r.serverVersion,
    serverVersionNum: r.serverVersionNum,
    dumpVersion: r.dumpVersion,
    sizeBytes: r.sizeBytes,
    database: r.database,
  };
}
