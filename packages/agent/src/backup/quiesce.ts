/**
 * Quiescing the product and resuming it, by the plan's mode:
 *
 *   stop         stop every service that is running (reverse plan order) and wait until its
 *                processes are really gone; resume = start those again, in plan order (a
 *                service that was already down before the backup stays down).
 *   maintenance  call the plan's `enter` action (HTTP request or command) that puts the
 *                product in maintenance mode; resume = call `exit`.
 *   none         nothing (a live backup).
 *
 * Then, still inside the window, the plan's `quiesce.inWindow` commands (a checkpoint, a
 * flush). These functions do not hold the lease: the caller (backup.ts) takes the lease
 * (quiesce-record.ts) first and releases it on every path.
 */
import { BoxbackError, type Logger, type QuiesceMode } from '@boxback/common';
import type { Plan, PlanAction } from '../plan.js';
import { describeFailure, runCommand } from '../run-command.js';
import { isRunning, startServices, stopServices } from '../services.js';

/** Run an HTTP or command action; throws BOXBACK_ERR_QUIESCE_FAILED (or _RESUME_FAILED) on failure. */
export async function runAction(
  action: PlanAction,
  what: string,
  code: 'BOXBACK_ERR_QUIESCE_FAILED' | 'BOXBACK_ERR_RESUME_FAILED',
  signal?: AbortSignal,
): Promise<void> {
  const timeoutMs = action.timeoutSeconds * 1000;
  if (action.command) {
    const r = await runCommand(action.command, { timeoutMs, signal });
    if (!r.ok) throw new BoxbackError(r.timedOut ? 'BOXBACK_ERR_TIMEOUT' : code, describeFailure(what, action.command, r, timeoutMs));
    return;
  }
  const h = action.http!;
  const timeout = AbortSignal.timeout(timeoutMs);
  const sig = signal ? AbortSignal.any([signal, timeout]) : timeout;
  let status: number;
  try {
    const res = await fetch(h.url, { method: h.method, headers: h.headers, body: h.body, signal: sig });
    status = res.status;
    await res.arrayBuffer().catch(() => undefined);
  } catch (err) {
    const why = timeout.aborted
      ? `timed out after ${action.timeoutSeconds}s`
      : (err as Error).cause
        ? String(((err as Error).cause as Error).message ?? (err as Error).cause)
        : (err as Error).message;
    throw new BoxbackError(timeout.aborted ? 'BOXBACK_ERR_TIMEOUT' : code, `${what} (${h.method} ${h.url}) failed: ${why}`);
  }
  if (!h.expectStatus.includes(status)) {
    throw new BoxbackError(code, `${what} (${h.method} ${h.url}) answered HTTP ${status}, expected ${h.expectStatus.join(' or ')}`);
  }
}

/** Names of the plan's services running now: only these are stopped and later started again. */
export async function runningServices(plan: Plan): Promise<string[]> {
  const out: string[] = [];
  for (const svc of plan.services) if (await isRunning(svc)) out.push(svc.name);
  return out;
}

/** The plan's services named in `names` (all of them when `names` is undefined). */
export function pickServices(plan: Plan, names?: string[]): Plan['services'] {
  return names ? plan.services.filter((s) => names.includes(s.name)) : plan.services;
}

/** Put the product in a consistent, quiet state. On failure nothing is left half-quiesced by this call's own doing; the caller still resumes. */
export async function enterQuiesce(plan: Plan, mode: QuiesceMode, log: Logger, signal?: AbortSignal, services?: string[]): Promise<void> {
  if (mode === 'stop') {
    await stopServices(pickServices(plan, services), log);
  } else if (mode === 'maintenance') {
    log.info('entering maintenance mode');
    await runAction(plan.quiesce.enter!, 'entering maintenance mode', 'BOXBACK_ERR_QUIESCE_FAILED', signal);
  }
}

/** Bring the product back. Idempotent: starting a running service or leaving maintenance twice is harmless. */
export async function exitQuiesce(plan: Plan, mode: QuiesceMode, log: Logger, services?: string[]): Promise<void> {
  if (mode === 'stop') {
    await startServices(pickServices(plan, services), log);
  } else if (mode === 'maintenance') {
    log.info('leaving maintenance mode');
    await runAction(plan.quiesce.exit!, 'leaving maintenance mode', 'BOXBACK_ERR_RESUME_FAILED');
  }
}

/** The plan's in-window commands (checkpoint, flush), in order; a failing one with onError fail throws. */
export async function runInWindow(plan: Plan, log: Logger, signal: AbortSignal, warnings: string[]): Promise<void> {
  for (const step of plan.quiesce.inWindow) {
    const timeoutMs = step.timeoutSeconds * 1000;
    const r = await runCommand(step.command, { timeoutMs, env: step.env, signal });
    if (r.ok) continue;
    if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new BoxbackError('BOXBACK_ERR_CANCELLED', 'cancelled');
    const msg = describeFailure('in-window command', step.command, r, timeoutMs);
    if (step.onError === 'continue') {
      log.warn({ msg }, 'in-window command failed; continuing');
      warnings.push(msg);
    } else {
      throw new BoxbackError(r.timedOut ? 'BOXBACK_ERR_TIMEOUT' : 'BOXBACK_ERR_QUIESCE_FAILED', msg);
    }
  }
}
