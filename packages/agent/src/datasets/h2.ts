/**
 * kind: h2 (GoCD's database): an H2 database served by a running H2 TCP server.
 *
 *   backup, online (default): H2's own `BACKUP TO` over the server's JDBC URL writes a
 *     consistent zip of the database while it keeps serving (h2-shell.ts); the server writes
 *     it into the database's own directory (a place it can write), from where it is moved
 *     into the backup. Retried while the server is not listening yet (just restarted after
 *     the window). With `h2.quiesce: true` the file is copied inside the quiesce window
 *     instead (config and database frozen together), unless the backup is --live.
 *   probe: the copy is extracted into a throwaway directory and opened offline by H2 itself
 *     (not read-only: H2 rolls back the transactions that were open at the copy, as the
 *     restored server will; a read-only open refuses such a copy); `SCRIPT` reads every row (a torn copy fails with "File corrupted" or
 *     "Unable to read the page"); a file larger than an empty store that opens with no table
 *     fails too (H2 opens a store with no readable chunk as a new empty database): the backup
 *     fails with H2's words, never Restorable
 *   restore: a zip of the database directory, like kind zip: extracted into staging before
 *     STOP, swapped in by SWAP (a zip dataset's db.zip from before this driver restores too)
 *
 *   datasets:
 *     - name: database
 *       kind: h2
 *       archive: db.zip
 *       path: /var/lib/go-server/db/h2db        # the directory holding cruise.mv.db
 *       h2:
 *         url: jdbc:h2:tcp://127.0.0.1:9092/cruise
 *         user: sa
 *         passwordFile: /etc/boxback/h2.password  # 0600, optional (GoCD's default has none)
 */
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { BoxbackError, fsyncDir, fsyncFile, hashFile, zipEntries } from '@boxback/common';
import type { PlanDataset } from '../plan.js';
import { stageDataset, type StagedDataset } from '../backup/stage.js';
import { extractDirDataset } from '../restore/extract.js';
import { absPath, datasetBase, foreignBlocks, requiredBlock } from './base.js';
import type { BackupEnv, Captured, DatasetDriver } from './driver.js';
import { h2Sql, notListening, type H2Connection } from './h2-shell.js';
import { readSecretFile } from './secrets.js';
import { stageZip, zipInto, zipStagingPaths, zipTarget } from './zip.js';

const h2Schema = z
  .object({
    /** The running server's URL: jdbc:h2:tcp://HOST:PORT/DATABASE (or ssl://). */
    url: z.string().regex(/^jdbc:h2:(tcp|ssl):\/\/[^;/]+\/[^;]+$/, 'a jdbc:h2:tcp://HOST:PORT/DATABASE URL of the running H2 server'),
    user: z.string().min(1).default('sa'),
    /** A file holding only the password (first line), mode 0600. None: the empty password. */
    passwordFile: absPath.optional(),
    /** H2's tools jar (Debian's libh2-java). */
    jar: absPath.default('/usr/share/java/h2.jar'),
    java: z.string().min(1).default('java'),
    /** Copy the file inside the quiesce window instead of BACKUP TO (config and database frozen together). */
    quiesce: z.boolean().default(false),
    /** How long to wait for the server to listen (it may just have been started again). */
    connectWaitSeconds: z.number().min(0).max(3600).default(60),
    timeoutSeconds: z.number().positive().max(86_400).default(3600),
  })
  .strict();

export const h2DatasetSchema = datasetBase
  .extend({ kind: z.literal('h2'), h2: requiredBlock('h2', h2Schema, 'url of the running server, user, passwordFile...') })
  .strict()
  .superRefine((d, ctx) => {
    if (!d.path)
      ctx.addIssue({ code: 'custom', path: ['path'], message: 'an h2 dataset needs path: the directory holding its .mv.db file' });
    if (d.files)
      ctx.addIssue({ code: 'custom', path: ['files'], message: 'an h2 dataset has no files (give path: the database directory)' });
    foreignBlocks(d, 'h2', ctx);
  });

type H2Dataset = Extract<PlanDataset, { kind: 'h2' }>;

/** The database's name: the URL's last path segment (cruise -> cruise.mv.db). */
export const h2DatabaseName = (url: string): string => path.posix.basename(url.split(';')[0]);
const sqlString = (s: string) => `'${s.replace(/'/g, "''")}'`;

async function connection(d: H2Dataset, index: number, url: string): Promise<H2Connection> {
  const password = d.h2.passwordFile ? await readSecretFile(d.h2.passwordFile, `datasets.${index}.h2.passwordFile`) : '';
  return { java: d.h2.java, jar: d.h2.jar, url, user: d.h2.user, password };
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

/** Move a file into the backup: a rename on one filesystem, else a streamed copy; fsynced. */
async function moveInto(from: string, to: string): Promise<void> {
  try {
    await fsp.rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await pipeline(createReadStream(from), createWriteStream(to, { mode: 0o600 }));
    await fsp.rm(from, { force: true });
  }
  await fsyncFile(to);
  await fsyncDir(path.dirname(to));
}

/** BACKUP TO over the running server, then into the backup; returns the manifest entry. */
async function onlineBackup(d: H2Dataset, index: number, env: BackupEnv): Promise<Captured> {
  const dir = d.path!;
  const out = path.join(env.tempDir, d.archive);
  const conn = await connection(d, index, d.h2.url);
  for (const f of await fsp.readdir(dir).catch(() => [] as string[]))
    if (/^\.boxback-backup-.*\.zip$/.test(f)) await fsp.rm(path.join(dir, f), { force: true });
  const tmp = path.join(dir, `.boxback-backup-${env.jobId}.zip`);
  const started = Date.now();
  try {
    await env.phase(async (h) => {
      const waitUntil = Date.now() + d.h2.connectWaitSeconds * 1000;
      for (let attempt = 1; ; attempt++) {
        h.update({ message: `BACKUP TO over ${d.h2.url}${attempt > 1 ? ` (try ${attempt})` : ''}` });
        try {
          await h2Sql(conn, [`BACKUP TO ${sqlString(tmp)}`], {
            timeoutMs: d.h2.timeoutSeconds * 1000,
            signal: env.signal,
            code: 'BOXBACK_ERR_ARCHIVE_FAILED',
            what: `H2 online backup of ${d.h2.url}`,
          });
          break;
        } catch (err) {
          if (!(err instanceof BoxbackError) || !notListening(err.message) || Date.now() > waitUntil) throw err;
          await sleep(1000, env.signal);
          env.signal.throwIfAborted();
        }
      }
      await moveInto(tmp, out);
      const st = await fsp.stat(out);
      h.update({ bytesDone: st.size, filesDone: 1, filesTotal: 1, message: d.archive });
    });
  } finally {
    await fsp.rm(tmp, { force: true });
  }
  let entries = 0;
  let bytes = 0;
  for await (const e of zipEntries(out)) {
    entries++;
    bytes += e.size;
  }
  return {
    sha256: await hashFile(out),
    entry: {
      name: d.name,
      archive: d.archive,
      kind: 'h2',
      capture: 'engine',
      sources: [dir],
      target: dir,
      entries,
      bytes,
      extra: { method: 'BACKUP TO', url: d.h2.url, database: h2DatabaseName(d.h2.url), durationMs: Date.now() - started },
    },
  };
}

/** An empty H2 2.x store is 16 KiB (two headers and one chunk); four times that holds data. */
const EMPTY_STORE_BYTES = 64 * 1024;

export const h2Driver: DatasetDriver<H2Dataset> = {
  kind: 'h2',
  schema: h2DatasetSchema,
  accepts: ['h2', 'zip'],
  noun: 'database',
  needsWindow: (d) => d.h2.quiesce,
  captureInWindow: (d, _i, env) => stageDataset(d, env),
  backup(d, index, env, staged) {
    if (staged) return zipInto(d, staged as StagedDataset, env, 'h2', 'quiesced');
    return onlineBackup(d, index, env);
  },
  async probe(d, index, entry, env) {
    const db = h2DatabaseName(d.h2.url);
    const root = await fsp.mkdtemp(path.join(env.tempDir, '.probe-'));
    try {
      const dir = path.join(root, 'db');
      const target = {
        kind: 'dir' as const,
        name: d.name,
        archive: entry.archive,
        openArchive: async () => ({ src: path.join(env.tempDir, entry.archive), close: async () => undefined }),
        target: dir,
        entries: entry.entries,
        bytes: entry.bytes,
      };
      await extractDirDataset(target, dir, {
        jobId: 'probe',
        maps: { uid: new Map(), gid: new Map() },
        chownEntries: false,
        signal: env.signal,
      });
      const names = await fsp.readdir(dir);
      if (!names.includes(`${db}.mv.db`))
        throw new BoxbackError(
          'BOXBACK_ERR_PROBE_FAILED',
          `${entry.archive} holds no ${db}.mv.db (it holds ${names.join(', ') || 'nothing'})`,
        );
      const fileBytes = (await fsp.stat(path.join(dir, `${db}.mv.db`))).size;
      const conn = await connection(d, index, `jdbc:h2:file:${path.join(dir, db)};IFEXISTS=TRUE`);
      const userTables = "SELECT COUNT(*) AS TABLES FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA <> 'INFORMATION_SCHEMA'";
      const out = await h2Sql(conn, [userTables, "SCRIPT TO '/dev/null'"], {
        timeoutMs: d.h2.timeoutSeconds * 1000,
        signal: env.signal,
        code: 'BOXBACK_ERR_PROBE_FAILED',
        what: `${entry.archive} does not open in H2`,
      });
      const tables = Number(/TABLES\s*\n\s*(\d+)/.exec(out)?.[1] ?? NaN);
      // H2 opens a store whose chunks are all unreadable as a new empty database, without an
      // error (2.1.214 truncates the file to its headers): a file larger than an empty store
      // that opens with no table is such a copy.
      if (tables === 0 && fileBytes > EMPTY_STORE_BYTES)
        throw new BoxbackError(
          'BOXBACK_ERR_PROBE_FAILED',
          `${entry.archive} does not open in H2: its ${db}.mv.db holds ${fileBytes} bytes but H2 opened it as an empty database (File corrupted: no chunk of it could be read)`,
        );
      return {
        result: 'ok',
        method: 'H2 opened a throwaway copy and ran SCRIPT (every row read)',
        message: Number.isFinite(tables) ? `${tables} tables` : undefined,
      };
    } finally {
      await fsp.rm(root, { recursive: true, force: true });
    }
  },
  target: (entry, d, i, files) => zipTarget(entry, d, i, files),
  stage: stageZip,
  stagingPaths: zipStagingPaths,
};
