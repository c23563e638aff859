#!/usr/bin/env node
// Start or stop the stand-in server as a detached daemon, the way an init script would.
//   standin-ctl.mjs start --root DIR --db FILE --config FILE --pid FILE --port N --log FILE
//   standin-ctl.mjs stop --pid FILE
// start returns once the server has written its pid file; stop returns once it is gone.
import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const [cmd, ...rest] = process.argv.slice(2);
const { values } = parseArgs({
  args: rest,
  options: {
    root: { type: 'string' },
    db: { type: 'string' },
    config: { type: 'string' },
    pid: { type: 'string' },
    port: { type: 'string' },
    log: { type: 'string' },
  },
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// A zombie (exited, not yet reaped by init) counts as gone: some inits reap late.
const alive = (pid) => {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
};
const readPid = () => {
  try {
    return Number.parseInt(readFileSync(values.pid, 'utf8'), 10) || 0;
  } catch {
    return 0;
  }
};

if (cmd === 'start') {
  const old = readPid();
  if (old && alive(old)) process.exit(0);
  const out = openSync(values.log, 'a');
  const child = spawn(
    process.execPath,
    [
      path.join(here, 'standin-server.mjs'),
      '--root',
      values.root,
      '--db',
      values.db,
      '--config',
      values.config,
      '--pid',
      values.pid,
      '--port',
      values.port,
    ],
    { detached: true, stdio: ['ignore', out, out] },
  );
  child.unref();
  // Node's own start-up: about 0.1 s, but several seconds on a loaded 2-core box.
  for (const until = Date.now() + 20_000; Date.now() < until;) {
    if (readPid() === child.pid) process.exit(0);
    await sleep(10);
  }
  console.error(`stand-in server did not write ${values.pid}`);
  process.exit(1);
} else if (cmd === 'stop') {
  const pid = readPid();
  if (!pid || !alive(pid)) process.exit(0);
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 1000; i++) {
    if (!alive(pid)) process.exit(0);
    await sleep(10);
  }
  console.error(`stand-in server ${pid} did not stop`);
  process.exit(1);
} else {
  console.error('usage: standin-ctl.mjs start|stop ...');
  process.exit(2);
}
