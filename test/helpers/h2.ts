/**
 * A real H2 engine for tests: a TCP server as a plan service (scripts/lib/h2-ctl.mjs), SQL
 * through H2's own Shell, a writer that commits numbered rows (each with a counter row in
 * the same transaction) while another stream of updates rewrites old rows, and a check that
 * a copy opened offline by H2 holds a consistent prefix: rows 1..K, no gap, counter = K.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const H2_JAR = '/usr/share/java/h2.jar';
export const H2_CTL = path.resolve(__dirname, '../../scripts/lib/h2-ctl.mjs');

/** Run SQL with H2's Shell (tests only: the password is on the command line); throws on an `Error:` line. */
export function h2(url: string, sql: string): string {
  const out = execFileSync('java', ['-cp', H2_JAR, 'org.h2.tools.Shell', '-url', url, '-user', 'sa', '-password', '', '-sql', sql], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const err = out.split('\n').find((l) => l.startsWith('Error: '));
  if (err) throw new Error(err);
  return out;
}

export const SCHEMA =
  'CREATE TABLE IF NOT EXISTS builds(id INT PRIMARY KEY, payload VARCHAR, gen INT); CREATE TABLE IF NOT EXISTS counter(k INT PRIMARY KEY, last INT); MERGE INTO counter VALUES (1, 0)';

export interface Writer {
  /** Stop writing; resolves with the number of rows sent. */
  stop(): Promise<number>;
}

/**
 * One Shell session fed on stdin: row n and counter = n in one transaction, and after every
 * row an update that rewrites an older row with a larger payload (pages move in the file).
 */
export function startWriter(url: string, from = 1): Writer {
  const sh = spawn('java', ['-cp', H2_JAR, 'org.h2.tools.Shell', '-url', url, '-user', 'sa', '-password', ''], {
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  let n = from;
  let running = true;
  sh.stdin.write('SET AUTOCOMMIT FALSE;\n');
  const pump = () => {
    while (running) {
      const old = 1 + ((n * 7919) % Math.max(1, n - 1));
      const stmt =
        `INSERT INTO builds VALUES (${n}, REPEAT('r${n}-', 40), 0); UPDATE counter SET last = ${n} WHERE k = 1; COMMIT;\n` +
        `UPDATE builds SET payload = REPEAT('w${n}-', ${50 + (n % 200)}), gen = gen + 1 WHERE id = ${old}; COMMIT;\n`;
      n++;
      if (!sh.stdin.write(stmt)) {
        sh.stdin.once('drain', pump);
        return;
      }
    }
  };
  pump();
  return {
    async stop() {
      running = false;
      sh.stdin.end();
      await new Promise((r) => (sh.exitCode !== null ? r(null) : sh.once('exit', r)));
      return n - from;
    },
  };
}

export interface Prefix {
  rows: number;
  max: number;
  min: number;
  counter: number;
}

/** Open the database file `dir/<db>.mv.db` offline (a throwaway copy) and read the invariants. */
export function readPrefix(dir: string, db = 'cruise'): Prefix {
  const out = h2(
    `jdbc:h2:file:${path.join(dir, db)};IFEXISTS=TRUE`,
    "SELECT 'P', COUNT(*), COALESCE(MAX(id),0), COALESCE(MIN(id),0), (SELECT last FROM counter WHERE k = 1) FROM builds",
  );
  const m = /^P\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)/m.exec(out);
  if (!m) throw new Error(`unexpected H2 output: ${out}`);
  return { rows: +m[1], max: +m[2], min: +m[3], counter: +m[4] };
}

/** Unzip `zip` into a temporary directory, read its prefix, remove the directory. */
export function readZipPrefix(zip: string, db = 'cruise'): Prefix {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-h2-open-'));
  try {
    execFileSync('unzip', ['-q', zip, '-d', dir]);
    return readPrefix(dir, db);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
