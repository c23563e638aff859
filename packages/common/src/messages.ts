/**
 * TypeScript shapes of the proto messages as @grpc/proto-loader delivers them
 * (camelCase fields, int64 as number, defaults filled in). Keep in step with proto/.
 */
import * as grpc from '@grpc/grpc-js';
import { fromServiceError } from './errors.js';

export type JobStatus = 'Queued' | 'Running' | 'Completed' | 'PartiallyFailed' | 'Failed' | 'RolledBack';
/** `stopped`: ended because another phase failed while it ran (the other lane of a backup); `failed` names the one that failed. */
export type PhaseState = 'started' | 'running' | 'done' | 'failed' | 'skipped' | 'stopped';

export interface Progress {
  jobId: string;
  phase: string;
  state: PhaseState | string;
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesTotal: number;
  rateBytesPerSec: number;
  etaSeconds: number;
  message: string;
  atMs: number;
}

export interface JobResult {
  jobId: string;
  status: JobStatus | string;
  backupId: string;
  backupPath: string;
  errorCode: string;
  errorMessage: string;
  failedStep: string;
  warnings: string[];
  sizeBytes: number;
  durationMs: number;
  manifestJson: string;
  dryRunReport: string;
}

export interface JobEvent {
  progress?: Progress | null;
  result?: JobResult | null;
  event?: 'progress' | 'result';
}

export interface SafetyCopyInfo {
  jobId: string;
  backupId: string;
  createdAtMs: number;
  sizeBytes: number;
  paths: string[];
}

export interface AgentInfo {
  name: string;
  agentVersion: string;
  hostname: string;
  addresses: string[];
  planName: string;
  product: string;
  productVersion: string;
  runningJobId: string;
  runningProgress?: Progress | null;
  safetyCopies: SafetyCopyInfo[];
  quiesced: boolean;
  quiesceDeadlineMs: number;
  runningJobKind: string;
  /** Backup results in the agent's outbox the controller has not acknowledged (0 from an older agent). */
  unsentResults?: number;
}

export interface BackupRequest {
  jobId: string;
  live: boolean;
  initiatedBy: string;
  initiatedVia: string;
}

export interface RestoreRequest {
  jobId: string;
  backupPath: string;
  dryRun: boolean;
  force: boolean;
  backupId: string;
  /** The host whose backup this restore reads when it is not the agent's own (a restore onto another box, a drill). */
  sourceHost?: string;
}

export interface VerifyBackupResponse {
  ok: boolean;
  filesChecked: number;
  bytesChecked: number;
  problems: string[];
  durationMs: number;
  /** Zip entries CRC-checked (verifyBackupDeep). */
  zipEntriesChecked?: number;
}

export function emptyProgress(jobId: string, phase: string): Progress {
  return {
    jobId,
    phase,
    state: 'started',
    bytesDone: 0,
    bytesTotal: 0,
    filesDone: 0,
    filesTotal: 0,
    rateBytesPerSec: 0,
    etaSeconds: -1,
    message: '',
    atMs: Date.now(),
  };
}

export function emptyResult(jobId: string): JobResult {
  return {
    jobId,
    status: 'Failed',
    backupId: '',
    backupPath: '',
    errorCode: '',
    errorMessage: '',
    failedStep: '',
    warnings: [],
    sizeBytes: 0,
    durationMs: 0,
    manifestJson: '',
    dryRunReport: '',
  };
}

/** Call a unary method of a grpc-js client as a promise; errors come back as BoxbackError. */
export function unary<Req, Res>(
  client: grpc.Client,
  method: string,
  req: Req,
  opts: { deadlineMs?: number; what?: string; metadata?: grpc.Metadata } = {},
): Promise<Res> {
  const fn = (client as unknown as Record<string, Function>)[method];
  if (typeof fn !== 'function') return Promise.reject(new Error(`no RPC method ${method}`));
  const deadline = new Date(Date.now() + (opts.deadlineMs ?? 30_000));
  return new Promise<Res>((resolve, reject) => {
    fn.call(client, req, opts.metadata ?? new grpc.Metadata(), { deadline }, (err: grpc.ServiceError | null, res: Res) => {
      if (err) reject(fromServiceError(err, opts.what));
      else resolve(res);
    });
  });
}

/** Iterate a server-streaming call; errors come back as BoxbackError. */
export async function* serverStream<Req, Ev>(
  client: grpc.Client,
  method: string,
  req: Req,
  opts: { what?: string; metadata?: grpc.Metadata; signal?: AbortSignal } = {},
): AsyncGenerator<Ev> {
  const fn = (client as unknown as Record<string, Function>)[method];
  const call = fn.call(client, req, opts.metadata ?? new grpc.Metadata()) as grpc.ClientReadableStream<Ev>;
  const onAbort = () => call.cancel();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const ev of call as AsyncIterable<Ev>) yield ev;
  } catch (err) {
    throw fromServiceError(err, opts.what);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}
