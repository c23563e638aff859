/**
 * SQL through H2's own tools jar (`org.h2.tools.Shell`), the way the h2 driver talks to an
 * H2 database: the running server over its TCP URL, or a throwaway copy opened offline.
 *
 *   1. the Shell's arguments (URL, user, password, statements) go into a 0600 Java argument
 *      file in a private directory: the command line is `java @FILE`, no password on it
 *   2. java runs with the plan's timeout under the job's signal; its output is read whole
 *   3. `Shell -sql` exits 0 even when a statement fails: its output is read, and an
 *      `Error: ...` line is the failure, reported in the engine's own words
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, type ErrorCode } from '@boxback/common';
import { describeFailure, runCommand } from '../run-command.js';
import { withPrivateDir } from './secrets.js';

export interface H2Connection {
  java: string;
  jar: string;
  /** jdbc:h2:tcp://host:port/db or jdbc:h2:file:/dir/db (a throwaway copy) */
  url: string;
  user: string;
  password: string;
}

export interface H2RunOptions {
  timeoutMs: number;
  signal?: AbortSignal;
  /** The error code of a failed statement. */
  code: ErrorCode;
  /** "backing up database cruise" */
  what: string;
}

/** A Java argument file token: quoted, with \ and " escaped. */
const quote = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/** H2's message from the Shell's output: the first `Error:` line without the Java class names. */
export function h2ErrorLine(output: string): string | undefined {
  const lines = output.split('\n');
  // A failed statement: "Error: org.h2...Exception: MESSAGE"; a failed start: "Exception in thread ..." or "Caused by: ...".
  const line =
    lines.find((l) => l.startsWith('Error: ')) ??
    lines.find((l) => /^Exception in thread /.test(l)) ??
    lines.find((l) => /^Caused by: /.test(l));
  if (!line) return undefined;
  return line
    .replace(/^(Error: |Exception in thread "[^"]*" |Caused by: )/, '')
    .replace(/^(?:[a-z0-9_]+\.)+[A-Za-z0-9_$]+(?:Exception|Error): /, '')
    .trim();
}

/** Whether H2's words mean the server is not there (yet): worth another try after a restart. */
export const notListening = (msg: string): boolean => /Connection (is broken|refused)|90067|Connection reset/i.test(msg);

/** Run SQL statements with H2's Shell; returns its output. Throws `code` with H2's message on any failed statement. */
export async function h2Sql(conn: H2Connection, statements: string[], o: H2RunOptions): Promise<string> {
  return withPrivateDir('boxback-h2-', async (dir) => {
    const argfile = path.join(dir, 'args');
    const args = ['-cp', conn.jar, 'org.h2.tools.Shell', '-url', conn.url, '-user', conn.user, '-password', conn.password];
    args.push('-sql', statements.join('; '));
    await fsp.writeFile(argfile, `${args.map(quote).join(' ')}\n`, { mode: 0o600 });
    const argv = [conn.java, `@${argfile}`];
    const r = await runCommand(argv, { timeoutMs: o.timeoutMs, signal: o.signal, tailBytes: 256 * 1024 });
    const shown = [conn.java, '-cp', conn.jar, 'org.h2.tools.Shell', '-url', conn.url.split(';')[0], '...'];
    if (!r.ok) {
      o.signal?.throwIfAborted();
      const msg = h2ErrorLine(r.outputTail);
      const why = msg ? `${o.what}: ${msg}` : describeFailure(o.what, shown, r, o.timeoutMs);
      throw new BoxbackError(r.timedOut ? 'BOXBACK_ERR_TIMEOUT' : o.code, why);
    }
    const msg = h2ErrorLine(r.outputTail);
    if (msg) throw new BoxbackError(o.code, `${o.what}: ${msg}`);
    return r.outputTail;
  });
}
