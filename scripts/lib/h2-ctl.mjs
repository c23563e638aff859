#!/usr/bin/env node
// Start or stop a real H2 TCP server (Debian's libh2-java) as a box's database service, the
// way a plan's command-managed service is: `start` launches it in the background, writes its
// pid file and returns once the port accepts connections; `stop` ends it and waits until
// the process is gone. Used by the quick start's sample box and by tests.
//
//   node h2-ctl.mjs start BASEDIR PORT PIDFILE [LOGFILE]
//   node h2-ctl.mjs stop PIDFILE
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';

export const H2_JAR = process.env.BOXBACK_H2_JAR || '/usr/share/java/h2.jar';
/**
 * JVM options of every java this file starts (the server, the Shell queries, the writer):
 * C1 only, the serial GC, no perf-data file. A small demo or test database needs neither C2's
 * compiler threads nor parallel GC threads: with them the server burned 7.2 CPU-s under the
 * writer's 15 s load (3.2 s with these), and a query on a 6000-row copy 1.12 CPU-s (0.91), on
 * a 2-core box shared by the test files. BOXBACK_H2_JAVA_OPTS replaces them ("" for none).
 * The agent's own java runs (kind: h2) are the plan's and do not use these.
 */
export const H2_JAVA_OPTS = (process.env.BOXBACK_H2_JAVA_OPTS ?? '-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:-UsePerfData')
  .split(' ')
  .filter(Boolean);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const listening = (port) =>
  new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

/** Start an H2 TCP server for BASEDIR on PORT; resolves with its pid once it listens. */
export async function startH2(baseDir, port, pidFile, logFile = `${pidFile}.log`) {
  const out = openSync(logFile, 'a');
  const args = [
    ...H2_JAVA_OPTS,
    '-cp',
    H2_JAR,
    'org.h2.tools.Server',
    '-tcp',
    '-tcpPort',
    String(port),
    '-baseDir',
    baseDir,
    '-ifNotExists',
  ];
  const child = spawn('java', args, { detached: true, stdio: ['ignore', out, out] });
  child.unref();
  writeFileSync(pidFile, `${child.pid}\n`);
  for (let i = 0; i < 300; i++) {
    if (await listening(port)) return child.pid;
    if (!alive(child.pid)) break;
    await sleep(100);
  }
  throw new Error(`H2 did not start on port ${port}: ${readFileSync(logFile, 'utf8').slice(-500)}`);
}

/** Stop the server of PIDFILE and wait until it is gone. */
export async function stopH2(pidFile) {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (pid && alive(pid)) {
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 200 && alive(pid); i++) await sleep(50);
    if (alive(pid)) process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 100 && alive(pid); i++) await sleep(50);
  }
  rmSync(pidFile, { force: true });
}

/** Run SQL with H2's Shell (demo and tests: the password, empty here, is on the command line); throws on an `Error:` line. */
export function h2Query(url, sql) {
  const out = execFileSync(
    'java',
    [...H2_JAVA_OPTS, '-cp', H2_JAR, 'org.h2.tools.Shell', '-url', url, '-user', 'sa', '-password', '', '-sql', sql],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const err = out.split('\n').find((l) => l.startsWith('Error: '));
  if (err) throw new Error(err);
  return out;
}

/** The demo's tables: numbered builds, and a counter committed with each row. */
export const H2_SCHEMA =
  'CREATE TABLE IF NOT EXISTS builds(id INT PRIMARY KEY, payload VARCHAR, gen INT); CREATE TABLE IF NOT EXISTS counter(k INT PRIMARY KEY, last INT); MERGE INTO counter VALUES (1, 0)';

/**
 * Rows 1..K, no gap, counter = K? Reads `url` (a server, or jdbc:h2:file:DIR/cruise). The rows
 * are counted by a scan of the key (`WHERE id >= 0`), not by a bare COUNT(*): H2's MVStore
 * answers that from the table's size field, which in a copy holding another session's
 * uncommitted change (an online BACKUP TO taken mid-transaction) can be one off while every
 * row is there (h2database issue 2080; seen once in CI: COUNT(*) 3000, MAX(id) 3001).
 */
export function h2Prefix(url) {
  const out = h2Query(
    url,
    "SELECT 'P', (SELECT COUNT(*) FROM builds WHERE id >= 0), COALESCE(MAX(id),0), COALESCE(MIN(id),0), (SELECT last FROM counter WHERE k = 1) FROM builds",
  );
  const m = /^P\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(-?\d+)/m.exec(out);
  if (!m) throw new Error(`unexpected H2 output: ${out}`);
  const p = { rows: +m[1], max: +m[2], min: +m[3], counter: +m[4] };
  return { ...p, consistent: p.rows === p.max && p.counter === p.max && (p.rows === 0 || p.min === 1) };
}

/**
 * A writer: a Shell session fed on stdin, row n and counter = n in one transaction, and after
 * every row an update that rewrites an older row with a larger payload (pages move in the file).
 * When the server goes away (a stop-mode backup's window, a restore) it reconnects and goes on
 * from the committed counter, so there is never a gap. stop() resolves with the next row number.
 */
export function startH2Writer(url, from = 1) {
  let n = from;
  let running = true;
  let sh;
  // Paced (a few hundred rows a second), so a writer does not take a whole core of a small machine.
  const pump = () => {
    for (let batch = 0; batch < 5 && running && sh.exitCode === null; batch++) {
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
    if (running && sh.exitCode === null) setTimeout(pump, 10);
  };
  const reconnect = () => {
    if (!running) return;
    execFile(
      'java',
      [
        ...H2_JAVA_OPTS,
        '-cp',
        H2_JAR,
        'org.h2.tools.Shell',
        '-url',
        url,
        '-user',
        'sa',
        '-password',
        '',
        '-sql',
        'SELECT last FROM counter WHERE k = 1',
      ],
      (err, out) => {
        const last = /^LAST\s*\n\s*(\d+)/m.exec(out ?? '');
        if (err || !last) return void setTimeout(reconnect, 500);
        n = Number(last[1]) + 1;
        connect();
      },
    );
  };
  const connect = () => {
    sh = spawn('java', [...H2_JAVA_OPTS, '-cp', H2_JAR, 'org.h2.tools.Shell', '-url', url, '-user', 'sa', '-password', ''], {
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    sh.stdin.on('error', () => undefined);
    // The interactive Shell stays up on a broken connection: any error ends this session.
    const self = sh;
    self.stdout.on('data', (b) => {
      if (/Error: /.test(b.toString())) self.kill('SIGKILL');
    });
    sh.once('exit', () => setTimeout(reconnect, 300));
    sh.stdin.write('SET AUTOCOMMIT FALSE;\n');
    pump();
  };
  connect();
  return {
    async stop() {
      running = false;
      sh.stdin.end();
      await new Promise((r) => (sh.exitCode !== null ? r(null) : sh.once('exit', r)));
      return n;
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [cmd, ...a] = process.argv.slice(2);
  try {
    if (cmd === 'start') await startH2(a[0], Number(a[1]), a[2], a[3]);
    else if (cmd === 'stop') await stopH2(a[0]);
    else throw new Error('usage: h2-ctl.mjs start BASEDIR PORT PIDFILE [LOGFILE] | stop PIDFILE');
  } catch (err) {
    console.error(`h2-ctl: ${err.message}`);
    process.exit(1);
  }
}
