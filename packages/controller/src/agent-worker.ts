/**
 * The agents' thread (agent-thread.ts starts it): the controller's channels to its agents, the
 * AgentClients of agent-client.ts, run here so that their TLS handshakes, HTTP/2 sessions and
 * job streams do not take turns of the event loop that answers status calls and serves the
 * dashboard (docs/design/fleet-scale.md). It only relays: each message from the main thread is
 * one call or stream on one host's client, and each answer, event or error goes back as it is.
 */
import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { BoxbackError, type TlsFiles } from '@boxback/common/rpc';
import { AgentClients, type AgentCalls, type AgentTarget } from './agent-client.js';
import type { FromAgents, ToAgents, WireError } from './agent-thread.js';

/** An error as plain data (a BoxbackError keeps its code and details; structured clone would drop them). */
export function errorToWire(err: unknown): WireError {
  if (err instanceof BoxbackError) return { boxback: true, code: err.code, message: err.message, details: plainDetails(err.details) };
  const e = err as (Error & { code?: unknown }) | undefined;
  return {
    boxback: false,
    name: e?.name ?? 'Error',
    message: e?.message ?? String(err),
    ...(typeof e?.code === 'string' || typeof e?.code === 'number' ? { code: e.code } : {}),
  };
}

/** Details that cross a thread: JSON's plain values only. */
function plainDetails(d: Record<string, unknown>): Record<string, unknown> {
  try {
    return JSON.parse(JSON.stringify(d)) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/**
 * Nice levels this thread runs below the controller's main thread: when both want a core, the
 * main thread's status calls and dashboard pages (a person or a monitor waits on them) go first;
 * the channels' handshakes and job streams (agents that wait on a backup of minutes) next.
 */
export const AGENTS_THREAD_NICE = 5;

/** Lower this thread's priority (Linux: a thread's nice is its own; elsewhere, or when refused, nothing changes). */
export function lowerThreadPriority(by: number): number | undefined {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (!Number.isInteger(tid) || tid <= 0) return undefined;
    setPriority(tid, Math.min(19, getPriority(tid) + by));
    return getPriority(tid);
  } catch {
    return undefined;
  }
}

type Method = keyof AgentCalls;
const UNARY = new Set<Method>(['getInfo', 'verifyBackup', 'deleteBackup', 'confirmRestore', 'cancelJob', 'unsentResults', 'ackResults']);
const STREAMS = new Set<Method>(['backup', 'restore']);

function serve(port: NonNullable<typeof parentPort>, tls: TlsFiles): void {
  const nice = Number(process.env.BOXBACK_AGENTS_THREAD_NICE ?? AGENTS_THREAD_NICE);
  if (Number.isInteger(nice) && nice > 0) lowerThreadPriority(nice);
  const clients = new AgentClients(tls);
  const aborts = new Map<number, AbortController>();
  const send = (m: FromAgents) => port.postMessage(m);

  const call = async (id: number, target: AgentTarget, method: Method, args: unknown[]) => {
    try {
      if (!UNARY.has(method)) throw new BoxbackError('BOXBACK_ERR_INTERNAL', `no agent call ${method}`);
      const c = clients.get(target) as unknown as Record<Method, (...a: unknown[]) => Promise<unknown>>;
      send({ t: 'ok', id, value: await c[method](...args) });
    } catch (err) {
      send({ t: 'err', id, error: errorToWire(err) });
    }
  };

  const stream = async (id: number, target: AgentTarget, method: Method, req: unknown) => {
    const abort = new AbortController();
    aborts.set(id, abort);
    try {
      if (!STREAMS.has(method)) throw new BoxbackError('BOXBACK_ERR_INTERNAL', `no agent stream ${method}`);
      const c = clients.get(target) as unknown as Record<Method, (r: unknown, s: AbortSignal) => AsyncGenerator<unknown>>;
      for await (const ev of c[method](req, abort.signal)) send({ t: 'ev', id, ev });
      send({ t: 'end', id });
    } catch (err) {
      send({ t: 'err', id, error: errorToWire(err) });
    } finally {
      aborts.delete(id);
    }
  };

  port.on('message', (m: ToAgents) => {
    switch (m.t) {
      case 'call':
        void call(m.id, m.target, m.method, m.args);
        break;
      case 'stream':
        void stream(m.id, m.target, m.method, m.req);
        break;
      case 'abort':
        aborts.get(m.id)?.abort();
        break;
      case 'close':
        try {
          clients.get(m.target).close();
        } catch {
          /* a target that was never valid has no channel */
        }
        break;
      case 'drop':
        clients.drop(m.name);
        break;
      case 'closeAll':
        for (const a of aborts.values()) a.abort();
        clients.closeAll();
        port.close();
        break;
    }
  });
}

if (parentPort && (workerData as { boxbackAgents?: TlsFiles } | undefined)?.boxbackAgents)
  serve(parentPort, (workerData as { boxbackAgents: TlsFiles }).boxbackAgents);
