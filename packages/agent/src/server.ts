/**
 * The agent's gRPC server: AgentService over mutual TLS plus grpc.health.v1.
 *
 * Every RPC first passes access.ts: the caller's certificate must be the controller's (or
 * one `allowedClients` names), and a backup it names must be in this host's part of the
 * store (a restore may read the source host the controller names for it).
 * A job RPC (Backup, Restore):
 *   1. take the host lock (busy error if held)
 *   2. run the job with an AbortSignal tied to CancelJob and to shutdown (not to the call:
 *      when the controller goes away the job goes on, docs/design/protocol.md)
 *   3. a backup that published puts its result in the outbox (outbox.ts) first
 *   4. stream progress events, then exactly one result, then end the stream
 * The controller takes what the outbox holds (UnsentResults) and acknowledges it (AckResults).
 * Shutdown (SIGTERM): refuse new jobs, abort running ones (they resume services and
 * clean up), wait for them, then stop the server.
 */
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import {
  BOXBACK_VERSION,
  BoxbackError,
  asBoxbackError,
  emptyResult,
  loadServices,
  serverCredentials,
  toServiceError,
  type AgentInfo,
  type BackupRequest,
  type JobEvent,
  type JobResult,
  type Logger,
  type Progress,
  type RestoreRequest,
} from '@boxback/common';
import { backupRefFor, checkCaller } from './access.js';
import { runBackup } from './backup/backup.js';
import { currentQuiesce } from './backup/quiesce-record.js';
import type { AgentConfig } from './config.js';
import { acquireHostLock } from './host-lock.js';
import { boundHeap, releaseMemorySoon, RESTORE_BUDGETS } from './memory.js';
import { dropSharedBuffers } from './backup/hash-thread.js';
import type { Journals } from './journal/index.js';
import { ProgressTracker, type JobContext } from './job.js';
import { Outbox } from './outbox.js';
import { readInstalledVersion } from './product-version.js';
import { runRestore } from './restore/restore.js';
import { confirmRestore, listSafetyCopies } from './restore/safety-copies.js';
import { agentStore } from './store.js';
import { profiledJob } from './job-profile.js';

interface RunningJob {
  id: string;
  kind: 'backup' | 'restore';
  abort: AbortController;
  tracker: ProgressTracker;
  done: Promise<unknown>;
}

type Handler<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>;

export class AgentServer {
  private server = new grpc.Server();
  private health = new HealthImplementation({ '': 'SERVING', 'boxback.v1.AgentService': 'SERVING' });
  private running: RunningJob | undefined;
  private shuttingDown = false;
  private readonly outbox: Outbox;
  boundPort = 0;

  constructor(
    readonly config: AgentConfig,
    private readonly log: Logger,
    private readonly journals?: Journals,
  ) {
    this.outbox = new Outbox(config.stateDir, log);
    const { AgentService } = loadServices();
    this.server.addService(AgentService.service, {
      GetInfo: this.unary('GetInfo', () => this.getInfo()),
      Backup: (call: grpc.ServerWritableStream<BackupRequest, JobEvent>) => this.jobCall(call, 'backup'),
      Restore: (call: grpc.ServerWritableStream<RestoreRequest, JobEvent>) => this.jobCall(call, 'restore'),
      VerifyBackup: this.unary('VerifyBackup', async (call: grpc.ServerUnaryCall<{ backupPath: string }, unknown>) =>
        agentStore(this.config).verify(backupRefFor(this.config, call.request.backupPath, 'verify')),
      ),
      DeleteBackup: this.unary('DeleteBackup', async (call: grpc.ServerUnaryCall<{ backupPath: string }, unknown>) => {
        const ref = backupRefFor(this.config, call.request.backupPath, 'delete');
        const r = await agentStore(this.config).delete(ref);
        this.log.info({ backupPath: call.request.backupPath, ...r }, 'backup deleted');
        return r;
      }),
      ConfirmRestore: this.unary('ConfirmRestore', async (call: grpc.ServerUnaryCall<{ jobId: string }, unknown>) =>
        confirmRestore(this.config, call.request.jobId, this.log),
      ),
      CancelJob: this.unary('CancelJob', async (call: grpc.ServerUnaryCall<{ jobId: string; requestedBy: string }, unknown>) =>
        this.cancelJob(call.request.jobId, call.request.requestedBy),
      ),
      UnsentResults: this.unary('UnsentResults', async () => ({ results: await this.outbox.list() })),
      AckResults: this.unary('AckResults', async (call: grpc.ServerUnaryCall<{ jobIds: string[] }, unknown>) => {
        const removed = await this.outbox.ack(call.request.jobIds ?? []);
        if (removed) this.log.info({ jobIds: call.request.jobIds, removed }, 'outbox: results acknowledged');
        return { removed };
      }),
    });
    this.health.addToServer(this.server);
  }

  /** Wrap a unary handler: client check, errors to gRPC status. */
  private unary<Req, Res>(name: string, fn: Handler<Req, Res>) {
    return (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => {
      Promise.resolve()
        .then(() => this.checkClient(call))
        .then(() => fn(call))
        .then((res) => cb(null, res))
        .catch((err: unknown) => {
          const be = asBoxbackError(err);
          this.log.warn({ rpc: name, code: be.code, err: be.message }, 'rpc failed');
          cb(toServiceError(be) as grpc.ServiceError);
        });
    };
  }

  /** Only the controller's certificate (or one `allowedClients` names) may call. */
  private checkClient(call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>): void {
    checkCaller(this.config, call.getAuthContext());
  }

  /**
   * Cancel the running job if it is `jobId`: its signal aborts with BOXBACK_ERR_CANCELLED, and
   * the job's own paths do the rest (a backup resumes the services and removes its temporary
   * directory; a restore rolls back). Answers at once; the job's stream carries the outcome.
   */
  private cancelJob(jobId: string, by: string): { cancelling: boolean; runningJobId: string } {
    const job = this.running;
    if (!job || job.id !== jobId) return { cancelling: false, runningJobId: job?.id ?? '' };
    this.log.warn({ jobId, by }, 'cancel requested');
    job.abort.abort(new BoxbackError('BOXBACK_ERR_CANCELLED', `cancelled by ${by || 'the controller'}`));
    return { cancelling: true, runningJobId: job.id };
  }

  private async getInfo(): Promise<AgentInfo> {
    const q = currentQuiesce();
    const copies = await listSafetyCopies(this.config).catch(() => []);
    return {
      name: this.config.name,
      agentVersion: BOXBACK_VERSION,
      hostname: this.config.hostname,
      addresses: this.config.addresses,
      planName: this.config.plan.name,
      product: this.config.plan.product,
      productVersion: (await readInstalledVersion(this.config.plan)) ?? '',
      runningJobId: this.running?.id ?? '',
      runningJobKind: this.running?.kind ?? '',
      runningProgress: this.running?.tracker.last ?? null,
      safetyCopies: copies,
      quiesced: !!q,
      quiesceDeadlineMs: q?.deadlineMs ?? 0,
      unsentResults: await this.outbox.count().catch(() => 0),
    };
  }

  private async jobCall(
    call: grpc.ServerWritableStream<BackupRequest | RestoreRequest, JobEvent>,
    kind: 'backup' | 'restore',
  ): Promise<void> {
    const req = call.request;
    const jobId = req.jobId || `${kind}-${Date.now().toString(36)}`;
    const log = this.log.child({ jobId, kind });
    const fail = (err: unknown) => {
      const be = asBoxbackError(err);
      log.warn({ code: be.code, err: be.message }, `${kind} refused`);
      // emit, not destroy: a destroyed stream never sends its status and the caller would hang.
      call.emit('error', Object.assign(new Error(be.message), toServiceError(be)));
    };
    try {
      this.checkClient(call);
      if (kind === 'restore') {
        const r = req as RestoreRequest;
        backupRefFor(this.config, r.backupPath, 'restore', r.sourceHost);
      }
      if (this.shuttingDown) throw new BoxbackError('BOXBACK_ERR_SHUTTING_DOWN', `agent ${this.config.name} is shutting down`);
      if (this.running) {
        throw new BoxbackError(
          'BOXBACK_ERR_BUSY',
          `${this.config.name} is busy with ${this.running.kind} job ${this.running.id}; wait for it to finish`,
        );
      }
    } catch (err) {
      fail(err);
      return;
    }
    let lock;
    try {
      lock = await acquireHostLock(this.config.name, this.config.stateDir);
    } catch (err) {
      fail(err);
      return;
    }
    const abort = new AbortController();
    // The controller went away (killed, restarted, the connection dropped): the job goes on. Its
    // services are resumed as always; a backup it publishes waits in the outbox. CancelJob cancels.
    const onCancel = () => log.warn(`the controller went away; the ${kind} goes on (\`boxback job cancel\` stops it)`);
    call.on('cancelled', onCancel);
    const send = (ev: JobEvent) => {
      if (!call.cancelled && !call.writableEnded) call.write(ev);
    };
    const tracker = new ProgressTracker(jobId, (p: Progress) => send({ progress: p }));
    const ctx: JobContext = {
      config: this.config,
      log,
      jobId,
      signal: abort.signal,
      journals: this.journals,
      emit: (u) => tracker.emit(u),
    };
    let resolveDone!: () => void;
    const done = new Promise<void>((r) => (resolveDone = r));
    this.running = { id: jobId, kind, abort, tracker, done };
    log.info({ req }, `${kind} started`);
    // A restore writes no archive: the shared buffers kept for the next backup's would sit
    // under its peak (docs/design/agent-memory.md). One GC frees them before it starts.
    if (kind === 'restore' && dropSharedBuffers() > 0) (globalThis as { gc?: () => void }).gc?.();
    let result: JobResult;
    try {
      result = await boundHeap(
        log,
        () =>
          profiledJob(jobId, log, () =>
            kind === 'backup' ? runBackup(ctx, req as BackupRequest) : runRestore(ctx, req as RestoreRequest),
          ),
        kind === 'restore' ? RESTORE_BUDGETS : {},
      );
    } catch (err) {
      const be = asBoxbackError(err);
      log.error({ err }, `${kind} crashed`);
      result = { ...emptyResult(jobId), errorCode: be.code, errorMessage: be.message };
    } finally {
      this.running = undefined;
      call.off('cancelled', onCancel);
      await lock.release();
      resolveDone();
    }
    log.info(
      { status: result.status, errorCode: result.errorCode, error: result.errorMessage, durationMs: result.durationMs },
      `${kind} finished`,
    );
    // The job's garbage (tens of MiB) would otherwise stay until V8's next GC, maybe never while idle.
    releaseMemorySoon(log, `${kind} finished`);
    if (kind === 'backup' && result.backupPath) {
      // before the stream: if the result never reaches the controller, the outbox still has it
      await this.outbox.put(result).catch((err: unknown) => log.error({ err }, 'outbox: keeping the result failed'));
    }
    if (call.cancelled) log.warn({ backupId: result.backupId || undefined }, 'the controller is gone: the result waits in the outbox');
    send({ result });
    if (!call.writableEnded) call.end();
  }

  async listen(): Promise<number> {
    const creds = serverCredentials(this.config.tls, true);
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(this.config.listen, creds, (err, port) => (err ? reject(err) : resolve(port))),
    );
    return this.boundPort;
  }

  /** Stop taking jobs, cancel the running one and wait for it to clean up, then close. */
  async shutdown(graceMs = 30_000): Promise<void> {
    this.shuttingDown = true;
    this.health.setStatus('', 'NOT_SERVING');
    const job = this.running;
    if (job) {
      this.log.warn({ jobId: job.id }, 'shutting down: cancelling the running job');
      job.abort.abort(new BoxbackError('BOXBACK_ERR_SHUTTING_DOWN', 'the agent is shutting down'));
      await Promise.race([job.done, new Promise((r) => setTimeout(r, graceMs))]);
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 5000);
      this.server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
