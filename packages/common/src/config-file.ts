/**
 * Reading YAML config files against a zod schema, with errors that name the bad key.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { z } from 'zod';
import { BoxbackError, type ErrorCode } from './errors.js';

/** One line per problem: "key.path: what is wrong". */
export function formatZodIssues(error: z.ZodError): string {
  return error.issues
    .map((i) => {
      const key = i.path.length ? i.path.map(String).join('.') : '(top level)';
      return `${key}: ${i.message}`;
    })
    .join('; ');
}

export function parseWithSchema<S extends z.ZodType>(
  schema: S,
  raw: unknown,
  what: string,
  code: ErrorCode = 'BOXBACK_ERR_CONFIG_INVALID',
): z.output<S> {
  const r = schema.safeParse(raw);
  if (!r.success) throw new BoxbackError(code, `${what}: ${formatZodIssues(r.error)}`);
  return r.data;
}

/** Load a YAML file and validate it. Relative paths in it are the caller's business. */
export function loadYamlFile<S extends z.ZodType>(schema: S, file: string, code: ErrorCode = 'BOXBACK_ERR_CONFIG_INVALID'): z.output<S> {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new BoxbackError(code, `cannot read ${abs}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  }
  let raw: unknown;
  try {
    raw = YAML.parse(text, { prettyErrors: true });
  } catch (err) {
    throw new BoxbackError(code, `${abs} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  return parseWithSchema(schema, raw ?? {}, abs, code);
}

/** Resolve `p` against the directory of `file` unless it is absolute. */
export function resolveFrom(file: string, p: string): string {
  return path.isAbsolute(p) ? p : path.resolve(path.dirname(path.resolve(file)), p);
}
