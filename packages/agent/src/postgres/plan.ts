/**
 * The `postgres:` block of a `kind: postgres` dataset (issue 8): where the database is,
 * who to connect as, how to dump it and how to restore it. Validated with errors that
 * name the bad key as `datasets.N.postgres.KEY`, like the rest of the host plan.
 *
 *   datasets:
 *     - name: database
 *       kind: postgres
 *       archive: db.gocd                # GoCD's name for a pg_dump file: db.<database>
 *       postgres:
 *         host: 127.0.0.1               # or an absolute unix-socket directory
 *         port: 5432
 *         database: gocd
 *         user: gocd
 *         passwordFile: /etc/boxback/gocd-db.password   # mode 0600 (0400); the password only
 *         format: custom                # or plain (an SQL script restored with psql)
 *         ownerRole: gocd               # restored objects belong to this role (default: user)
 *         emptyWith: recreate           # or clean (pg_restore --clean --if-exists)
 *         sslmode: prefer
 *         extraArgs: [--exclude-table-data=public.build_logs]   # allow-listed pg_dump options
 *         quiesce: false                # pg_dump takes a snapshot: no need for the window
 *
 * The password is never in the plan: it is read from `passwordFile` (refused when the file
 * is readable by group or others, as libpq refuses a loose ~/.pgpass) and handed to the
 * PostgreSQL programs through a temporary 0600 PGPASSFILE, never on a command line.
 */
import { z } from 'zod';
import { BoxbackError } from '@boxback/common';
import { readSecretFile } from '../datasets/secrets.js';
import { absPath, datasetBase, foreignBlocks, noPathNoFiles, requiredBlock } from '../datasets/base.js';

/** Database and role names: plain identifiers (the archive name db.<database> must be a plain file name). */
const pgName = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$/, 'letters, digits, _ . - (at most 63)');

/** pg_dump options a plan may add. Nothing that changes where, what format or as whom. */
export const ALLOWED_FLAGS = new Set([
  '--no-comments',
  '--no-publications',
  '--no-subscriptions',
  '--no-security-labels',
  '--no-tablespaces',
  '--no-privileges',
  '--no-acl',
  '--no-unlogged-table-data',
  '--no-toast-compression',
  '--no-blobs',
  '--quote-all-identifiers',
  '--load-via-partition-root',
  '--enable-row-security',
  '--serializable-deferrable',
]);
/** Options that take a value, given as one item: `--name=value`. */
export const ALLOWED_VALUED = new Set([
  '--schema',
  '--exclude-schema',
  '--table',
  '--exclude-table',
  '--exclude-table-data',
  '--compress',
  '--lock-wait-timeout',
  '--extra-float-digits',
]);

const extraArg = z.string().superRefine((a, ctx) => {
  const eq = a.indexOf('=');
  const name = eq < 0 ? a : a.slice(0, eq);
  if (eq < 0 && ALLOWED_FLAGS.has(name)) return;
  if (eq > 0 && ALLOWED_VALUED.has(name) && a.length > eq + 1) return;
  const hint = ALLOWED_VALUED.has(name) ? ` (give it as ${name}=VALUE, one item)` : '';
  ctx.addIssue({
    code: 'custom',
    message: `${JSON.stringify(a)} is not an allowed pg_dump option${hint}; allowed: ${[...ALLOWED_FLAGS, ...[...ALLOWED_VALUED].map((v) => `${v}=…`)].join(' ')}`,
  });
});

export const postgresSchema = z
  .object({
    /** Host name or address, or an absolute unix-socket directory. */
    host: z
      .union([absPath, z.string().regex(/^[A-Za-z0-9][A-Za-z0-9.:_-]*$/, 'a host name, an address or an absolute socket directory')])
      .default('localhost'),
    port: z.number().int().min(1).max(65535).default(5432),
    database: pgName,
    user: pgName,
    /** A file holding only the password (first line). Mode must be 0600 or stricter. */
    passwordFile: absPath.optional(),
    format: z.enum(['custom', 'plain']).default('custom'),
    /** Role that owns the restored objects (and the recreated database). Default: user. */
    ownerRole: pgName.optional(),
    /**
     * How a restore empties the database first. recreate: the current database is renamed
     * aside as a safety copy and a new empty one is created (needs CREATEDB). clean:
     * pg_restore --clean --if-exists in one transaction (objects not in the dump stay).
     */
    emptyWith: z.enum(['recreate', 'clean']).default('recreate'),
    /** Database to connect to for CREATE/ALTER/DROP DATABASE (recreate). */
    maintenanceDatabase: pgName.default('postgres'),
    sslmode: z.enum(['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']).optional(),
    /** Allow-listed pg_dump options (ALLOWED_FLAGS, ALLOWED_VALUED). */
    extraArgs: z.array(extraArg).default([]),
    /** Dump inside the quiesce window (default no: pg_dump takes its own consistent snapshot). */
    quiesce: z.boolean().default(false),
    /** Directory of pg_dump, pg_restore and psql (default: the newest /usr/lib/postgresql/N/bin, else PATH). */
    binDir: absPath.optional(),
    /** Limit for the dump and for the restore, each. */
    timeoutSeconds: z
      .number()
      .positive()
      .max(7 * 86_400)
      .default(6 * 3600),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.emptyWith === 'recreate' && p.maintenanceDatabase === p.database) {
      ctx.addIssue({
        code: 'custom',
        path: ['maintenanceDatabase'],
        message: `must differ from database (${p.database}): a database cannot be renamed from a session connected to it`,
      });
    }
    if (p.format === 'plain' && p.extraArgs.some((a) => a.startsWith('--compress'))) {
      ctx.addIssue({ code: 'custom', path: ['extraArgs'], message: '--compress applies to the custom format only' });
    }
  });

export type PostgresConfig = z.output<typeof postgresSchema>;

/** A validated postgres dataset: the plan's dataset fields the engines need, and its block. */
export interface PostgresDataset {
  /** Index in the plan's datasets (for error keys). */
  index: number;
  name: string;
  /** db.<database> */
  archive: string;
  pg: PostgresConfig & { ownerRole: string };
}

export const archiveNameFor = (database: string): string => `db.${database}`;

/** The plan's member of the dataset union for kind: postgres (datasets/postgres.ts). */
export const postgresDatasetSchema = datasetBase
  .extend({
    kind: z.literal('postgres'),
    postgres: requiredBlock('postgres', postgresSchema, 'host, port, database, user, passwordFile...'),
  })
  .strict()
  .superRefine((d, ctx) => {
    noPathNoFiles(d, 'postgres', 'it is dumped with pg_dump', ctx);
    foreignBlocks(d, 'postgres', ctx);
    const want = d.postgres ? archiveNameFor(d.postgres.database) : undefined;
    if (want && d.archive !== want)
      ctx.addIssue({
        code: 'custom',
        path: ['archive'],
        message: `must be ${want} for a postgres dataset (GoCD's name for a pg_dump of database ${d.postgres.database})`,
      });
  });

export type PlanPostgresDataset = z.output<typeof postgresDatasetSchema>;

/** The engines' view of a plan dataset the plan schema already validated (no second parse). */
export function toPostgresDataset(d: PlanPostgresDataset, index: number): PostgresDataset {
  return { index, name: d.name, archive: d.archive, pg: { ...d.postgres, ownerRole: d.postgres.ownerRole ?? d.postgres.user } };
}

/**
 * Validate one raw dataset as a postgres dataset (tools and tests; the host plan validates
 * its datasets itself); throws BOXBACK_ERR_PLAN_INVALID naming each bad key as datasets.N.KEY.
 */
export function parsePostgresDataset(dataset: Record<string, unknown> & { name: string; kind?: string }, index = 0): PostgresDataset {
  if (dataset.kind !== 'postgres')
    throw new BoxbackError(
      'BOXBACK_ERR_PLAN_INVALID',
      `dataset ${dataset.name}: datasets.${index}.kind: ${dataset.name} is a ${dataset.kind ?? 'zip'} dataset, not postgres`,
    );
  const r = postgresDatasetSchema.safeParse(dataset);
  if (!r.success) {
    const problems = r.error.issues.map((i) => `${['datasets', index, ...i.path.map(String)].join('.')}: ${i.message}`);
    throw new BoxbackError('BOXBACK_ERR_PLAN_INVALID', `dataset ${dataset.name}: ${problems.join('; ')}`, { problems });
  }
  return toPostgresDataset(r.data, index);
}

/** The dataset's password file (0600), or undefined when it names none (datasets/secrets.ts). */
export async function readPasswordFile(ds: PostgresDataset): Promise<string | undefined> {
  return ds.pg.passwordFile ? readSecretFile(ds.pg.passwordFile, `datasets.${ds.index}.postgres.passwordFile`) : undefined;
}
