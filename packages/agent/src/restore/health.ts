/**
 * Step HEALTH_CHECK: poll the plan's health check (an HTTP URL answering one of the
 * expected statuses, or a command exiting 0) every intervalSeconds until it passes or the
 * deadline (timeoutSeconds) passes; then BOXBACK_ERR_HEALTH_CHECK_FAILED with the first
 * and the last failing attempt's output (the first is often the cause, the last may only be
 * cut short by the deadline). No health check in the plan: the services being up is all we can check.
 */
import { BoxbackError, asBoxbackError } from '@boxback/common';
import type { JobContext } from '../job.js';
import type { PlanHealth } from '../plan.js';
import { describeFailure, runCommand } from '../run-command.js';

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });

async function probe(h: PlanHealth, remainingMs: number, signal?: AbortSignal): Promise<string | null> {
  const perTry = Math.max(500, Math.min(remainingMs, 10_000));
  if (h.http) {
    try {
      const res = await fetch(h.http.url, {
        method: h.http.method ?? 'GET',
        headers: h.http.headers,
        body: h.http.body,
        signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(perTry)]) : AbortSignal.timeout(perTry),
      });
      await res.arrayBuffer().catch(() => undefined);
      const want = h.http.expectStatus ?? [200];
      return want.includes(res.status) ? null : `${h.http.url} answered ${res.status}`;
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      return `${h.http.url}: ${cause ?? (err as Error).message}`;
    }
  }
  const r = await runCommand(h.command!, { timeoutMs: perTry, signal });
  return r.ok ? null : describeFailure('health command', h.command!, r, perTry);
}

export async function checkHealth(ctx: JobContext, phase = 'HEALTH_CHECK'): Promise<void> {
  const h = ctx.config.plan.health;
  if (!h) {
    ctx.emit({ phase, state: 'skipped', message: 'the plan has no health check' });
    return;
  }
  const what = h.http ? h.http.url : h.command!.join(' ');
  const deadline = Date.now() + h.timeoutSeconds * 1000;
  ctx.emit({ phase, state: 'started', message: what });
  let tries = 0;
  let last: string | null = 'not checked';
  let first: string | null = null;
  while (!ctx.signal.aborted) {
    tries++;
    last = await probe(h, deadline - Date.now(), ctx.signal);
    first ??= last;
    if (last === null) {
      ctx.emit({ phase, state: 'done', filesDone: tries, message: `${what} healthy after ${tries} tries` });
      return;
    }
    if (Date.now() + h.intervalSeconds * 1000 > deadline) break;
    ctx.emit({ phase, filesDone: tries, message: last });
    await sleep(h.intervalSeconds * 1000, ctx.signal);
  }
  if (ctx.signal.aborted) throw asBoxbackError(ctx.signal.reason, 'BOXBACK_ERR_CANCELLED');
  // The first failure is often the real cause; the last one may only be cut short by the deadline.
  const why = first && first !== last && tries > 1 ? `first try: ${first}; last try: ${last}` : `${last}`;
  throw new BoxbackError('BOXBACK_ERR_HEALTH_CHECK_FAILED', `not healthy within ${h.timeoutSeconds}s (${tries} tries): ${why}`, {
    first,
    last,
  });
}
