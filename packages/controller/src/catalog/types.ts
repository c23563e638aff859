/**
 * The catalog: what the controller remembers (hosts, backups, jobs, tokens, audit log).
 * One small async interface so that a PostgreSQL implementation can follow the SQLite one.
 */

export type Role = 'admin' | 'operator' | 'viewer';
export type BackupStatus = 'Queued' | 'Running' | 'Completed' | 'PartiallyFailed' | 'Failed';
export type JobState = 'Queued' | 'Running' | 'Completed' | 'PartiallyFailed' | 'Failed' | 'RolledBack';
export type JobKind = 'backup' | 'restore' | 'verify' | 'drill';

export const ACTIVE_JOB_STATES: readonly JobState[] = ['Queued', 'Running'];

export interface HostRow {
  name: string;
  address: string;
  group: string;
  /** 0: the controller's default RPO; -1: none (a spare box that only receives drills: never at risk). */
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
  /** "cli" or "api" (manual), "schedule" (automated), "import". Retention keeps manual ones apart. */
  initiatedVia: string;
  /** When the newest restore drill of this backup passed (0: never). */
  drillPassedAtMs: number;
  /** When a drill last ran on it, passed or not (0: never). */
  drillAtMs: number;
  /** How long that drill's restore took (the real recovery time). */
  drillDurationMs: number;
  /** "passed on H" or "failed on H: why" ('' : never drilled). */
  drillResult: string;
  /** An operator's label (`backup create --label pre-upgrade`; '' : none). */
  label: string;
  /** Pinned: retention never deletes it. */
  pinned: boolean;
}

/** What putBackup takes: drill fields start empty, initiatedVia defaults to "cli". */
export type NewBackup = Omit<
  BackupRow,
  'restorable' | 'drillPassedAtMs' | 'drillAtMs' | 'drillDurationMs' | 'drillResult' | 'initiatedVia' | 'label' | 'pinned'
> & {
  initiatedVia?: string;
};

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
  /** The schedule that fired this job ('' : asked for by a caller). */
  schedule?: string;
  /** The schedule's slot (cron time, ms) it was fired for; one job per (schedule, slot, host, attempt) at most. */
  slotMs?: number;
  /** Which run of that slot (1, then retries; 0 : not scheduled). */
  attempt?: number;
  /** The controller that runs the job (its leadership id; '' before migration 3). */
  owner?: string;
}

export type EvidenceKind = 'drill' | 'verify';

/** One drill or verify of a backup, kept after the backup is deleted (`boxback drills`). */
export interface EvidenceRow {
  id?: number;
  /** The backup's (source) host. */
  host: string;
  kind: EvidenceKind;
  backupId: string;
  /** When it ended. */
  atMs: number;
  passed: boolean;
  /** A drill's restore time; a verify's check time. */
  durationMs: number;
  /** The drill host ('' for a verify). */
  target: string;
  jobId: string;
  /** "passed on H", the failure, or the verify's first problem. */
  detail: string;
}

export interface EvidenceFilter {
  host?: string;
  kind?: EvidenceKind;
  /** Newest first, at most this many (default 100). */
  limit?: number;
}

/** One line of a job's log: a phase started, ended or failed, a cancel asked for, the job's end. */
export interface JobEventRow {
  jobId: string;
  atMs: number;
  phase: string;
  /** started, done, failed, skipped (a phase's), queued, cancel, or the job's final state. */
  state: string;
  message: string;
}

/** Which jobs listJobs returns (newest first). */
export interface JobFilter {
  states?: readonly JobState[];
  host?: string;
  kinds?: readonly string[];
  limit?: number;
}

export interface TokenRow {
  id: number;
  name: string;
  role: Role;
  /** Hex SHA-256 of the token; the token itself is never stored. */
  hash: string;
  createdAtMs: number;
  lastUsedMs: number;
  /** When it stops working (0: never). */
  expiresAtMs: number;
  /** When it was revoked (0: it was not). */
  revokedAtMs: number;
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

export type HostUpdate = Partial<
  Pick<HostRow, 'planName' | 'product' | 'productVersion' | 'agentVersion' | 'lastSeenMs' | 'address' | 'group' | 'rpoSeconds'>
>;

/** A schedule an operator paused: its slots pass without a run until it is resumed. */
export interface SchedulePause {
  name: string;
  pausedAtMs: number;
  pausedBy: string;
}
export type JobUpdate = Partial<Omit<JobRow, 'id' | 'kind' | 'host' | 'createdAtMs' | 'schedule' | 'slotMs' | 'attempt' | 'owner'>>;
export type BackupUpdate = Partial<
  Pick<
    BackupRow,
    | 'verifiedAtMs'
    | 'verifyFailed'
    | 'status'
    | 'errorMessage'
    | 'drillPassedAtMs'
    | 'drillAtMs'
    | 'drillDurationMs'
    | 'drillResult'
    | 'label'
    | 'pinned'
  >
>;

export interface Catalog {
  /** Schema version after migrations. */
  readonly schemaVersion: number;
  /** Changes whenever a host or backup row changes (status caches what it read until then). */
  readonly generation: number;
  /**
   * The hosts whose rows (host, backups, evidence) changed after generation `since`, or
   * undefined when that is not known (hosts added or removed, or a catalog that does not track
   * it): status then reads every host again. A host named here is read again; one not named
   * has the rows read at `since`.
   */
  changedHosts?(since: number): ReadonlySet<string> | undefined;

  addHost(h: HostRow): Promise<void>;
  getHost(name: string): Promise<HostRow | undefined>;
  listHosts(group?: string): Promise<HostRow[]>;
  removeHost(name: string): Promise<boolean>;
  updateHost(name: string, u: HostUpdate): Promise<void>;
  /** Several hosts' updates in one transaction (one fsync: the agent poll of a whole fleet). */
  updateHosts(updates: ReadonlyArray<{ name: string; update: HostUpdate }>): Promise<void>;

  /** Insert or replace a backup. `restorable` is derived, never taken from the caller. */
  putBackup(b: NewBackup): Promise<BackupRow>;
  getBackup(id: string): Promise<BackupRow | undefined>;
  /** Newest first, without manifests (manifestJson is ''; GetBackup has it). */
  listBackups(host?: string): Promise<BackupRow[]>;
  /** The newest Restorable backup of a host. */
  lastRestorable(host: string): Promise<BackupRow | undefined>;
  /** Per host: its newest Restorable backup and its most recently drilled one (status, in two queries for the whole fleet). */
  statusBackups(): Promise<{ lastRestorable: Map<string, BackupRow>; lastDrilled: Map<string, BackupRow> }>;
  /** The backup of a host whose restore drill passed most recently. */
  lastDrilled(host: string): Promise<BackupRow | undefined>;
  updateBackup(id: string, u: BackupUpdate): Promise<void>;
  deleteBackup(id: string): Promise<boolean>;

  /** A new job's row, with its first log line (`first`) in the same write when given. */
  createJob(j: JobRow, first?: JobEventRow): Promise<void>;
  getJob(id: string): Promise<JobRow | undefined>;
  updateJob(id: string, u: JobUpdate): Promise<void>;
  /** A job's latest phase and progress: not worth a disk flush of its own (the next durable write carries it). */
  updateJobProgress(id: string, phase: string, progressJson: string): Promise<void>;
  listJobs(filter?: JobFilter): Promise<JobRow[]>;
  /** Append a line to a job's log (`boxback job logs`). */
  appendJobEvent(e: JobEventRow): Promise<void>;
  /** A job's log, oldest first. */
  listJobEvents(jobId: string): Promise<JobEventRow[]>;

  /** Record a drill or verify (evidence outlives the backup it tested). */
  appendEvidence(e: Omit<EvidenceRow, 'id'>): Promise<void>;
  /** Drills and verifies, newest first. */
  listEvidence(f?: EvidenceFilter): Promise<EvidenceRow[]>;
  /** Per host (or for one host), the newest passed drill or verify of `kind` (status, metrics). */
  lastPassedEvidence(kind: EvidenceKind, host?: string): Promise<Map<string, EvidenceRow>>;
  /**
   * Ended work counted by source host, kind and state (metrics): a drill under the host whose
   * backup it drilled, restore dry runs left out, verifies (no jobs) from the evidence.
   */
  countJobs(): Promise<Array<{ host: string; kind: string; state: string; count: number }>>;
  /** Per host, the newest backup job that Completed (duration for metrics). */
  lastCompletedBackupJobs(): Promise<JobRow[]>;

  createToken(t: Omit<TokenRow, 'id' | 'lastUsedMs' | 'revokedAtMs'>): Promise<TokenRow>;
  /** Mark a token (by name, or by ID when `nameOrId` is all digits) revoked; undefined when there is none. */
  revokeToken(nameOrId: string, atMs: number): Promise<TokenRow | undefined>;
  findTokenByHash(hash: string): Promise<TokenRow | undefined>;
  listTokens(): Promise<TokenRow[]>;
  touchToken(id: number, atMs: number): Promise<void>;

  /** The scheduler's last fired slot per schedule name. */
  listScheduleSlots(): Promise<Map<string, number>>;
  setScheduleSlot(name: string, slotMs: number): Promise<void>;
  /** Paused schedules by name. */
  listSchedulePauses(): Promise<Map<string, SchedulePause>>;
  /** Pause (a SchedulePause) or resume (null) a schedule. */
  setSchedulePause(name: string, pause: SchedulePause | null): Promise<void>;

  appendAudit(e: AuditEntry): Promise<void>;
  listAudit(limit?: number): Promise<AuditEntry[]>;

  close(): Promise<void>;
}
