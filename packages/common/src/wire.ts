/**
 * GENERATED from proto/boxback/v1 by scripts/gen-wire-types.mjs: do not edit.
 * The messages as @grpc/proto-loader delivers them: camelCase, int64 as number, every field
 * present (an unset message field is null), a oneof names its set member.
 */
/* eslint-disable */

export interface AckResultsRequest {
  jobIds: string[];
}

export interface AckResultsResponse {
  removed: number;
}

export interface AddHostRequest {
  name: string;
  address: string;
  group: string;
  rpoSeconds: number;
  skipCheck: boolean;
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
  runningProgress: Progress | null;
  safetyCopies: SafetyCopy[];
  quiesced: boolean;
  quiesceDeadlineMs: number;
  runningJobKind: string;
  unsentResults: number;
}

/** Every RPC of AgentService: request, response (one message, or each message of a stream). */
export interface AgentServiceRpcs {
  GetInfo: { req: GetInfoRequest; res: AgentInfo; kind: 'unary' };
  Backup: { req: BackupRequest; res: JobEvent; kind: 'stream' };
  Restore: { req: RestoreRequest; res: JobEvent; kind: 'stream' };
  VerifyBackup: { req: VerifyBackupRequest; res: VerifyBackupResponse; kind: 'unary' };
  DeleteBackup: { req: DeleteBackupRequest; res: DeleteBackupResponse; kind: 'unary' };
  ConfirmRestore: { req: ConfirmRestoreRequest; res: ConfirmRestoreResponse; kind: 'unary' };
  CancelJob: { req: CancelJobRequest; res: CancelJobResponse; kind: 'unary' };
  UnsentResults: { req: UnsentResultsRequest; res: UnsentResultsResponse; kind: 'unary' };
  AckResults: { req: AckResultsRequest; res: AckResultsResponse; kind: 'unary' };
}

export interface AuditEntry {
  atMs: number;
  who: string;
  action: string;
  target: string;
  result: string;
  detail: string;
}

export interface Backup {
  id: string;
  host: string;
  createdAtMs: number;
  sizeBytes: number;
  consistency: string;
  status: string;
  restorable: boolean;
  verifiedAtMs: number;
  path: string;
  productVersion: string;
  jobId: string;
  origin: string;
  manifestJson: string;
  quiesceWindowMs: number;
  fileCount: number;
  initiatedVia: string;
  drillPassedAtMs: number;
  drillDurationMs: number;
  drillResult: string;
  drillAtMs: number;
  damaged: boolean;
  damage: string;
  label: string;
  pinned: boolean;
}

export interface BackupRequest {
  jobId: string;
  live: boolean;
  initiatedBy: string;
  initiatedVia: string;
}

export interface CancelJobRequest {
  jobId: string;
  requestedBy: string;
}

export interface CancelJobResponse {
  cancelling: boolean;
  runningJobId: string;
}

export interface ConfirmRestoreRequest {
  jobId: string;
}

export interface ConfirmRestoreResponse {
  removed: number;
  freedBytes: number;
}

export interface ControllerCancelRequest {
  id: string;
}

export interface ControllerConfirmRequest {
  jobId: string;
}

export interface ControllerConfirmResponse {
  removed: number;
  freedBytes: number;
}

export interface ControllerDeleteRequest {
  backupId: string;
}

export interface ControllerDeleteResponse {
  deleted: boolean;
  freedBytes: number;
}

/** Every RPC of ControllerService: request, response (one message, or each message of a stream). */
export interface ControllerServiceRpcs {
  AddHost: { req: AddHostRequest; res: Host; kind: 'unary' };
  ListHosts: { req: ListHostsRequest; res: ListHostsResponse; kind: 'unary' };
  RemoveHost: { req: RemoveHostRequest; res: RemoveHostResponse; kind: 'unary' };
  CreateBackup: { req: CreateBackupRequest; res: CreateBackupResponse; kind: 'unary' };
  ListBackups: { req: ListBackupsRequest; res: ListBackupsResponse; kind: 'unary' };
  GetBackup: { req: GetBackupRequest; res: Backup; kind: 'unary' };
  RestoreBackup: { req: RestoreBackupRequest; res: Job; kind: 'unary' };
  VerifyBackup: { req: ControllerVerifyRequest; res: ControllerVerifyResponse; kind: 'unary' };
  DeleteBackup: { req: ControllerDeleteRequest; res: ControllerDeleteResponse; kind: 'unary' };
  ImportBackup: { req: ImportBackupRequest; res: Backup; kind: 'unary' };
  ExportBackup: { req: ExportBackupRequest; res: DataChunk; kind: 'stream' };
  ConfirmRestore: { req: ControllerConfirmRequest; res: ControllerConfirmResponse; kind: 'unary' };
  GetStatus: { req: GetStatusRequest; res: StatusResponse; kind: 'unary' };
  GetJob: { req: GetJobRequest; res: Job; kind: 'unary' };
  WatchJob: { req: WatchJobRequest; res: JobEvent; kind: 'stream' };
  CreateToken: { req: CreateTokenRequest; res: CreateTokenResponse; kind: 'unary' };
  ListTokens: { req: ListTokensRequest; res: ListTokensResponse; kind: 'unary' };
  RevokeToken: { req: RevokeTokenRequest; res: TokenInfo; kind: 'unary' };
  ListAudit: { req: ListAuditRequest; res: ListAuditResponse; kind: 'unary' };
  PruneBackups: { req: PruneBackupsRequest; res: PruneBackupsResponse; kind: 'unary' };
  RunDrill: { req: RunDrillRequest; res: Job; kind: 'unary' };
  ListEvidence: { req: ListEvidenceRequest; res: ListEvidenceResponse; kind: 'unary' };
  ListJobs: { req: ListJobsRequest; res: ListJobsResponse; kind: 'unary' };
  CancelJob: { req: ControllerCancelRequest; res: Job; kind: 'unary' };
  GetJobLogs: { req: GetJobLogsRequest; res: GetJobLogsResponse; kind: 'unary' };
  UpdateHost: { req: UpdateHostRequest; res: Host; kind: 'unary' };
  ListSchedules: { req: ListSchedulesRequest; res: ListSchedulesResponse; kind: 'unary' };
  SetSchedulePaused: { req: SetSchedulePausedRequest; res: ScheduleInfo; kind: 'unary' };
  RunSchedule: { req: RunScheduleRequest; res: RunScheduleResponse; kind: 'unary' };
  PinBackup: { req: PinBackupRequest; res: Backup; kind: 'unary' };
  ScanStore: { req: ScanStoreRequest; res: ScanStoreResponse; kind: 'unary' };
}

export interface ControllerVerifyRequest {
  backupId: string;
}

export interface ControllerVerifyResponse {
  ok: boolean;
  filesChecked: number;
  bytesChecked: number;
  problems: string[];
  durationMs: number;
  zipEntriesChecked: number;
}

export interface CreateBackupRequest {
  hosts: string[];
  group: string;
  all: boolean;
  live: boolean;
  concurrency: number;
  client: string;
  label: string;
}

export interface CreateBackupResponse {
  jobs: Job[];
}

export interface CreateTokenRequest {
  name: string;
  role: string;
  expiresInSeconds: number;
}

export interface CreateTokenResponse {
  token: string;
  name: string;
  role: string;
  expiresAtMs: number;
}

export interface DataChunk {
  data: Buffer;
  totalBytes: number;
}

export interface DeleteBackupRequest {
  backupPath: string;
}

export interface DeleteBackupResponse {
  deleted: boolean;
  freedBytes: number;
}

export interface Evidence {
  host: string;
  kind: string;
  backupId: string;
  atMs: number;
  passed: boolean;
  durationMs: number;
  target: string;
  jobId: string;
  detail: string;
  backupExists: boolean;
}

export interface ExportBackupRequest {
  backupId: string;
}

export interface GetBackupRequest {
  id: string;
}

export interface GetInfoRequest {}

export interface GetJobLogsRequest {
  id: string;
}

export interface GetJobLogsResponse {
  job: Job | null;
  entries: JobLogEntry[];
}

export interface GetJobRequest {
  id: string;
}

export interface GetStatusRequest {
  refresh: boolean;
}

export interface Host {
  name: string;
  address: string;
  group: string;
  planName: string;
  agentVersion: string;
  lastSeenMs: number;
  rpoSeconds: number;
  product: string;
  productVersion: string;
}

export interface HostStatus {
  host: Host | null;
  reachable: boolean;
  unreachableReason: string;
  runningJob: Job | null;
  lastGoodBackup: Backup | null;
  lastGoodAgeSeconds: number;
  nextRunMs: number;
  atRisk: boolean;
  safetyCopies: number;
  safetyCopyBytes: number;
  lastDrillBackupId: string;
  lastDrillAtMs: number;
  lastDrillDurationMs: number;
}

export interface ImportBackupRequest {
  path: string;
  host: string;
}

export interface Job {
  id: string;
  kind: string;
  host: string;
  state: string;
  phase: string;
  progress: Progress | null;
  requestedBy: string;
  createdAtMs: number;
  startedAtMs: number;
  endedAtMs: number;
  errorCode: string;
  errorMessage: string;
  backupId: string;
  warningCount: number;
  dryRunReport: string;
}

export interface JobEvent {
  progress?: Progress | null;
  result?: JobResult | null;
  event?: 'progress' | 'result';
}

export interface JobLogEntry {
  atMs: number;
  phase: string;
  state: string;
  message: string;
}

export interface JobResult {
  jobId: string;
  status: string;
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

export interface ListAuditRequest {
  limit: number;
}

export interface ListAuditResponse {
  entries: AuditEntry[];
}

export interface ListBackupsRequest {
  host: string;
  label: string;
  status: string;
  sinceMs: number;
  limit: number;
}

export interface ListBackupsResponse {
  backups: Backup[];
}

export interface ListEvidenceRequest {
  host: string;
  kind: string;
  limit: number;
}

export interface ListEvidenceResponse {
  entries: Evidence[];
}

export interface ListHostsRequest {
  group: string;
}

export interface ListHostsResponse {
  hosts: Host[];
}

export interface ListJobsRequest {
  host: string;
  kind: string;
  states: string[];
  limit: number;
}

export interface ListJobsResponse {
  jobs: Job[];
}

export interface ListSchedulesRequest {}

export interface ListSchedulesResponse {
  schedules: ScheduleInfo[];
}

export interface ListTokensRequest {}

export interface ListTokensResponse {
  tokens: TokenInfo[];
}

export interface PinBackupRequest {
  backupId: string;
  pinned: boolean;
}

export interface Progress {
  jobId: string;
  phase: string;
  state: string;
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesTotal: number;
  rateBytesPerSec: number;
  etaSeconds: number;
  message: string;
  atMs: number;
}

export interface PruneBackupsRequest {
  host: string;
  dryRun: boolean;
}

export interface PruneBackupsResponse {
  items: PruneItem[];
  deleted: number;
  freedBytes: number;
  dryRun: boolean;
}

export interface PruneItem {
  id: string;
  host: string;
  createdAtMs: number;
  keep: boolean;
  reasons: string[];
  deleted: boolean;
  freedBytes: number;
  error: string;
  initiatedVia: string;
}

export interface RemoveHostRequest {
  name: string;
}

export interface RemoveHostResponse {
  removed: boolean;
}

export interface RestoreBackupRequest {
  backupId: string;
  targetHost: string;
  dryRun: boolean;
  force: boolean;
}

export interface RestoreRequest {
  jobId: string;
  backupPath: string;
  dryRun: boolean;
  force: boolean;
  backupId: string;
  sourceHost: string;
}

export interface RevokeTokenRequest {
  token: string;
}

export interface RunDrillRequest {
  host: string;
  drillHost: string;
}

export interface RunScheduleRequest {
  name: string;
}

export interface RunScheduleResponse {
  name: string;
  slotMs: number;
}

export interface SafetyCopy {
  jobId: string;
  backupId: string;
  createdAtMs: number;
  sizeBytes: number;
  paths: string[];
}

export interface ScanStoreRequest {}

export interface ScanStoreResponse {
  hostsAdded: string[];
  adopted: number;
  marked: number;
  hostsInStore: number;
  location: string;
}

export interface ScheduleInfo {
  name: string;
  kind: string;
  cron: string;
  timezone: string;
  hosts: string[];
  group: string;
  drillHost: string;
  nextRunMs: number;
  lastSlotMs: number;
  running: boolean;
  paused: boolean;
  pausedAtMs: number;
  pausedBy: string;
}

export interface SetSchedulePausedRequest {
  name: string;
  paused: boolean;
}

export interface StatusResponse {
  hosts: HostStatus[];
  totalHosts: number;
  reachableHosts: number;
  atRiskHosts: number;
  runningJobs: number;
  controllerVersion: string;
  atMs: number;
  leader: string;
  controller: string;
}

export interface TokenInfo {
  name: string;
  role: string;
  createdAtMs: number;
  lastUsedMs: number;
  id: number;
  expiresAtMs: number;
  revokedAtMs: number;
}

export interface UnsentResultsRequest {}

export interface UnsentResultsResponse {
  results: JobResult[];
}

export interface UpdateHostRequest {
  name: string;
  address: string;
  group: string;
  setGroup: boolean;
  rpoSeconds: number;
  setRpo: boolean;
}

export interface VerifyBackupRequest {
  backupPath: string;
}

export interface VerifyBackupResponse {
  ok: boolean;
  filesChecked: number;
  bytesChecked: number;
  problems: string[];
  durationMs: number;
  zipEntriesChecked: number;
}

export interface WatchJobRequest {
  id: string;
}
