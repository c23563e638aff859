// A throwaway PostgreSQL cluster for tests: initdb into a temp dir as the `postgres` OS user
// (the server refuses to run as root), a free port on 127.0.0.1, the unix socket in the temp
// dir, pg_ctl start -w; local (socket) connections trust, TCP ones need a password (scram).
// admin() runs SQL as the superuser over the socket; stop() stops and removes everything.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface PgCluster {
  dir: string;
  port: number;
  socketDir: string;
  binDir: string;
  version: number;
  /** Run SQL as the superuser (over the socket); returns psql -At output. */
  admin(sql: string, database?: string): string;
  /** Create a login role with a password (and CREATEDB) and a database it owns. */
  createApp(role: string, password: string, database: string): void;
  stop(): void;
}

export function pgBinDir(): string | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const majors = readdirSync(root)
    .filter((v) => existsSync(path.join(root, v, 'bin', 'initdb')))
    .sort((a, b) => parseFloat(b) - parseFloat(a));
  return majors.length ? path.join(root, majors[0], 'bin') : null;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function ids(user: string): { uid: number; gid: number } {
  return {
    uid: Number(execFileSync('id', ['-u', user]).toString().trim()),
    gid: Number(execFileSync('id', ['-g', user]).toString().trim()),
  };
}

export async function startPgCluster(opts: { settings?: Record<string, string> } = {}): Promise<PgCluster> {
  const binDir = pgBinDir();
  if (!binDir) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-pg-'));
  const data = path.join(dir, 'data');
  const socketDir = path.join(dir, 'sock');
  mkdirSync(socketDir);
  const asRoot = process.getuid?.() === 0;
  const pgUser = asRoot ? ids('postgres') : null;
  if (pgUser) {
    chownSync(dir, pgUser.uid, pgUser.gid);
    chownSync(socketDir, pgUser.uid, pgUser.gid);
  }
  chmodSync(dir, 0o755);
  const as = (argv: string[]) => (asRoot ? ['runuser', '-u', 'postgres', '--', ...argv] : argv);
  const run = (argv: string[]) => {
    const a = as(argv);
    return execFileSync(a[0], a.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C.UTF-8' } }).toString();
  };
  run([
    path.join(binDir, 'initdb'),
    '-D',
    data,
    '-U',
    'postgres',
    '--auth-local=trust',
    '--auth-host=scram-sha-256',
    '-E',
    'UTF8',
    '--locale=C.UTF-8',
    '--no-sync',
  ]);
  const port = await freePort();
  const settings: Record<string, string> = {
    listen_addresses: "'127.0.0.1'",
    port: String(port),
    unix_socket_directories: `'${socketDir}'`,
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    log_min_messages: 'warning',
    ...opts.settings,
  };
  const conf = Object.entries(settings)
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');
  writeFileSync(path.join(data, 'postgresql.auto.conf'), `${conf}\n`);
  if (pgUser) chownSync(path.join(data, 'postgresql.auto.conf'), pgUser.uid, pgUser.gid);
  run([path.join(binDir, 'pg_ctl'), '-D', data, '-l', path.join(dir, 'server.log'), '-w', '-t', '60', 'start']);

  const admin = (sql: string, database = 'postgres') =>
    execFileSync(
      path.join(binDir, 'psql'),
      ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-h', socketDir, '-p', String(port), '-U', 'postgres', '-d', database, '-f', '-'],
      {
        input: sql,
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    )
      .toString()
      .trim();
  const version = Number(admin('show server_version_num;'));
  let stopped = false;
  return {
    dir,
    port,
    socketDir,
    binDir,
    version,
    admin,
    createApp(role, password, database) {
      admin(
        `create role "${role}" login createdb password '${password.replace(/'/g, "''")}';\ncreate database "${database}" owner "${role}";`,
      );
    },
    stop() {
      if (stopped) return;
      stopped = true;
      try {
        run([path.join(binDir, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop']);
      } catch {
        /* already gone */
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A password file for a plan, mode 0600 (or `mode`). */
export function writePasswordFile(dir: string, password: string, mode = 0o600, name = 'pg.password'): string {
  const file = path.join(dir, name);
  writeFileSync(file, `${password}\n`, { mode });
  chmodSync(file, mode);
  return file;
}
