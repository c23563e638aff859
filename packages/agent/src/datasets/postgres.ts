/**
 * kind: postgres (docs/design/postgres-dataset.md): the real pg_dump into db.<database>,
 * outside the window unless `postgres.quiesce` (pg_dump reads one snapshot: an online
 * consistent copy). Probe: the dump read back (pg_restore --list; a plain script must end
 * with pg_dump's closing line). Restore: after SWAP the dump is loaded into THIS plan's
 * database, the old one renamed aside as the safety database (postgres/restore.ts).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, type ManifestDataset } from '@boxback/common';
import { dumpPostgres, manifestExtra, type DumpResult } from '../postgres/dump.js';
import { postgresDatasetSchema, toPostgresDataset, type PlanPostgresDataset, type PostgresDataset } from '../postgres/plan.js';
import {
  dropSafetyDatabase,
  dryRunDescribe,
  inspectDump,
  metaFromManifest,
  preflightPostgres,
  putBackSafetyDatabase,
  restorePostgres,
  safetyName,
  type PgDumpMeta,
} from '../postgres/restore.js';
import type { Move } from '../restore/record.js';
import type { DatasetDriver, DumpPart } from './driver.js';

interface PgPart extends DumpPart {
  ds: PostgresDataset;
  meta: PgDumpMeta;
}

const where = (ds: PostgresDataset) => `postgresql://${ds.pg.host}:${ds.pg.port}/${ds.pg.database}`;

function entryOf(ds: PostgresDataset, d: PlanPostgresDataset, res: DumpResult): ManifestDataset {
  return {
    name: d.name,
    archive: ds.archive,
    kind: 'postgres',
    capture: ds.pg.quiesce ? 'quiesced' : 'engine',
    sources: [where(ds)],
    target: where(ds),
    owner: d.owner,
    entries: 1,
    bytes: res.sizeBytes,
    extra: manifestExtra(res),
  };
}

/** A plain script pg_dump finished writes this last. */
async function plainDumpComplete(file: string): Promise<boolean> {
  const fh = await fsp.open(file, 'r');
  try {
    const { size } = await fh.stat();
    const buf = Buffer.alloc(Math.min(size, 4096));
    await fh.read(buf, 0, buf.length, size - buf.length);
    return buf.toString('latin1').includes('-- PostgreSQL database dump complete');
  } finally {
    await fh.close();
  }
}

export const postgresDriver: DatasetDriver<PlanPostgresDataset, PgPart> = {
  kind: 'postgres',
  schema: postgresDatasetSchema,
  accepts: ['postgres', 'pg_dump'],
  matchByName: true,
  noun: 'dump',
  needsWindow: (d) => d.postgres.quiesce,
  async captureInWindow(d, index, env) {
    const ds = toPostgresDataset(d, index);
    env.progress(`pg_dump of ${ds.name}`);
    return dumpPostgres(ds, path.join(env.tempDir, ds.archive), { signal: env.signal, log: env.log });
  },
  async backup(d, index, env, dumped) {
    const ds = toPostgresDataset(d, index);
    const res =
      (dumped as DumpResult | undefined) ??
      (await env.phase((h) =>
        dumpPostgres(ds, path.join(env.tempDir, ds.archive), {
          signal: env.signal,
          log: env.log,
          onProgress: (p) => h.update({ bytesDone: p.bytesDone, message: p.message }),
        }),
      ));
    return { entry: entryOf(ds, d, res), sha256: res.sha256 };
  },
  async probe(d, index, entry, env) {
    const ds = toPostgresDataset(d, index);
    const file = path.join(env.tempDir, entry.archive);
    const meta = await inspectDump(ds, file, env.signal).catch((err: unknown) => {
      throw new BoxbackError('BOXBACK_ERR_PROBE_FAILED', `${entry.archive} does not read back: ${(err as Error).message}`);
    });
    if (meta.format === 'plain' && !(await plainDumpComplete(file)))
      throw new BoxbackError(
        'BOXBACK_ERR_PROBE_FAILED',
        `${entry.archive} does not end with pg_dump's "dump complete" line: it is cut short`,
      );
    return { result: 'ok', method: meta.format === 'custom' ? 'pg_restore --list' : 'plain script complete' };
  },

  async target(entry, d, index, files) {
    // The plan's connection settings, the backup's file name (the messages name the file restored).
    const ds: PostgresDataset = { ...toPostgresDataset(d, index), archive: entry.archive };
    const archivePath = await files.get(entry.archive);
    const meta = entry.extra ? metaFromManifest(entry.extra, entry.archive) : await inspectDump(ds, archivePath);
    const bytes = entry.bytes ?? meta.sizeBytes ?? 0;
    return {
      kind: 'postgres',
      name: ds.name,
      archive: entry.archive,
      archivePath,
      entries: 1,
      bytes,
      index,
      ds,
      meta,
      capture: entry.capture,
    };
  },
  async preflight(part, _d, env) {
    env.emit({
      phase: 'VERSION_CHECK',
      message: `${part.archive} -> database ${part.ds.pg.database} at ${part.ds.pg.host}:${part.ds.pg.port}`,
    });
    const r = await preflightPostgres(part.ds, part.archivePath, part.meta, { force: env.force, signal: env.signal, log: env.log });
    return r.warnings;
  },
  async apply(part, _d, env) {
    const { pg } = part.ds;
    const move: Move = {
      kind: 'database',
      target: pg.database,
      safety: pg.emptyWith === 'recreate' ? safetyName(pg.database, env.jobId) : null,
      state: 'planned',
      dataset: part.ds.name,
      emptyWith: pg.emptyWith,
    };
    env.rec.moves.push(move);
    await env.save();
    const r = await restorePostgres(part.ds, part.archivePath, part.meta, {
      force: env.force,
      signal: env.signal,
      log: env.log,
      jobId: env.jobId,
      onProgress: env.progress,
    });
    move.safety = r.safetyDatabase;
    move.state = 'done';
    await env.save();
    env.log.info({ dataset: part.name, database: r.database, safety: r.safetyDatabase, durationMs: r.durationMs }, 'database restored');
    return r.warnings;
  },
  async undo(m, d, index, log) {
    const ds = toPostgresDataset(d, index);
    if (m.safety !== null) {
      // Looks first: restorePostgres puts the copy back itself when the load fails.
      if (await putBackSafetyDatabase(ds, m.safety, { log })) log.info({ database: m.target, safety: m.safety }, 'database put back');
      return;
    }
    if (m.state !== 'done') return; // the load failed: its single transaction changed nothing to undo
    if (m.emptyWith === 'clean') {
      throw new Error(
        `database ${m.target} was restored with emptyWith: clean, which keeps no safety copy: it holds the backup's data, not the previous data`,
      );
    }
    // recreate, and there was no database before: remove what the restore created.
    await dropSafetyDatabase(ds, m.target, { log });
  },
  dropSafety: (m, d, index, log) => dropSafetyDatabase(toPostgresDataset(d, index), m.safety!, { log }),
  safetyLabel: (m, d) => `postgresql://${d.postgres.host}:${d.postgres.port}/${m.safety}`,
  dryRun: (part, _d, env) => dryRunDescribe(part.ds, part.meta, { force: env.force, jobId: env.jobId, signal: env.signal }),
};
