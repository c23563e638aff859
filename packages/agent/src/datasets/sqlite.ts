/**
 * kind: sqlite (Woodpecker, Drone, Gitea Actions): one SQLite database file.
 *
 *   backup: SQLite's online backup API (`sqlite3 SRC ".backup OUT"`) into the stage, a
 *     consistent copy while the service keeps writing (outside the window unless
 *     `sqlite.quiesce`); then zipped by its base name, like a `files:` dataset
 *   probe: `PRAGMA integrity_check` on the copy (`quick_check` above quickCheckAboveBytes);
 *     anything but "ok" fails the backup with SQLite's own words
 *   restore: extracted into staging and swapped in like a `files:` dataset; then, with the
 *     services stopped, the old database's -wal, -shm and -journal files are moved aside as
 *     safety copies (left in place, SQLite would replay an old WAL into the restored file)
 *
 *   datasets:
 *     - name: database
 *       kind: sqlite
 *       archive: woodpecker-db.zip
 *       sqlite: { file: /var/lib/woodpecker/woodpecker.sqlite }
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { BoxbackError } from '@boxback/common';
import type { PlanDataset } from '../plan.js';
import { exists, sibling, type Move } from '../restore/record.js';
import { describeFailure, runCommand } from '../run-command.js';
import { absPath, datasetBase, foreignBlocks, noPathNoFiles, requiredBlock } from './base.js';
import type { BackupEnv, DatasetDriver } from './driver.js';
import { stageZip, zipInto, zipStagingPaths, zipTarget } from './zip.js';

const sqliteSchema = z
  .object({
    /** The database file. */
    file: absPath,
    /** The sqlite3 program. */
    sqlite3: z.string().min(1).default('sqlite3'),
    /** Copy inside the quiesce window (default no: the backup API makes a consistent copy). */
    quiesce: z.boolean().default(false),
    /** Above this size the probe runs PRAGMA quick_check instead of integrity_check. */
    quickCheckAboveBytes: z
      .number()
      .int()
      .min(0)
      .default(1 << 30),
    timeoutSeconds: z.number().positive().max(86_400).default(3600),
  })
  .strict();

export const sqliteDatasetSchema = datasetBase
  .extend({ kind: z.literal('sqlite'), sqlite: requiredBlock('sqlite', sqliteSchema, 'file: the database file') })
  .strict()
  .superRefine((d, ctx) => {
    noPathNoFiles(d, 'sqlite', 'give sqlite.file', ctx);
    foreignBlocks(d, 'sqlite', ctx);
  });

type SqliteDataset = Extract<PlanDataset, { kind: 'sqlite' }>;

/** Files beside a database that belong to its old state. */
const SIDECARS = ['-wal', '-shm', '-journal'];

const staged = (d: SqliteDataset, stageRoot: string) => path.join(stageRoot, d.name, path.basename(d.sqlite.file));

/** Run sqlite3 on `db`; returns its output. Errors carry SQLite's last line. */
async function sqlite3(
  d: SqliteDataset,
  db: string,
  arg: string,
  what: string,
  signal: AbortSignal,
  code: 'BOXBACK_ERR_ARCHIVE_FAILED' | 'BOXBACK_ERR_PROBE_FAILED',
) {
  const argv = [d.sqlite.sqlite3, '-bail', db, arg];
  const timeoutMs = d.sqlite.timeoutSeconds * 1000;
  const r = await runCommand(argv, { timeoutMs, signal, tailBytes: 64 * 1024 });
  if (!r.ok) {
    signal.throwIfAborted();
    throw new BoxbackError(r.timedOut ? 'BOXBACK_ERR_TIMEOUT' : code, describeFailure(what, argv, r, timeoutMs));
  }
  return r.outputTail;
}

/** The online backup API into the stage. */
async function copy(d: SqliteDataset, stageRoot: string, signal: AbortSignal): Promise<string> {
  const src = d.sqlite.file;
  if (!(await exists(src))) throw new BoxbackError('BOXBACK_ERR_ARCHIVE_FAILED', `dataset ${d.name}: ${src} does not exist`);
  const out = staged(d, stageRoot);
  if (/["'\n]/.test(out))
    throw new BoxbackError('BOXBACK_ERR_ARCHIVE_FAILED', `dataset ${d.name}: the stage path ${out} has a quote in it`);
  await fsp.mkdir(path.dirname(out), { recursive: true });
  await sqlite3(d, src, `.backup "${out}"`, `SQLite online backup of ${src}`, signal, 'BOXBACK_ERR_ARCHIVE_FAILED');
  return out;
}

async function backup(d: SqliteDataset, env: BackupEnv, inWindow: string | undefined) {
  const file =
    inWindow ??
    (await env.phase(async (h) => {
      h.update({ message: `sqlite3 .backup of ${d.sqlite.file}` });
      return copy(d, env.stageRoot, env.signal);
    }));
  const asFiles = { ...d, files: [d.sqlite.file] };
  const out = await zipInto(asFiles, { files: [file] }, env, 'sqlite', inWindow ? 'quiesced' : 'engine');
  out.entry.extra = { ...out.entry.extra, method: '.backup (online backup API)' };
  return out;
}

export const sqliteDriver: DatasetDriver<SqliteDataset> = {
  kind: 'sqlite',
  schema: sqliteDatasetSchema,
  accepts: ['sqlite'],
  noun: 'database',
  paths: (d) => [{ key: 'sqlite.file', path: d.sqlite.file }],
  needsWindow: (d) => d.sqlite.quiesce,
  captureInWindow: (d, _i, env) => copy(d, env.stageRoot, env.signal),
  backup: (d, _i, env, inWindow) => backup(d, env, inWindow as string | undefined),
  async probe(d, _i, entry, env) {
    const file = staged(d, env.stageRoot);
    const size = (await fsp.stat(file)).size;
    const pragma = size > d.sqlite.quickCheckAboveBytes ? 'quick_check' : 'integrity_check';
    const out = await sqlite3(d, file, `PRAGMA ${pragma};`, `${entry.archive}: PRAGMA ${pragma}`, env.signal, 'BOXBACK_ERR_PROBE_FAILED');
    const lines = out.split('\n').filter(Boolean);
    if (lines.length !== 1 || lines[0] !== 'ok')
      throw new BoxbackError(
        'BOXBACK_ERR_PROBE_FAILED',
        `${entry.archive}: PRAGMA ${pragma} found damage: ${lines.slice(0, 5).join('; ')}`,
      );
    return { result: 'ok', method: `PRAGMA ${pragma}` };
  },
  target: (entry, d, i, files) => zipTarget(entry, { ...d, files: [d.sqlite.file] }, i, files),
  stage: stageZip,
  stagingPaths: zipStagingPaths,
  async apply(_part, d, env) {
    for (const suffix of SIDECARS) {
      const target = `${d.sqlite.file}${suffix}`;
      if (!(await exists(target))) continue;
      const move: Move = { kind: 'file', target, safety: sibling.safety(target, env.jobId), state: 'planned' };
      env.rec.moves.push(move);
      await env.save();
      await fsp.rename(target, move.safety!);
      move.state = 'done';
      await env.save();
      env.progress(`${path.basename(target)} of the old database moved aside`);
    }
    return [];
  },
};
