/**
 * The controller's side of AgentService: one mutual-TLS channel per host (rebuilt when the
 * host's address changes), unary calls with deadlines, Backup/Restore as async iterators of
 * JobEvents. Every failure comes back as a BoxbackError that names the host and its address
 * ("agent gocd1 at 10.0.0.5:7444 did not answer: ...").
 *
 * Open channels are bounded (docs/design/fleet-scale.md): an open mutual-TLS HTTP/2
 * connection costs the controller ~200 KB (OpenSSL and nghttp2 buffers, grpc-js state), 1000
 * of them most of a 250 MB budget. At most `maxOpen` channels stay open; opening one more
 * closes the least recently used channel that has no call in flight (its host's next call
 * opens it again: a new handshake). A fleet up to `maxOpen` hosts never reconnects. A larger
 * fleet keeps at most `largeFleetOpen` idle channels: the monitor polls the hosts round the
 * fleet, and a least-recently-used set smaller than the round never holds the next host polled
 * (every poll is a new handshake anyway), so 256 idle channels were ~45 MB held for nothing.
 * Every channel shares ONE credentials object, so one TLS secure context (CA, key, certificate),
 * and a reopened channel resumes its host's last TLS session (tls-resumption.ts).
 */
import { isIPv4, isIPv6 } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import {
  BoxbackError,
  channelOptions,
  loadServices,
  serverStream,
  unary,
  type AgentInfo,
  type BackupRequest,
  type JobEvent,
  type JobResult,
  type RestoreRequest,
  type TlsFiles,
  type VerifyBackupResponse,
} from '@boxback/common/rpc';
import { tidyError } from './grpc-errors.js';
import { resumingClientCredentials, TlsSessions } from './tls-resumption.js';

const tidy = <T>(p: Promise<T>): Promise<T> => p.catch((err) => Promise.reject(tidyError(err)));

async function* tidyStream<T>(g: AsyncGenerator<T>): AsyncGenerator<T> {
  try {
    yield* g;
  } catch (err) {
    throw tidyError(err);
  }
}

export interface AgentTarget {
  name: string;
  address: string;
}

/** What an AgentClient needs from its pool: a channel on demand, told when it is used. */
interface ChannelPool {
  open(c: AgentClient): grpc.Client;
  used(c: AgentClient): void;
}

export class AgentClient {
  /** The open channel ('undefined': closed, opened again by the next call). */
  channel?: grpc.Client;
  /** Calls in flight (a channel with calls in flight is never closed to make room). */
  inFlight = 0;

  constructor(
    readonly target: AgentTarget,
    private readonly pool: ChannelPool,
  ) {}

  private get what(): string {
    return `agent ${this.target.name} at ${this.target.address}`;
  }

  /** The channel for one call: counted in flight until `done`. */
  private begin(): grpc.Client {
    // A channel whose last connect failed (the agent was down) waits out a reconnect backoff and
    // fails every call at once meanwhile: an agent restarted since would look down. Start afresh.
    const old = this.channel;
    if (old && this.inFlight === 0 && old.getChannel().getConnectivityState(false) === grpc.connectivityState.TRANSIENT_FAILURE) {
      old.close();
      this.channel = undefined;
    }
    const ch = this.pool.open(this);
    this.inFlight++;
    return ch;
  }

  private done = (): void => {
    this.inFlight--;
    this.pool.used(this);
  };

  private call<T>(fn: (ch: grpc.Client) => Promise<T>): Promise<T> {
    return tidy(fn(this.begin())).finally(this.done);
  }

  private async *stream<T>(fn: (ch: grpc.Client) => AsyncGenerator<T>): AsyncGenerator<T> {
    const ch = this.begin();
    try {
      yield* tidyStream(fn(ch));
    } finally {
      this.done();
    }
  }

  /**
   * The agent's info. `newChannelDeadlineMs`: the deadline when the channel is closed now (a new
   * TLS handshake first, which a loaded controller may take seconds for).
   */
  getInfo(deadlineMs = 5_000, newChannelDeadlineMs = deadlineMs): Promise<AgentInfo> {
    const d = this.channel ? deadlineMs : Math.max(deadlineMs, newChannelDeadlineMs);
    return this.call((ch) => unary<object, AgentInfo>(ch, 'GetInfo', {}, { deadlineMs: d, what: this.what }));
  }

  backup(req: BackupRequest, signal?: AbortSignal): AsyncGenerator<JobEvent> {
    return this.stream((ch) => serverStream<BackupRequest, JobEvent>(ch, 'Backup', req, { what: this.what, signal }));
  }

  restore(req: RestoreRequest, signal?: AbortSignal): AsyncGenerator<JobEvent> {
    return this.stream((ch) => serverStream<RestoreRequest, JobEvent>(ch, 'Restore', req, { what: this.what, signal }));
  }

  verifyBackup(backupPath: string): Promise<VerifyBackupResponse> {
    return this.call((ch) => unary(ch, 'VerifyBackup', { backupPath }, { deadlineMs: 6 * 3600_000, what: this.what }));
  }

  deleteBackup(backupPath: string): Promise<{ deleted: boolean; freedBytes: number }> {
    return this.call((ch) => unary(ch, 'DeleteBackup', { backupPath }, { deadlineMs: 3600_000, what: this.what }));
  }

  confirmRestore(jobId: string): Promise<{ removed: number; freedBytes: number }> {
    return this.call((ch) => unary(ch, 'ConfirmRestore', { jobId }, { deadlineMs: 3600_000, what: this.what }));
  }

  /** Ask the agent to cancel its running job `jobId` (false when it runs another job or none). */
  cancelJob(jobId: string, requestedBy: string): Promise<{ cancelling: boolean; runningJobId: string }> {
    return this.call((ch) => unary(ch, 'CancelJob', { jobId, requestedBy }, { deadlineMs: 10_000, what: this.what }));
  }

  /** Backup results the agent published and the controller has not acknowledged (its outbox). */
  async unsentResults(): Promise<JobResult[]> {
    const r = await this.call((ch) =>
      unary<object, { results: JobResult[] }>(ch, 'UnsentResults', {}, { deadlineMs: 30_000, what: this.what }),
    );
    return r.results ?? [];
  }

  /** The catalog holds these jobs' results: the agent drops them from its outbox. */
  ackResults(jobIds: string[]): Promise<{ removed: number }> {
    return this.call((ch) => unary(ch, 'AckResults', { jobIds }, { deadlineMs: 10_000, what: this.what }));
  }

  /** Close the channel (a call made later opens a new one). */
  close(): void {
    this.channel?.close();
    this.channel = undefined;
  }
}

/**
 * The gRPC target of an agent's address: an IP literal through grpc-js' IP resolver
 * (`ipv4:`/`ipv6:`), a name through its DNS resolver. That one makes a c-ares channel per gRPC
 * channel even for an IP (`new dns.Resolver()`), and past 256 hosts every backup and poll opens a
 * channel: 0.8 s of a 1000-host fleet backup's profile.
 */
export function channelTarget(address: string): string {
  const v6 = /^\[(.*)\]:\d+$/.exec(address)?.[1];
  if (v6 !== undefined) return isIPv6(v6) ? `ipv6:${address}` : address;
  return isIPv4(address.replace(/:\d+$/, '')) ? `ipv4:${address}` : address;
}

/** Open channels kept at most (each ~200 KB in the controller); see the module comment. */
export const MAX_OPEN_AGENT_CHANNELS = 256;
/** Idle channels kept open when the fleet has more hosts than MAX_OPEN_AGENT_CHANNELS. */
export const LARGE_FLEET_IDLE_CHANNELS = 32;

/** What the controller calls on one agent (AgentClient, or its proxy in agent-thread.ts). */
export type AgentCalls = Pick<
  AgentClient,
  | 'getInfo'
  | 'backup'
  | 'restore'
  | 'verifyBackup'
  | 'deleteBackup'
  | 'confirmRestore'
  | 'cancelJob'
  | 'unsentResults'
  | 'ackResults'
  | 'close'
>;

/** The controller's agents: AgentClients in this thread, or ThreadAgents (agent-thread.ts). */
export interface Agents {
  get(target: AgentTarget): AgentCalls;
  /** Forget a host's channel (host removed). */
  drop(name: string): void;
  closeAll(): void;
}

/** A target the controller can call, else the error a person can act on. */
export function checkTarget(target: AgentTarget): void {
  if (!target.address) {
    // registered by a store scan (store-scan.ts): the controller cannot know where its agent runs
    throw new BoxbackError(
      'BOXBACK_ERR_UNREACHABLE',
      `host ${target.name} has no agent address (found in the store): \`boxback hosts set ${target.name} --address HOST:PORT\``,
    );
  }
  if (!/^[^\s]+:\d{1,5}$/.test(target.address)) {
    throw new BoxbackError(
      'BOXBACK_ERR_INVALID_ARGUMENT',
      `host ${target.name} has a bad agent address "${target.address}": want host:port`,
    );
  }
}

/** Channels to every agent, keyed by host name and address; at most `maxOpen` open at once. */
export class AgentClients implements ChannelPool, Agents {
  private readonly clients = new Map<string, AgentClient>();
  /** The clients whose channel is open, least recently used first (a Map keeps insertion order). */
  private readonly openOrder = new Map<AgentClient, true>();
  private creds?: grpc.ChannelCredentials;
  /** Channels opened and closed to make room so far (the fleet bench and tests read them). */
  readonly counts = { opened: 0, closedForRoom: 0 };
  /** Each host's newest TLS session, offered when its channel is opened again. */
  readonly sessions = new TlsSessions();

  constructor(
    private readonly tls: TlsFiles,
    readonly maxOpen = MAX_OPEN_AGENT_CHANNELS,
    readonly largeFleetOpen = LARGE_FLEET_IDLE_CHANNELS,
  ) {}

  /** Whether the host's channel is open now (a call to a closed one waits for a new handshake too). */
  isOpen(target: AgentTarget): boolean {
    return Boolean(this.clients.get(`${target.name}\u0000${target.address}`)?.channel);
  }

  /** How many channels are open now. */
  get openChannels(): number {
    return this.openOrder.size;
  }

  open(c: AgentClient): grpc.Client {
    if (c.channel) {
      // the most recently used now (not trimmed: its call is about to start)
      this.openOrder.delete(c);
      this.openOrder.set(c, true);
      return c.channel;
    }
    this.trim(true);
    this.creds ??= resumingClientCredentials(this.tls, this.sessions);
    const { AgentService } = loadServices();
    c.channel = new AgentService(channelTarget(c.target.address), this.creds, {
      ...channelOptions(c.target.name),
      // its own subchannel: closing the channel closes its connection at once
      'grpc.use_local_subchannel_pool': 1,
    });
    this.counts.opened++;
    this.openOrder.set(c, true);
    return c.channel;
  }

  /** A call on `c` ended: it becomes the most recently used; channels over the bound are closed. */
  used(c: AgentClient): void {
    if (!c.channel) return;
    this.openOrder.delete(c);
    this.openOrder.set(c, true);
    this.trim(false);
  }

  /**
   * Close least recently used channels with no call in flight until the bound holds (with room
   * for one more when `opening`): at most `maxOpen` open, and once the fleet is larger than
   * that at most `largeFleetOpen` idle. All busy: go over the bound; calls are never cut.
   */
  private trim(opening: boolean): void {
    const large = this.clients.size > this.maxOpen;
    let idle = 0;
    if (large) for (const c of this.openOrder.keys()) if (c.inFlight === 0) idle++;
    const over = () => (large && idle > this.largeFleetOpen) || this.openOrder.size + (opening ? 1 : 0) > this.maxOpen;
    for (const c of this.openOrder.keys()) {
      if (!over()) return;
      if (c.inFlight > 0) continue;
      this.openOrder.delete(c);
      c.close();
      idle--;
      this.counts.closedForRoom++;
    }
  }

  private forget(c: AgentClient): void {
    this.openOrder.delete(c);
    c.close();
  }

  get(target: AgentTarget): AgentClient {
    const key = `${target.name}\u0000${target.address}`;
    let c = this.clients.get(key);
    if (!c) {
      for (const [k, old] of this.clients) {
        if (k.startsWith(`${target.name}\u0000`)) {
          this.forget(old);
          this.clients.delete(k);
        }
      }
      checkTarget(target);
      c = new AgentClient({ name: target.name, address: target.address }, this);
      this.clients.set(key, c);
    }
    return c;
  }

  /** Forget a host's channel (host removed). */
  drop(name: string): void {
    for (const [k, c] of this.clients) {
      if (k.startsWith(`${name}\u0000`)) {
        this.forget(c);
        this.clients.delete(k);
      }
    }
  }

  closeAll(): void {
    for (const c of this.clients.values()) this.forget(c);
    this.clients.clear();
  }
}
