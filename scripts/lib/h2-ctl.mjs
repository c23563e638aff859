#!/usr/bin/env node
// Start or stop a real H2 TCP server (Debian's libh2-java) as a box's database service, the
// way a plan's command-managed service is: `start` launches it in the background, writes its
// pid file and returns once the port accepts connections; `stop` ends it and waits until
// the process is gone. Used by the quick start's sample box and by tests.
//
//   node h2-ctl.mjs start BASEDIR PORT PIDFILE [LOGFILE]
//   node h2-ctl.mjs stop PIDFILE
import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';

export const H2_JAR = process.env.BOXBACK_H2_JAR || '/usr/share/java/h2.jar';
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
  const args = ['-cp', H2_JAR, 'org.h2.tools.Server', '-tcp', '-tcpPort', String(port), '-baseDir', baseDir, '-ifNotExists'];
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
