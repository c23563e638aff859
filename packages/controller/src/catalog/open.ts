/**
 * Open the catalog a controller config names: a SQLite file, or PostgreSQL for a
 * postgres:// URL (password from catalogPasswordFile, mode 0600 or stricter, else PGPASSWORD;
 * never from the URL).
 */
import { readFileSync, statSync } from 'node:fs';
import pg from 'pg';
import { BoxbackError, type Logger } from '@boxback/common';
import type { ControllerConfig } from '../config.js';
import { MIGRATIONS } from './migrations.js';
import { PgCatalog, describePgUrl, pgClientConfig, type PgConnectOptions } from './postgres.js';
import { SqliteCatalog } from './sqlite.js';
import type { Catalog } from './types.js';

type CatalogConfig = Pick<ControllerConfig, 'catalog' | 'catalogKind' | 'catalogPasswordFile'>;

/** Connection settings of a PostgreSQL catalog (reads the password file). */
export function pgOptions(config: CatalogConfig, applicationName?: string): PgConnectOptions {
  let password: string | undefined;
  if (config.catalogPasswordFile) {
    const f = config.catalogPasswordFile;
    let mode = 0;
    try {
      mode = statSync(f).mode;
      password = readFileSync(f, 'utf8').split(/\r?\n/)[0];
    } catch (err) {
      throw new BoxbackError(
        'BOXBACK_ERR_CONFIG_INVALID',
        `catalogPasswordFile: cannot read ${f}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    // libpq's rule for ~/.pgpass, as the agent's postgres datasets have it
    if (mode & 0o077) {
      throw new BoxbackError(
        'BOXBACK_ERR_CONFIG_INVALID',
        `catalogPasswordFile: ${f} is readable by group or others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`,
      );
    }
  }
  return { url: config.catalog, password, applicationName };
}

export async function openCatalog(config: CatalogConfig, log?: Logger): Promise<Catalog> {
  if (config.catalogKind !== 'postgres') return SqliteCatalog.open(config.catalog);
  return PgCatalog.open(pgOptions(config), (err) => log?.warn({ err: err.message }, 'an idle catalog connection failed'));
}

/** --check-config: connect without changing anything and say what is there. */
export async function checkCatalog(config: CatalogConfig): Promise<string> {
  if (config.catalogKind !== 'postgres') return `catalog ${config.catalog} (SQLite)`;
  const where = describePgUrl(config.catalog);
  const c = new pg.Client(pgClientConfig(pgOptions(config, 'boxback-controller check-config')));
  try {
    await c.connect();
    const v = await c.query<{ server_version: string }>('SHOW server_version');
    const t = await c
      .query<{ version: number }>("SELECT version FROM schema_version WHERE to_regclass('schema_version') IS NOT NULL")
      .catch(() => ({ rows: [] as Array<{ version: number }> }));
    const schema = t.rows[0]?.version ?? 0;
    if (schema > MIGRATIONS.length) {
      throw new BoxbackError(
        'BOXBACK_ERR_CATALOG',
        `catalog ${where} has schema version ${schema}, newer than this controller knows (${MIGRATIONS.length}); run a newer boxback-controller`,
      );
    }
    return `catalog ${where}: PostgreSQL ${v.rows[0].server_version}, schema version ${schema} (this controller: ${MIGRATIONS.length})`;
  } catch (err) {
    if (err instanceof BoxbackError) throw err;
    throw new BoxbackError('BOXBACK_ERR_CATALOG', `catalog ${where}: cannot connect: ${(err as Error).message}`, {}, { cause: err });
  } finally {
    await c.end().catch(() => undefined);
  }
}
