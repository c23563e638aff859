/**
 * The controller's agents in a thread of their own (docs/design/fleet-scale.md): ThreadAgents
 * has AgentClients' interface (agent-client.ts `Agents`) and runs every call and job stream in
 * agent-worker.ts. At 1000 hosts the channels' work (TLS handshakes of reopened channels, HTTP/2
 * sessions, 50 job streams' frames, the polls) was ~30% of the main thread's busy time in a
 * fleet backup, and each of its turns delayed the status calls and dashboard pages queued
 * behind it. What crosses between the threads is small: a call's arguments, an answer, a job's
 * events. Errors cross as data and are made again: a BoxbackError keeps its code, message and
 * details.
 *
 * A target's address is checked here, at once, as AgentClients does (a bad address throws from
 * `get`). When the worker's file cannot be found (a build without it), or with
 * BOXBACK_AGENTS_THREAD=off in the environment, the agents run in this thread, as before.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { BoxbackError, type AgentInfo, type JobEvent, type JobResult, type TlsFiles, type VerifyBackupResponse } from '@boxback/common';
import { AgentClients, checkTarget, type AgentCalls, type Agents, type AgentTarget } from './agent-client.js';

export type WireError =
  | { boxback: true; code: BoxbackError['code']; message: string; details: Record<string, unknown> }
  | { boxback: false; name: string; message: string; code?: string | number };

type Method = keyof AgentCalls;

/** Main thread -> agents' thread. */
export type ToAgents =
  | { t: 'call'; id: number; target: AgentTarget; method: Method; args: unknown[] }
  | { t: 'stream'; id: number; target: AgentTarget; method: Method; req: unknown }
  | { t: 'abort'; id: number }
  | { t: 'close'; target: AgentTarget }
  | { t: 'drop'; name: string }
  | { t: 'closeAll' };

/** Agents' thread -> main thread. */
export type FromAgents =
  | { t: 'ok'; id: number; value: unknown }
  | { t: 'err'; id: number; error: WireError }
  | { t: 'ev'; id: number; ev: unknown }
  | { t: 'end'; id: number };

export function errorFromWire(e: WireError): Error {
  if (e.boxback) return new BoxbackError(e.code, e.message, e.details);
  const err = new Error(e.message) as Error & { code?: string | number };
  err.name = e.name;
  if (e.code !== undefined) err.code = e.code;
  return err;
}

/** The worker's file: beside this one (dist/), or lib/ beside a bundle (scripts/bundle.mjs). */
function workerFile(): string | undefined {
  for (const rel of ['./agent-worker.js', './lib/agent-worker.mjs']) {
    const f = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(f)) return f;
  }
  return undefined;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  /** A stream's events not yet taken, and the wake-up of the reader waiting for one. */
  events?: unknown[];
  done?: boolean;
  error?: Error;
  wake?: () => void;
}

/** The agents' calls, run in agent-worker.ts. */
export class ThreadAgents implements Agents {
  private worker!: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  private constructor(
    private readonly file: string,
    private readonly tls: TlsFiles,
  ) {
    this.spawn();
  }

  /** The worker; one that stops unasked (a bug in it) fails the calls in flight and is started again. */
  private spawn(): void {
    // its own young generation, smaller than the main thread's: it allocates per event, not per answer
    const w = new Worker(this.file, { workerData: { boxbackAgents: this.tls }, resourceLimits: { maxYoungGenerationSizeMb: 8 } });
    let why: Error | undefined;
    w.on('message', (m: FromAgents) => this.onMessage(m));
    w.on('error', (err) => (why = err));
    w.on('exit', () => {
      const msg = why ? `the controller's agents' thread failed: ${why.message}` : "the controller's agents' thread has stopped";
      this.failAll(new BoxbackError(why ? 'BOXBACK_ERR_INTERNAL' : 'BOXBACK_ERR_UNREACHABLE', msg));
      if (!this.closed) this.spawn();
    });
    w.unref();
    this.worker = w;
  }

  /** Agents in a thread of their own, or in this one when the worker's file is not there. */
  static start(tls: TlsFiles): Agents {
    const file = process.env.BOXBACK_AGENTS_THREAD === 'off' ? undefined : workerFile();
    return file ? new ThreadAgents(file, tls) : new AgentClients(tls);
  }

  private onMessage(m: FromAgents): void {
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.t === 'ok') {
      this.untrack(m.id);
      p.resolve(m.value);
    } else if (m.t === 'ev') {
      p.events!.push(m.ev);
      p.wake?.();
    } else {
      if (m.t === 'err') p.error = errorFromWire(m.error);
      if (p.events) {
        this.untrack(m.id);
        p.done = true;
        p.wake?.();
      } else {
        this.untrack(m.id);
        p.reject(p.error!);
      }
    }
  }

  private failAll(err: Error): void {
    for (const [id, p] of this.pending) {
      this.untrack(id);
      p.error ??= err;
      if (p.events) {
        p.done = true;
        p.wake?.();
      } else p.reject(p.error);
    }
  }

  private post(m: ToAgents): void {
    if (!this.closed) this.worker.postMessage(m);
  }

  /** The worker keeps the process alive while a call or stream waits on it (an unref'd worker would let it exit mid-call), and not otherwise. */
  private track(id: number, p: Pending): void {
    if (this.pending.size === 0) this.worker.ref();
    this.pending.set(id, p);
  }

  private untrack(id: number): void {
    if (this.pending.delete(id) && this.pending.size === 0) this.worker.unref();
  }

  private call<T>(target: AgentTarget, method: Method, args: unknown[]): Promise<T> {
    if (this.closed) return Promise.reject(new BoxbackError('BOXBACK_ERR_UNREACHABLE', 'the controller is shutting down'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.track(id, { resolve: resolve as (v: unknown) => void, reject });
      this.post({ t: 'call', id, target, method, args });
    });
  }

  private async *stream<T>(target: AgentTarget, method: Method, req: unknown, signal?: AbortSignal): AsyncGenerator<T> {
    if (this.closed) throw new BoxbackError('BOXBACK_ERR_UNREACHABLE', 'the controller is shutting down');
    const id = this.nextId++;
    const p: Pending = { resolve: () => undefined, reject: () => undefined, events: [] };
    this.track(id, p);
    const onAbort = () => this.post({ t: 'abort', id });
    signal?.addEventListener('abort', onAbort, { once: true });
    this.post({ t: 'stream', id, target, method, req });
    if (signal?.aborted) onAbort(); // aborted before it started: its listener would never fire
    try {
      for (;;) {
        if (p.events!.length) {
          yield p.events!.shift() as T;
          continue;
        }
        if (p.done) break;
        await new Promise<void>((r) => (p.wake = r));
        p.wake = undefined;
      }
      if (p.error) throw p.error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // a reader that stopped early: the worker's stream is cancelled
      if (!p.done) {
        this.untrack(id);
        this.post({ t: 'abort', id });
      }
    }
  }

  get(target: AgentTarget): AgentCalls {
    checkTarget(target);
    const t = { name: target.name, address: target.address };
    return {
      getInfo: (deadlineMs?: number, newChannelDeadlineMs?: number) =>
        this.call<AgentInfo>(t, 'getInfo', [deadlineMs, newChannelDeadlineMs]),
      backup: (req, signal) => this.stream<JobEvent>(t, 'backup', req, signal),
      restore: (req, signal) => this.stream<JobEvent>(t, 'restore', req, signal),
      verifyBackup: (backupPath) => this.call<VerifyBackupResponse>(t, 'verifyBackup', [backupPath]),
      deleteBackup: (backupPath) => this.call(t, 'deleteBackup', [backupPath]),
      confirmRestore: (jobId) => this.call(t, 'confirmRestore', [jobId]),
      cancelJob: (jobId, requestedBy) => this.call(t, 'cancelJob', [jobId, requestedBy]),
      unsentResults: () => this.call<JobResult[]>(t, 'unsentResults', []),
      ackResults: (jobIds) => this.call(t, 'ackResults', [jobIds]),
      close: () => this.post({ t: 'close', target: t }),
    };
  }

  drop(name: string): void {
    this.post({ t: 'drop', name });
  }

  closeAll(): void {
    this.post({ t: 'closeAll' });
    this.closed = true;
    this.failAll(new BoxbackError('BOXBACK_ERR_UNREACHABLE', 'the controller is shutting down'));
  }
}
