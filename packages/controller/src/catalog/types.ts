/**
 * The catalog: what the controller remembers (hosts, backups, jobs, tokens, audit log).
 * One small async interface so that a PostgreSQL implementation can follow the SQLite one.
 */

export type Role = 'admin' | 'viewer';
export type BackupStatus = 'Queued' | 'Running' | 'Completed' | 'PartiallyFailed' | 'Failed';
export type JobState = 'Queued' | 'Running' | 'Completed' | 'PartiallyFailed' | 'Failed' | 'RolledBack';
export type JobKind = 'backup' | 'restore' | 'verify';

export const ACTIVE_JOB_STATES: readonly JobState[] = ['Queued', 'Running'];

export interface HostRow {
  name: string;
  address: string;
  group: string;
  /** 0: the controller's default RPO. */
  rpoSeconds: number;
  planName: string;
  product: string;
  productVersion: string;
  agentVersion: string;
  lastSeenMs: number;
  createdAtMs: number;
}

export interface BackupRow {
  id: string;
  host: string;
  createdAtMs: number;
  sizeBytes: number;
  consistency: string;
  status: BackupStatus;
  /** Derived: Completed, its manifest was read, and no verification found a problem. */
  restorable: boolean;
  verifiedAtMs: number;
  /** The last verification found a missing file or a checksum mismatch. */
  verifyFailed: boolean;
  path: string;
  productVersion: string;
  jobId: string;
  origin: string;
  manifestJson: string;
  quiesceWindowMs: number;
  fileCount: number;
  warningCount: number;
  errorCount: number;
  /** Why it failed, or the last verification problem. */
  errorMessage: string;
}

export interface JobRow {
  id: string;
  kind: JobKind;
  host: string;
  state: JobState;
  phase: string;
  /** Last Progress message as JSON ('' when none). */
  progressJson: string;
  requestedBy: string;
  createdAtMs: number;
  startedAtMs: number;
  endedAtMs: number;
  errorCode: string;
  errorMessage: string;
  backupId: string;
  warningCount: number;
  dryRunReport: string;
  /** What the job was asked to do (live, backupPath, dryRun...), as JSON. */
  paramsJson: string;
  /** The final JobResult as JSON ('' while running). */
  resultJson: string;
}

export interface TokenRow {
  id: number;
  name: string;
  role: Role;
  /** Hex SHA-256 of the token; the token itself is never stored. */
  hash: string;
  createdAtMs: number;
  lastUsedMs: number;
}

export interface AuditEntry {
  id?: number;
  atMs: number;
  /** Token name (or "local" for commands run on the controller's box). */
  who: string;
  /** RPC or command name. */
  action: string;
  /** Host, backup or job the action named. */
  target: string;
  /** "ok" or the error code. */
  result: string;
  detail: string;
}

export type HostUpdate = Partial<Pick<HostRow, 'planName' | 'product' | 'productVersion' | 'agentVersion' | 'lastSeenMs'>>;
export type JobUpdate = Partial<Omit<JobRow, 'id' | 'kind' | 'host' | 'createdAtMs'>>;
export type BackupUpdate = Partial<Pick<BackupRow, 'verifiedAtMs' | 'verifyFailed' | 'status' | 'errorMessage'>>;

export interface Catalog {
  /** Schema version after migrations. */
  readonly schemaVersion: number;

  addHost(h: HostRow): Promise<void>;
  getHost(name: string): Promise<HostRow | undefined>;
  listHosts(group?: string): Promise<HostRow[]>;
  removeHost(name: string): Promise<boolean>;
  updateHost(name: string, u: HostUpdate): Promise<void>;

  /** Insert or replace a backup. `restorable` is derived, never taken from the caller. */
  putBackup(b: Omit<BackupRow, 'restorable'>): Promise<BackupRow>;
  getBackup(id: string): Promise<BackupRow | undefined>;
  /** Newest first, without manifests (manifestJson is ''; GetBackup has it). */
  listBackups(host?: string): Promise<BackupRow[]>;
  /** The newest Restorable backup of a host. */
  lastRestorable(host: string): Promise<BackupRow | undefined>;
  updateBackup(id: string, u: BackupUpdate): Promise<void>;
  deleteBackup(id: string): Promise<boolean>;

  createJob(j: JobRow): Promise<void>;
  getJob(id: string): Promise<JobRow | undefined>;
  updateJob(id: string, u: JobUpdate): Promise<void>;
  listJobs(filter?: { states?: readonly JobState[]; host?: string; limit?: number }): Promise<JobRow[]>;
  /** Jobs counted by host, kind and state (for metrics). */
  countJobs(): Promise<Array<{ host: string; kind: string; state: string; count: number }>>;
  /** Per host, the newest backup job that Completed (duration for metrics). */
  lastCompletedBackupJobs(): Promise<JobRow[]>;

  createToken(t: Omit<TokenRow, 'id' | 'lastUsedMs'>): Promise<TokenRow>;
  findTokenByHash(hash: string): Promise<TokenRow | undefined>;
  listTokens(): Promise<TokenRow[]>;
  touchToken(id: number, atMs: number): Promise<void>;

  appendAudit(e: AuditEntry): Promise<void>;
  listAudit(limit?: number): Promise<AuditEntry[]>;

  close(): Promise<void>;
}
