/**
 * The fields every dataset of a host plan has, whatever its kind, and the checks the
 * drivers share. Each driver extends `datasetBase` with `kind: <its kind>` and its own block
 * (`postgres:`, `h2:`...); registry.ts joins them into one discriminated union.
 */
import path from 'node:path';
import { z } from 'zod';

export const absPath = z.string().refine((p) => path.isAbsolute(p), 'must be an absolute path');
const owner = z.object({ user: z.string().min(1), group: z.string().min(1) }).strict();

/** Kinds whose dataset carries a block named after the kind. */
export const BLOCK_KINDS = ['postgres', 'h2', 'sqlite', 'mysql'] as const;

export const datasetBase = z.object({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'lower-case letters, digits and -'),
  /** Archive file name in the backup directory (GoCD: db.zip, config-dir.zip...). */
  archive: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'a plain file name'),
  /** A directory: its content becomes the archive's top level; a restore replaces it whole. */
  path: absPath.optional(),
  /** Or single files (env files like /etc/default/go-server): stored by base name, restored one by one. */
  files: z.array(absPath).min(1).optional(),
  owner: owner.optional(),
  excludes: z.array(z.string()).default([]),
  /** Whether the dataset needs the quiesce window (a database file: yes; plugins: no). */
  quiesce: z.boolean().default(true),
  /** Deflate level of its zip: 0 stores (fastest, biggest), 1 (default) is fast, 9 is smallest. */
  compressionLevel: z.number().int().min(0).max(9).optional(),
  // Another kind's block is refused by foreignBlocks (a readable message, not "unrecognized key").
  postgres: z.unknown().optional(),
  h2: z.unknown().optional(),
  sqlite: z.unknown().optional(),
  mysql: z.unknown().optional(),
});

type Issue = { code: 'custom'; path: Array<string | number>; message: string };
type Ctx = { addIssue(i: Issue): void };

/** Blocks of other kinds on this dataset. */
export function foreignBlocks(d: Record<string, unknown>, kind: string, ctx: Ctx): void {
  for (const k of BLOCK_KINDS)
    if (k !== kind && d[k] !== undefined)
      ctx.addIssue({ code: 'custom', path: [k], message: `only a kind: ${k} dataset has a ${k} block` });
}

/** A zip-family dataset: exactly one of path or files. */
export function pathOrFiles(d: { path?: string; files?: string[] }, ctx: Ctx): void {
  if (!!d.path === !!d.files) ctx.addIssue({ code: 'custom', path: [], message: 'give exactly one of path or files' });
}

/** An engine dataset that is not a directory: no path, no files. */
export function noPathNoFiles(d: { path?: string; files?: string[] }, kind: string, how: string, ctx: Ctx): void {
  if (d.path !== undefined) ctx.addIssue({ code: 'custom', path: ['path'], message: `a ${kind} dataset has no path (${how})` });
  if (d.files !== undefined) ctx.addIssue({ code: 'custom', path: ['files'], message: `a ${kind} dataset has no files (${how})` });
}

/** The block a kind needs, with a message that says so when it is missing. */
export function requiredBlock<S extends z.ZodType>(kind: string, schema: S, what: string): S {
  return z
    .unknown()
    .superRefine((v, ctx) => {
      if (v === undefined) ctx.addIssue({ code: 'custom', message: `a kind: ${kind} dataset needs a ${kind} block (${what})` });
    })
    .pipe(schema) as unknown as S;
}
