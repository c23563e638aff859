/**
 * Secrets of the engine datasets (postgres, h2, mysql): never in the plan, read from a file
 * that only its owner may read (refused otherwise, as libpq refuses a loose ~/.pgpass), and
 * handed to the engine's programs through a temporary 0600 file, never on a command line.
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BoxbackError } from '@boxback/common';

/**
 * Read a password file: a regular file, not readable or writable by group or others
 * (refused otherwise, naming the plan key), whose first line is the password.
 */
export async function readSecretFile(file: string, key: string): Promise<string> {
  let st;
  try {
    st = await fsp.stat(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new BoxbackError(
      'BOXBACK_ERR_PLAN_INVALID',
      `${key}: cannot read ${file}: ${e.code === 'ENOENT' ? 'no such file' : (e.code ?? e.message)}`,
    );
  }
  if (!st.isFile()) throw new BoxbackError('BOXBACK_ERR_PLAN_INVALID', `${key}: ${file} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
    throw new BoxbackError(
      'BOXBACK_ERR_PLAN_INVALID',
      `${key}: ${file} is accessible by group or others (mode ${mode}); refusing to use it: chmod 600 ${file}`,
    );
  }
  const text = await fsp.readFile(file, 'utf8');
  const password = text.split(/\r?\n/)[0];
  if (!password) throw new BoxbackError('BOXBACK_ERR_PLAN_INVALID', `${key}: ${file} is empty (its first line must be the password)`);
  return password;
}

/** Run `body` with a private 0700 directory (for 0600 files holding secrets); removed after, whatever happens. */
export async function withPrivateDir<T>(prefix: string, body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  try {
    await fsp.chmod(dir, 0o700);
    return await body(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
