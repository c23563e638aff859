/**
 * Every failure boxback reports has a stable code (BOXBACK_ERR_...), never reused,
 * a gRPC status to travel with, an exit code for the CLI, an HTTP status for the dashboard's
 * HTTPS API, and a line of documentation. docs/errors.md is generated from this table
 * (scripts/gen-error-docs.mjs) and a test checks it is up to date.
 */
import { Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';

/** CLI exit codes, decided here and nowhere else. Listed in `boxback --help`. */
export const ExitCode = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  PERMISSION_DENIED: 4,
  JOB_FAILED: 5,
  UNREACHABLE: 6,
  BUSY: 7,
  /** Not possible in this state: a backup that is not Restorable, a job that already ended. */
  NOT_POSSIBLE: 8,
  /** `boxback status --exit-code`: a host is AT RISK or its agent DOWN. */
  AT_RISK: 9,
  INTERRUPTED: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** HTTP statuses the dashboard and its JSON API answer with (fastify-style: one per code). */
export type HttpStatus = 400 | 401 | 403 | 404 | 409 | 412 | 429 | 499 | 500 | 502 | 503 | 504 | 507;

interface ErrorSpec {
  grpc: GrpcStatus;
  exit: ExitCode;
  http: HttpStatus;
  doc: string;
}

const spec = (grpc: GrpcStatus, exit: ExitCode, http: HttpStatus, doc: string): ErrorSpec => ({ grpc, exit, http, doc });
const S = GrpcStatus;
const E = ExitCode;

export const ERROR_CODES = {
  BOXBACK_ERR_INTERNAL: spec(S.INTERNAL, E.FAILURE, 500, 'An unexpected failure; the log has the details.'),
  BOXBACK_ERR_USAGE: spec(S.INVALID_ARGUMENT, E.USAGE, 400, 'A command was called with wrong arguments.'),
  BOXBACK_ERR_CONFIG_INVALID: spec(S.INVALID_ARGUMENT, E.USAGE, 400, 'A config file is missing, unreadable or has a bad key.'),
  BOXBACK_ERR_PLAN_INVALID: spec(S.INVALID_ARGUMENT, E.USAGE, 400, 'A host plan is unreadable or has a bad key.'),
  BOXBACK_ERR_PATH_NOT_ALLOWED: spec(S.INVALID_ARGUMENT, E.USAGE, 400, "A path lies outside the roots the agent's config allows."),
  BOXBACK_ERR_INVALID_ARGUMENT: spec(S.INVALID_ARGUMENT, E.USAGE, 400, 'An RPC field or CLI argument has an invalid value.'),
  BOXBACK_ERR_NOT_FOUND: spec(S.NOT_FOUND, E.NOT_FOUND, 404, 'The host, backup or job named does not exist.'),
  BOXBACK_ERR_ALREADY_EXISTS: spec(S.ALREADY_EXISTS, E.USAGE, 409, 'A host or backup with that name already exists.'),
  BOXBACK_ERR_UNAUTHENTICATED: spec(
    S.UNAUTHENTICATED,
    E.PERMISSION_DENIED,
    401,
    'No valid token or certificate was presented (none, unknown, revoked or expired).',
  ),
  BOXBACK_ERR_PERMISSION_DENIED: spec(
    S.PERMISSION_DENIED,
    E.PERMISSION_DENIED,
    403,
    "The caller may not make this call: its token's role does not allow it, or (on an agent) its certificate is not the controller's, or the backup it names is another host's.",
  ),
  BOXBACK_ERR_UNREACHABLE: spec(S.UNAVAILABLE, E.UNREACHABLE, 502, 'An agent or the controller did not answer.'),
  BOXBACK_ERR_TLS: spec(S.UNAVAILABLE, E.UNREACHABLE, 502, 'The TLS handshake failed: certificate from another CA, or plaintext.'),
  BOXBACK_ERR_BUSY: spec(S.RESOURCE_EXHAUSTED, E.BUSY, 409, 'The host is already running a backup or restore.'),
  BOXBACK_ERR_CERTS: spec(S.FAILED_PRECONDITION, E.FAILURE, 412, 'Certificates could not be created or read.'),
  BOXBACK_ERR_QUIESCE_FAILED: spec(S.ABORTED, E.JOB_FAILED, 409, 'The services could not be quiesced; they were resumed.'),
  BOXBACK_ERR_RESUME_FAILED: spec(S.INTERNAL, E.JOB_FAILED, 500, 'The services could not be resumed; check them now.'),
  BOXBACK_ERR_HOOK_FAILED: spec(S.ABORTED, E.JOB_FAILED, 409, 'A pre- or post-backup hook failed.'),
  BOXBACK_ERR_ARCHIVE_FAILED: spec(S.INTERNAL, E.JOB_FAILED, 500, 'Writing or reading an archive failed.'),
  BOXBACK_ERR_SYNC_FAILED: spec(S.INTERNAL, E.JOB_FAILED, 500, 'rsync failed while syncing a tree.'),
  BOXBACK_ERR_DISK_FULL: spec(S.RESOURCE_EXHAUSTED, E.JOB_FAILED, 507, 'The store ran out of space; the partial backup was removed.'),
  BOXBACK_ERR_CANCELLED: spec(S.CANCELLED, E.JOB_FAILED, 499, 'The job was cancelled; services were resumed.'),
  BOXBACK_ERR_TIMEOUT: spec(S.DEADLINE_EXCEEDED, E.JOB_FAILED, 504, 'A step did not finish within its timeout.'),
  BOXBACK_ERR_VERIFY_FAILED: spec(
    S.DATA_LOSS,
    E.JOB_FAILED,
    500,
    'A backup file is missing, its checksum does not match, or a zip in it is truncated or has an entry whose CRC-32 does not match.',
  ),
  BOXBACK_ERR_MANIFEST_INVALID: spec(S.DATA_LOSS, E.JOB_FAILED, 500, 'A backup has no readable manifest.'),
  BOXBACK_ERR_VERSION_NEWER: spec(
    S.FAILED_PRECONDITION,
    E.JOB_FAILED,
    412,
    'The backup is from a newer product version than the installed one; --force overrides.',
  ),
  BOXBACK_ERR_SERVICES_RUNNING: spec(S.FAILED_PRECONDITION, E.JOB_FAILED, 412, 'Service processes are still running after stop.'),
  BOXBACK_ERR_UNSAFE_ARCHIVE: spec(
    S.FAILED_PRECONDITION,
    E.JOB_FAILED,
    412,
    'An archive entry would land outside its target, or is a device, fifo or socket (setuid/setgid bits are dropped with a warning, not refused).',
  ),
  BOXBACK_ERR_RESTORE_FAILED: spec(S.ABORTED, E.JOB_FAILED, 409, 'A restore step failed; the previous data was put back.'),
  BOXBACK_ERR_ROLLBACK_FAILED: spec(
    S.DATA_LOSS,
    E.JOB_FAILED,
    500,
    'A restore failed and so did the rollback; the safety copies are kept.',
  ),
  BOXBACK_ERR_HEALTH_CHECK_FAILED: spec(S.ABORTED, E.JOB_FAILED, 409, 'The services did not become healthy within the deadline.'),
  BOXBACK_ERR_JOB_FAILED: spec(S.ABORTED, E.JOB_FAILED, 409, 'The job ended in Failed or RolledBack.'),
  BOXBACK_ERR_SHUTTING_DOWN: spec(S.UNAVAILABLE, E.UNREACHABLE, 503, 'The daemon is shutting down and takes no new jobs.'),
  BOXBACK_ERR_CATALOG: spec(S.INTERNAL, E.FAILURE, 500, 'The catalog database could not be opened or migrated.'),
  BOXBACK_ERR_STORE_UNREACHABLE: spec(
    S.UNAVAILABLE,
    E.UNREACHABLE,
    502,
    'The object store did not answer, or kept failing, after the retries.',
  ),
  BOXBACK_ERR_STORE_ACCESS_DENIED: spec(
    S.PERMISSION_DENIED,
    E.PERMISSION_DENIED,
    403,
    'The object store refused the credentials (wrong key or secret, or no permission).',
  ),
  BOXBACK_ERR_STORE_NO_BUCKET: spec(S.FAILED_PRECONDITION, E.FAILURE, 412, 'The bucket named in the store config does not exist.'),
  BOXBACK_ERR_STORE_QUOTA: spec(
    S.RESOURCE_EXHAUSTED,
    E.JOB_FAILED,
    507,
    'The bucket is at its quota; the partial backup is not Restorable and is collected by the next prune.',
  ),
  BOXBACK_ERR_STORE_TAMPERED: spec(
    S.DATA_LOSS,
    E.JOB_FAILED,
    500,
    'A stored object failed authentication or its hash (changed, swapped or truncated); nothing was touched.',
  ),
  BOXBACK_ERR_STORE_KEY: spec(
    S.FAILED_PRECONDITION,
    E.PERMISSION_DENIED,
    412,
    'No key file or passphrase given opens the store (or the store is not initialised).',
  ),
  BOXBACK_ERR_NOT_RESTORABLE: spec(
    S.FAILED_PRECONDITION,
    E.NOT_POSSIBLE,
    409,
    'The backup is not Restorable (it failed, is incomplete, or a verification found a problem); pick another.',
  ),
  BOXBACK_ERR_JOB_ENDED: spec(S.FAILED_PRECONDITION, E.NOT_POSSIBLE, 409, 'The job has already ended; there is nothing to cancel.'),
  BOXBACK_ERR_PROBE_FAILED: spec(
    S.DATA_LOSS,
    E.JOB_FAILED,
    500,
    'A database copy did not open in its engine; the backup is not restorable.',
  ),
} satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(s: string): s is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_CODES, s);
}

/** The one error type boxback throws on purpose. `message` is for a person. */
export class BoxbackError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BoxbackError';
    this.code = code;
    this.details = details;
  }
  get exitCode(): ExitCode {
    return ERROR_CODES[this.code].exit;
  }
  get grpcStatus(): GrpcStatus {
    return ERROR_CODES[this.code].grpc;
  }
  get httpStatus(): HttpStatus {
    return ERROR_CODES[this.code].http;
  }
}

/** Wrap anything thrown into a BoxbackError (keeping a BoxbackError as it is). */
export function asBoxbackError(err: unknown, fallback: ErrorCode = 'BOXBACK_ERR_INTERNAL'): BoxbackError {
  if (err instanceof BoxbackError) return err;
  const e = err as NodeJS.ErrnoException & { code?: unknown };
  if (e && (e.code === 'ENOSPC' || e.code === 'EDQUOT')) {
    return new BoxbackError('BOXBACK_ERR_DISK_FULL', `no space left on device${e.path ? ` writing ${e.path}` : ''}`, {}, { cause: err });
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new BoxbackError(fallback, msg, {}, { cause: err });
}

const CODE_KEY = 'boxback-error-code';

/** The gRPC error a server sends for a BoxbackError. */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const be = asBoxbackError(err);
  const metadata = new Metadata();
  metadata.set(CODE_KEY, be.code);
  return { code: be.grpcStatus, details: be.message, message: be.message, metadata };
}

/** Rebuild a BoxbackError from a gRPC error a client received. */
export function fromServiceError(err: unknown, what = 'the server'): BoxbackError {
  if (err instanceof BoxbackError) return err;
  const se = err as Partial<ServiceError>;
  if (typeof se?.code !== 'number') return asBoxbackError(err);
  const raw = se.metadata?.get(CODE_KEY)?.[0];
  const sent = typeof raw === 'string' && isErrorCode(raw) ? raw : undefined;
  const details = se.details || se.message || 'no details';
  if (sent) return new BoxbackError(sent, details);
  switch (se.code) {
    case GrpcStatus.UNAVAILABLE:
      if (/handshake|certificate|SSL|TLS|self.signed|unknown ca/i.test(details)) {
        return new BoxbackError('BOXBACK_ERR_TLS', `TLS with ${what} failed: ${details}`);
      }
      return new BoxbackError('BOXBACK_ERR_UNREACHABLE', `${what} did not answer: ${details}`);
    case GrpcStatus.DEADLINE_EXCEEDED:
      return new BoxbackError('BOXBACK_ERR_UNREACHABLE', `${what} did not answer in time`);
    case GrpcStatus.UNAUTHENTICATED:
      return new BoxbackError('BOXBACK_ERR_UNAUTHENTICATED', details);
    case GrpcStatus.PERMISSION_DENIED:
      return new BoxbackError('BOXBACK_ERR_PERMISSION_DENIED', details);
    case GrpcStatus.NOT_FOUND:
      return new BoxbackError('BOXBACK_ERR_NOT_FOUND', details);
    case GrpcStatus.INVALID_ARGUMENT:
      return new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', details);
    case GrpcStatus.RESOURCE_EXHAUSTED:
      return new BoxbackError('BOXBACK_ERR_BUSY', details);
    case GrpcStatus.CANCELLED:
      return new BoxbackError('BOXBACK_ERR_CANCELLED', details);
    default:
      return new BoxbackError('BOXBACK_ERR_INTERNAL', `${what}: ${details}`);
  }
}
