/**
 * The controller's side of AgentService: one mutual-TLS channel per host (cached, rebuilt
 * when the host's address changes), unary calls with deadlines, Backup/Restore as async
 * iterators of JobEvents. Every failure comes back as a BoxbackError that names the host
 * and its address ("agent gocd1 at 10.0.0.5:7444 did not answer: ...").
 */
import * as grpc from '@grpc/grpc-js';
import {
  BoxbackError,
  channelOptions,
  loadServices,
  mutualClientCredentials,
  serverStream,
  unary,
  type AgentInfo,
  type BackupRequest,
  type JobEvent,
  type RestoreRequest,
  type TlsFiles,
  type VerifyBackupResponse,
} from '@boxback/common';
import { tidyError } from './grpc-errors.js';

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

export class AgentClient {
  constructor(
    readonly target: AgentTarget,
    private readonly client: grpc.Client,
  ) {}

  private get what(): string {
    return `agent ${this.target.name} at ${this.target.address}`;
  }

  getInfo(deadlineMs = 5_000): Promise<AgentInfo> {
    return tidy(unary<object, AgentInfo>(this.client, 'GetInfo', {}, { deadlineMs, what: this.what }));
  }

  backup(req: BackupRequest, signal?: AbortSignal): AsyncGenerator<JobEvent> {
    return tidyStream(serverStream<BackupRequest, JobEvent>(this.client, 'Backup', req, { what: this.what, signal }));
  }

  restore(req: RestoreRequest, signal?: AbortSignal): AsyncGenerator<JobEvent> {
    return tidyStream(serverStream<RestoreRequest, JobEvent>(this.client, 'Restore', req, { what: this.what, signal }));
  }

  verifyBackup(backupPath: string): Promise<VerifyBackupResponse> {
    return tidy(unary(this.client, 'VerifyBackup', { backupPath }, { deadlineMs: 6 * 3600_000, what: this.what }));
  }

  deleteBackup(backupPath: string): Promise<{ deleted: boolean; freedBytes: number }> {
    return tidy(unary(this.client, 'DeleteBackup', { backupPath }, { deadlineMs: 3600_000, what: this.what }));
  }

  confirmRestore(jobId: string): Promise<{ removed: number; freedBytes: number }> {
    return tidy(unary(this.client, 'ConfirmRestore', { jobId }, { deadlineMs: 3600_000, what: this.what }));
  }

  /** Ask the agent to cancel its running job `jobId` (false when it runs another job or none). */
  cancelJob(jobId: string, requestedBy: string): Promise<{ cancelling: boolean; runningJobId: string }> {
    return tidy(unary(this.client, 'CancelJob', { jobId, requestedBy }, { deadlineMs: 10_000, what: this.what }));
  }

  close(): void {
    this.client.close();
  }
}

/** Channels to every agent, keyed by host name and address. */
export class AgentClients {
  private readonly clients = new Map<string, AgentClient>();
  private creds?: grpc.ChannelCredentials;

  constructor(private readonly tls: TlsFiles) {}

  get(target: AgentTarget): AgentClient {
    const key = `${target.name}\u0000${target.address}`;
    let c = this.clients.get(key);
    if (!c) {
      for (const [k, old] of this.clients) {
        if (k.startsWith(`${target.name}\u0000`)) {
          old.close();
          this.clients.delete(k);
        }
      }
      if (!/^[^\s]+:\d{1,5}$/.test(target.address)) {
        throw new BoxbackError(
          'BOXBACK_ERR_INVALID_ARGUMENT',
          `host ${target.name} has a bad agent address "${target.address}": want host:port`,
        );
      }
      this.creds ??= mutualClientCredentials(this.tls);
      const { AgentService } = loadServices();
      const client = new AgentService(target.address, this.creds, channelOptions(target.name));
      c = new AgentClient({ ...target }, client);
      this.clients.set(key, c);
    }
    return c;
  }

  /** Forget a host's channel (host removed). */
  drop(name: string): void {
    for (const [k, c] of this.clients) {
      if (k.startsWith(`${name}\u0000`)) {
        c.close();
        this.clients.delete(k);
      }
    }
  }

  closeAll(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
