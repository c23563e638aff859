/**
 * A real H2 engine for tests, from the quick start's own helpers (scripts/lib/h2-ctl.mjs): a
 * TCP server as a plan service, SQL through H2's Shell, a writer that commits numbered rows
 * (each with a counter row in the same transaction) while rewriting old ones, and a check that
 * a copy opened offline by H2 holds a consistent prefix: rows 1..K, no gap, counter = K.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { H2_JAR, H2_SCHEMA, h2Prefix, h2Query, startH2Writer } from '../../scripts/lib/h2-ctl.mjs';

export { H2_JAR };
export const H2_CTL = path.resolve(__dirname, '../../scripts/lib/h2-ctl.mjs');
export const h2 = h2Query;
export const SCHEMA = H2_SCHEMA;
export const startWriter = startH2Writer;

/** Unzip `zip` into a throwaway directory, open `<db>.mv.db` there with H2, read its prefix. */
export function readZipPrefix(zip: string, db = 'cruise') {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-h2-open-'));
  try {
    execFileSync('unzip', ['-q', zip, '-d', dir]);
    return h2Prefix(`jdbc:h2:file:${path.join(dir, db)};IFEXISTS=TRUE`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
