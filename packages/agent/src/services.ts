/**
 * Stopping and starting a plan's services, and making sure a stopped service is really
 * dead: systemd units through systemctl, or start/stop commands with a pid file and/or a
 * process pattern checked against /proc. Used by quiesce (backup) and by restore.
 */
import { promises as fsp } from 'node:fs';
import { BoxbackError, type Logger } from '@boxback/common';
import type { PlanService } from './plan.js';
import { describeFailure, runCommand } from './run-command.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function pidFromFile(file: string): Promise<number | undefined> {
  try {
    const n = Number.parseInt((await fsp.readFile(file, 'utf8')).trim(), 10);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie is dead for our purposes.
  return true;
}

async function isZombie(pid: number): Promise<boolean> {
  try {
    const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** Pids whose command line matches `pattern` (never our own). */
export async function findProcesses(pattern: string): Promise<number[]> {
  const re = new RegExp(pattern);
  const out: number[] = [];
  for (const name of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    try {
      const cmdline = (await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8')).replace(/\0/g, ' ').trim();
      if (cmdline && re.test(cmdline) && !(await isZombie(pid))) out.push(pid);
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** Pids of the service that are still alive (empty: really stopped). */
export async function livePids(svc: PlanService): Promise<number[]> {
  const pids = new Set<number>();
  if (svc.pidFile) {
    const pid = await pidFromFile(svc.pidFile);
    if (pid && pidAlive(pid) && !(await isZombie(pid))) pids.add(pid);
  }
  if (svc.processMatch) for (const p of await findProcesses(svc.processMatch)) pids.add(p);
  return [...pids];
}

export async function isRunning(svc: PlanService): Promise<boolean> {
  if (svc.systemd) {
    const r = await runCommand(['systemctl', 'is-active', '--quiet', svc.systemd], { timeoutMs: 10_000 });
    if (r.ok) return true;
  }
  return (await livePids(svc)).length > 0;
}

/**
 * Poll `cond` until it holds or the timeout passes: 5 ms after the first try, doubling up to
 * 100 ms (a service is usually gone or up within tens of milliseconds of its command, and the
 * window lasts as long as this wait).
 */
async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (let delay = 5; ; delay = Math.min(100, delay * 2)) {
    if (await cond()) return true;
    if (Date.now() >= end) return false;
    await sleep(delay);
  }
}

/** Stop one service and wait until its processes are gone; throws if they are not. */
export async function stopService(svc: PlanService, log: Logger): Promise<void> {
  const timeoutMs = svc.stopTimeoutSeconds * 1000;
  const argv = svc.systemd ? ['systemctl', 'stop', svc.systemd] : svc.stop!;
  log.info({ service: svc.name }, 'stopping service');
  const r = await runCommand(argv, { timeoutMs });
  if (!r.ok) throw new BoxbackError('BOXBACK_ERR_QUIESCE_FAILED', describeFailure(`stopping ${svc.name}`, argv, r, timeoutMs));
  const dead = await waitUntil(async () => !(await isRunning(svc)), timeoutMs);
  if (!dead) {
    const pids = await livePids(svc);
    throw new BoxbackError(
      'BOXBACK_ERR_SERVICES_RUNNING',
      `${svc.name} is still running ${Math.round(timeoutMs / 1000)}s after stop${pids.length ? ` (pid ${pids.join(', ')})` : ''}; stop it by hand and retry`,
    );
  }
}

/** Start one service and wait until it is seen running. */
export async function startService(svc: PlanService, log: Logger): Promise<void> {
  const timeoutMs = svc.startTimeoutSeconds * 1000;
  const argv = svc.systemd ? ['systemctl', 'start', svc.systemd] : svc.start!;
  log.info({ service: svc.name }, 'starting service');
  const r = await runCommand(argv, { timeoutMs });
  if (!r.ok) throw new BoxbackError('BOXBACK_ERR_RESUME_FAILED', describeFailure(`starting ${svc.name}`, argv, r, timeoutMs));
  if (svc.systemd || svc.pidFile || svc.processMatch) {
    const up = await waitUntil(() => isRunning(svc), timeoutMs);
    if (!up)
      throw new BoxbackError(
        'BOXBACK_ERR_RESUME_FAILED',
        `${svc.name} did not come up within ${Math.round(timeoutMs / 1000)}s of its start command`,
      );
  }
}

/** Stop services in reverse plan order. On failure, restarts the ones already stopped, then throws. */
export async function stopServices(services: PlanService[], log: Logger): Promise<void> {
  const stopped: PlanService[] = [];
  try {
    for (const svc of [...services].reverse()) {
      await stopService(svc, log);
      stopped.push(svc);
    }
  } catch (err) {
    await startServices(stopped.reverse(), log).catch((e) => log.error({ err: e }, 'restarting services after a failed stop also failed'));
    throw err;
  }
}

/**
 * Start services in plan order. Tries every service even when one fails, skips those
 * already running, and throws the first error at the end.
 */
export async function startServices(services: PlanService[], log: Logger): Promise<void> {
  let first: unknown;
  for (const svc of services) {
    try {
      if (await isRunning(svc)) continue;
      await startService(svc, log);
    } catch (err) {
      log.error({ err, service: svc.name }, 'service did not start');
      first ??= err;
    }
  }
  if (first) throw first;
}
