// What the benches start and must undo: every child process (tracked from spawn to exit)
// and every cleanup step (stop the stand-in server, remove temp dirs), so that SIGINT,
// SIGTERM or the bench's own timeout leaves nothing running and nothing on disk.
//
//   import { run, spawnTracked, onCleanup, guard } from './lib/procs.mjs';
//   guard({ timeoutS: 3600, log });        // once, in the bench's main script
//   const undo = onCleanup(() => box.stop()); ... undo();   // a step undone in reverse order
//   const out = await run('rsync', ['-a', a, b]);            // stdout; throws on a non-zero exit
//
// On a signal or the timeout: SIGTERM to every live child (SIGKILL after 5 s), then the
// cleanup steps newest first, then exit 130 (SIGINT), 143 (SIGTERM) or 124 (timeout).
// Children are spawned asynchronously, so the event loop (and the signal handler) keeps
// running while they do: the bench never blocks in spawnSync.
import { spawn } from 'node:child_process';

const children = new Set();
const steps = [];
let stopping;

/** Spawn and track a child until it exits. */
export function spawnTracked(cmd, argv, opts = {}) {
  if (stopping) throw new Error('the bench is stopping');
  const p = spawn(cmd, argv, opts);
  children.add(p);
  p.once('exit', () => children.delete(p));
  p.once('error', () => children.delete(p));
  return p;
}

/** Track a child spawned elsewhere (the agent daemon's helper). */
export function track(p) {
  children.add(p);
  p.once('exit', () => children.delete(p));
}

/**
 * Run a command to completion without blocking the event loop. Resolves with its stdout
 * (a string); rejects with the tail of its stderr on a non-zero exit.
 */
export function run(cmd, argv, opts = {}) {
  return new Promise((resolve, reject) => {
    let p;
    try {
      p = spawnTracked(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    } catch (err) {
      reject(err);
      return;
    }
    const out = [];
    let err = '';
    p.stdout?.on('data', (d) => out.push(d));
    p.stderr?.on('data', (d) => (err = (err + d).slice(-4000)));
    p.on('error', reject);
    p.on('close', (code, sig) =>
      code === 0 ? resolve(Buffer.concat(out).toString()) : reject(new Error(`${cmd} ${argv.join(' ')} failed (${code ?? sig}): ${err}`)),
    );
  });
}

/** Register a cleanup step (run newest first on exit); returns a function that drops it once done by hand. */
export function onCleanup(fn) {
  steps.push(fn);
  return () => {
    const i = steps.indexOf(fn);
    if (i >= 0) steps.splice(i, 1);
  };
}

/** Stop every live child, then run the cleanup steps; idempotent. */
export function stopEverything(log = () => {}) {
  stopping ??= (async () => {
    const live = [...children].filter((p) => p.exitCode === null && p.signalCode === null);
    if (live.length) log(`stopping ${live.length} child process(es): ${live.map((p) => p.pid).join(', ')}`);
    await Promise.all(
      live.map(
        (p) =>
          new Promise((resolve) => {
            const t = setTimeout(() => {
              try {
                p.kill('SIGKILL');
              } catch {
                /* gone */
              }
            }, 5000);
            p.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            try {
              p.kill('SIGTERM');
            } catch {
              clearTimeout(t);
              resolve();
            }
          }),
      ),
    );
    for (const fn of steps.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        log(`cleanup step failed: ${err.message ?? err}`);
      }
    }
  })();
  return stopping;
}

/** Install the SIGINT/SIGTERM handlers and the timeout (seconds; 0 = none). Call once. */
export function guard({ timeoutS = 0, log = (m) => process.stderr.write(`${m}\n`) } = {}) {
  const die = (why, code) => {
    log(`bench: ${why}; stopping what it started`);
    // A second signal while cleaning up: give up waiting and exit now.
    const again = () => process.exit(code);
    process.once('SIGINT', again);
    process.once('SIGTERM', again);
    void stopEverything(log).then(() => process.exit(code));
  };
  process.once('SIGINT', () => die('interrupted (SIGINT)', 130));
  process.once('SIGTERM', () => die('terminated (SIGTERM)', 143));
  if (timeoutS > 0) setTimeout(() => die(`timed out after ${timeoutS} s`, 124), timeoutS * 1000).unref();
}
