/**
 * kind: mysql (MariaDB or MySQL: TeamCity, Drone on MySQL): `mariadb-dump --single-transaction`
 * of one database into an SQL script, a consistent online copy of InnoDB tables while the
 * service writes (outside the window unless `mysql.quiesce`).
 *
 *   secrets: as for postgres, never in the plan nor on a command line: `passwordFile` (0600)
 *     goes into a temporary 0600 `--defaults-extra-file` in a private directory
 *   probe: structural (the dump ends with mariadb-dump's "Dump completed" line), or with
 *     `probe: full` the dump is loaded into a throwaway database, which is dropped after
 *   restore: before STOP the server is reached; after SWAP the current database is dumped
 *     as the safety copy (<stateDir>/restores/<job>-<database>.sql), emptied (dropped and
 *     created again) and the backup's dump loaded; ROLLBACK loads the safety copy back
 *
 *   datasets:
 *     - name: database
 *       kind: mysql
 *       archive: db.teamcity.sql
 *       mysql: { host: 127.0.0.1, port: 3306, database: teamcity, user: teamcity, passwordFile: /etc/boxback/tc.password }
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { BoxbackError, fsyncDir, fsyncFile, hashFile, type ErrorCode, type Logger } from '@boxback/common';
import type { PlanDataset } from '../plan.js';
import { recordsDir } from '../restore/record.js';
import { describeFailure, runCommand } from '../run-command.js';
import { absPath, datasetBase, foreignBlocks, noPathNoFiles, requiredBlock } from './base.js';
import type { DatasetDriver, DumpPart } from './driver.js';
import { readSecretFile, withPrivateDir } from './secrets.js';

const myName = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_$]{0,63}$/, 'letters, digits, _ and $ (at most 64)');

const mysqlSchema = z
  .object({
    /** Host name or address, or an absolute unix-socket path. */
    host: z.union([absPath, z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.:_-]*$/)]).default('127.0.0.1'),
    port: z.number().int().min(1).max(65535).default(3306),
    database: myName,
    user: z.string().min(1).max(80),
    passwordFile: absPath.optional(),
    /** Directory of mariadb-dump and mariadb (default: PATH). */
    binDir: absPath.optional(),
    /** structural: the dump is complete; full: it loads into a throwaway database. */
    probe: z.enum(['structural', 'full']).default('structural'),
    quiesce: z.boolean().default(false),
    timeoutSeconds: z
      .number()
      .positive()
      .max(7 * 86_400)
      .default(6 * 3600),
  })
  .strict();

export const mysqlDatasetSchema = datasetBase
  .extend({ kind: z.literal('mysql'), mysql: requiredBlock('mysql', mysqlSchema, 'host, port, database, user, passwordFile...') })
  .strict()
  .superRefine((d, ctx) => {
    noPathNoFiles(d, 'mysql', 'it is dumped with mariadb-dump', ctx);
    foreignBlocks(d, 'mysql', ctx);
  });

type MysqlDataset = Extract<PlanDataset, { kind: 'mysql' }>;
type My = MysqlDataset['mysql'];

const bin = (m: My, prog: 'mariadb' | 'mariadb-dump') => (m.binDir ? path.join(m.binDir, prog) : prog);
const ident = (s: string) => `\`${s.replace(/`/g, '``')}\``;

/** Run a MariaDB client program with the connection in a 0600 defaults file; throws `code` with the server's words. */
async function run(
  m: My,
  index: number,
  prog: 'mariadb' | 'mariadb-dump',
  args: string[],
  what: string,
  code: ErrorCode,
  signal?: AbortSignal,
) {
  const password = m.passwordFile ? await readSecretFile(m.passwordFile, `datasets.${index}.mysql.passwordFile`) : undefined;
  return withPrivateDir('boxback-my-', async (dir) => {
    const cnf = path.join(dir, 'client.cnf');
    const where = path.isAbsolute(m.host) ? `socket=${m.host}` : `host=${m.host}\nport=${m.port}\nprotocol=tcp`;
    const q = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
    await fsp.writeFile(cnf, `[client]\nuser=${q(m.user)}\n${password !== undefined ? `password=${q(password)}\n` : ''}${where}\n`, {
      mode: 0o600,
    });
    const argv = [bin(m, prog), `--defaults-extra-file=${cnf}`, ...args];
    const timeoutMs = m.timeoutSeconds * 1000;
    const r = await runCommand(argv, { timeoutMs, signal });
    if (!r.ok) {
      signal?.throwIfAborted();
      throw new BoxbackError(r.timedOut ? 'BOXBACK_ERR_TIMEOUT' : code, describeFailure(what, [bin(m, prog), ...args], r, timeoutMs));
    }
    return r.outputTail;
  });
}

/** mariadb-dump of `database` into `file` (temp name, fsync, rename). */
async function dump(m: My, index: number, database: string, file: string, code: ErrorCode, signal?: AbortSignal): Promise<void> {
  const tmp = `${file}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    const args = ['--single-transaction', '--routines', '--triggers', '--events', '--hex-blob', `--result-file=${tmp}`, database];
    await run(m, index, 'mariadb-dump', args, `dumping database ${database}`, code, signal);
    await fsyncFile(tmp);
    await fsp.rename(tmp, file);
    await fsyncDir(path.dirname(file));
  } finally {
    await fsp.rm(tmp, { force: true });
  }
}

const sql = (m: My, index: number, s: string, what: string, code: ErrorCode, signal?: AbortSignal) =>
  run(m, index, 'mariadb', ['--batch', '--skip-column-names', '-e', s], what, code, signal);

/** Empty `database` (drop, create) and load `file` into it. */
async function loadInto(m: My, index: number, database: string, file: string, code: ErrorCode, signal?: AbortSignal): Promise<void> {
  await sql(
    m,
    index,
    `DROP DATABASE IF EXISTS ${ident(database)}; CREATE DATABASE ${ident(database)};`,
    `emptying database ${database}`,
    code,
    signal,
  );
  await run(
    m,
    index,
    'mariadb',
    [`--database=${database}`, '-e', `source ${file}`],
    `loading ${path.basename(file)} into ${database}`,
    code,
    signal,
  );
}

async function dumpComplete(file: string): Promise<boolean> {
  const fh = await fsp.open(file, 'r');
  try {
    const { size } = await fh.stat();
    const buf = Buffer.alloc(Math.min(size, 4096));
    await fh.read(buf, 0, buf.length, size - buf.length);
    return /-- Dump completed/.test(buf.toString('latin1'));
  } finally {
    await fh.close();
  }
}

const safetyFile = (stateDir: string, jobId: string, database: string) => path.join(recordsDir(stateDir), `${jobId}-${database}.sql`);

export const mysqlDriver: DatasetDriver<MysqlDataset, DumpPart> = {
  kind: 'mysql',
  schema: mysqlDatasetSchema,
  accepts: ['mysql'],
  matchByName: true,
  noun: 'dump',
  needsWindow: (d) => d.mysql.quiesce,
  async captureInWindow(d, index, env) {
    env.progress(`mariadb-dump of ${d.mysql.database}`);
    await dump(d.mysql, index, d.mysql.database, path.join(env.tempDir, d.archive), 'BOXBACK_ERR_ARCHIVE_FAILED', env.signal);
    return true;
  },
  async backup(d, index, env, dumped) {
    const file = path.join(env.tempDir, d.archive);
    const started = Date.now();
    if (!dumped)
      await env.phase(async (h) => {
        h.update({ message: `mariadb-dump --single-transaction ${d.mysql.database}` });
        await dump(d.mysql, index, d.mysql.database, file, 'BOXBACK_ERR_ARCHIVE_FAILED', env.signal);
        h.update({ bytesDone: (await fsp.stat(file)).size, filesDone: 1, filesTotal: 1 });
      });
    const where = path.isAbsolute(d.mysql.host) ? d.mysql.host : `${d.mysql.host}:${d.mysql.port}`;
    const size = (await fsp.stat(file)).size;
    return {
      sha256: await hashFile(file),
      entry: {
        name: d.name,
        archive: d.archive,
        kind: 'mysql',
        capture: dumped ? 'quiesced' : 'engine',
        sources: [`mysql://${where}/${d.mysql.database}`],
        target: `mysql://${where}/${d.mysql.database}`,
        entries: 1,
        bytes: size,
        extra: {
          method: 'mariadb-dump --single-transaction',
          database: d.mysql.database,
          sizeBytes: size,
          durationMs: Date.now() - started,
        },
      },
    };
  },
  async probe(d, index, entry, env) {
    const file = path.join(env.tempDir, entry.archive);
    if (!(await dumpComplete(file)))
      throw new BoxbackError(
        'BOXBACK_ERR_PROBE_FAILED',
        `${entry.archive} does not end with mariadb-dump's "Dump completed" line: it is cut short`,
      );
    if (d.mysql.probe !== 'full') return { result: 'ok', method: 'structural: the dump is complete' };
    const scratch = `${d.mysql.database.slice(0, 40)}_boxback_probe_${randomBytes(3).toString('hex')}`;
    try {
      await loadInto(d.mysql, index, scratch, file, 'BOXBACK_ERR_PROBE_FAILED', env.signal);
      const tables = await sql(
        d.mysql,
        index,
        `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '${scratch}'`,
        'counting tables',
        'BOXBACK_ERR_PROBE_FAILED',
        env.signal,
      );
      return { result: 'ok', method: 'full: loaded into a throwaway database', message: `${tables.trim()} tables` };
    } finally {
      await sql(d.mysql, index, `DROP DATABASE IF EXISTS ${ident(scratch)}`, `dropping ${scratch}`, 'BOXBACK_ERR_PROBE_FAILED').catch(
        () => undefined,
      );
    }
  },
  async target(entry, _d, index, files) {
    const archivePath = await files.get(entry.archive);
    return {
      kind: 'mysql',
      name: entry.name,
      archive: entry.archive,
      archivePath,
      entries: 1,
      bytes: entry.bytes ?? 0,
      index,
      capture: entry.capture,
    };
  },
  async preflight(part, d, env) {
    env.emit({ phase: 'VERSION_CHECK', message: `${part.archive} -> database ${d.mysql.database} at ${d.mysql.host}` });
    await sql(
      d.mysql,
      part.index,
      'SELECT VERSION()',
      `reaching the server of ${d.mysql.database}`,
      'BOXBACK_ERR_RESTORE_FAILED',
      env.signal,
    );
    if (!(await dumpComplete(part.archivePath)))
      throw new BoxbackError(
        'BOXBACK_ERR_RESTORE_FAILED',
        `${part.archive} is cut short (no "Dump completed" line); refusing to restore it`,
      );
    return [];
  },
  async apply(part, d, env) {
    const m = d.mysql;
    const safety = safetyFile(env.config.stateDir, env.jobId, m.database);
    env.rec.moves.push({ kind: 'database', target: m.database, safety, state: 'planned', dataset: d.name });
    const move = env.rec.moves[env.rec.moves.length - 1];
    await env.save();
    const exists = (
      await sql(m, part.index, `SHOW DATABASES LIKE '${m.database}'`, 'looking for the database', 'BOXBACK_ERR_RESTORE_FAILED', env.signal)
    ).trim();
    if (exists) {
      env.progress(`dumping the current ${m.database} as the safety copy`);
      await dump(m, part.index, m.database, safety, 'BOXBACK_ERR_RESTORE_FAILED', env.signal);
    } else move.safety = null;
    env.progress(`loading ${part.archive} into ${m.database}`);
    await loadInto(m, part.index, m.database, part.archivePath, 'BOXBACK_ERR_RESTORE_FAILED', env.signal);
    move.state = 'done';
    await env.save();
    return [];
  },
  async undo(move, d, index, log: Logger) {
    if (move.safety === null) {
      await sql(
        d.mysql,
        index,
        `DROP DATABASE IF EXISTS ${ident(d.mysql.database)}`,
        'removing the restored database',
        'BOXBACK_ERR_ROLLBACK_FAILED',
      );
      return;
    }
    if (!(await fsp.stat(move.safety).catch(() => null))) return; // never made: nothing was changed
    await loadInto(d.mysql, index, d.mysql.database, move.safety, 'BOXBACK_ERR_ROLLBACK_FAILED');
    log.info({ database: d.mysql.database, safety: move.safety }, 'database put back from its safety dump');
  },
  dropSafety: async (move) => void (await fsp.rm(move.safety!, { force: true })),
  safetyLabel: (move) => `mysql safety dump ${move.safety}`,
};
