/**
 * The route table: the one place that says, for every ControllerService call, which role it
 * needs, what the audit log records and which handler runs. Request and response types are
 * the generated wire types (packages/common/src/wire.ts, from proto/), so an entry cannot
 * disagree with the proto.
 *
 * Both adapters run from this table through one Dispatcher (dispatch.ts):
 *   - grpc-adapter.ts serves every entry as its RPC,
 *   - http-adapter.ts serves every entry as `POST /api/v1/<name>` (JSON in, JSON or
 *     server-sent events out) for the dashboard,
 * so a role check or an audit entry cannot differ between gRPC and HTTP.
 * A new call is one entry here (and its rpc in proto/); see docs/design/route-table.md.
 */
import type { wire } from '@boxback/common';
import type { Caller } from '../auth.js';
import { backupMsg } from '../convert.js';
import * as H from '../handlers.js';
import { exportBackup, importBackup } from '../import-export.js';
import { cancelJob, jobLogs, listJobs } from '../job-control.js';
import { scanStore } from '../store-scan.js';

type Rpcs = wire.ControllerServiceRpcs;
export type RpcName = keyof Rpcs;
export type ReqOf<N extends RpcName> = Rpcs[N]['req'];
export type ResOf<N extends RpcName> = Rpcs[N]['res'];

/** Roles, weakest first: a role may do everything the ones before it may. */
export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type RouteRole = (typeof ROLES)[number];

/** What a handler gets besides its request. */
export interface Call {
  ctx: H.Ctx;
  caller: Caller;
  /** Aborted when the client goes away (streams) or the controller shuts down. */
  signal: AbortSignal;
  /** The adapter that took the call. */
  via: 'grpc' | 'http';
}

interface RouteBase<N extends RpcName> {
  name: N;
  role: RouteRole;
  /** What the call does, for the refusal message: "role viewer may not restore backups". */
  what: string;
  /** Calls that change something are audited: the target they name and a detail of the result. */
  audit?: { target: (req: ReqOf<N>) => string; detail?: (res: ResOf<N>) => string };
  /** Streams only: the HTTP adapter sends the chunks' bytes as a download instead of events. */
  download?: { contentType: string; bytes: (msg: ResOf<N>) => Buffer; fileName: (req: ReqOf<N>) => string };
}
export interface UnaryRoute<N extends RpcName> extends RouteBase<N> {
  kind: 'unary';
  handler: (req: ReqOf<N>, call: Call) => Promise<ResOf<N>>;
}
export interface StreamRoute<N extends RpcName> extends RouteBase<N> {
  kind: 'stream';
  handler: (req: ReqOf<N>, call: Call) => AsyncGenerator<ResOf<N>>;
}
/** The entry of one RPC: a stream route when the proto says `returns (stream ...)`. */
export type RouteOf<N extends RpcName> = Rpcs[N]['kind'] extends 'stream' ? StreamRoute<N> : UnaryRoute<N>;
type RouteTable = { [N in RpcName]: RouteOf<N> };
/** Any entry of the table. */
export type Route = RouteTable[RpcName];

const unary = <N extends RpcName>(r: Omit<UnaryRoute<N>, 'kind'>): UnaryRoute<N> => ({ kind: 'unary', ...r });
const stream = <N extends RpcName>(r: Omit<StreamRoute<N>, 'kind'>): StreamRoute<N> => ({ kind: 'stream', ...r });

const targetOfCreate = (r: ReqOf<'CreateBackup'>) => (r.all ? '(all hosts)' : r.group ? `group ${r.group}` : (r.hosts ?? []).join(','));
const withDryRun = (s: string, dryRun: boolean) => `${s}${dryRun ? ' (dry run)' : ''}`;

export const ROUTES: RouteTable = {
  AddHost: unary({
    name: 'AddHost',
    role: 'admin',
    what: 'add hosts',
    audit: { target: (r) => r.name },
    handler: (r, c) => H.addHost(c.ctx, r),
  }),
  ListHosts: unary({ name: 'ListHosts', role: 'viewer', what: 'list hosts', handler: (r, c) => H.listHosts(c.ctx, r) }),
  RemoveHost: unary({
    name: 'RemoveHost',
    role: 'admin',
    what: 'remove hosts',
    audit: { target: (r) => r.name },
    handler: (r, c) => H.removeHost(c.ctx, r),
  }),
  CreateBackup: unary({
    name: 'CreateBackup',
    role: 'operator',
    what: 'create backups',
    audit: { target: targetOfCreate, detail: (res) => `jobs ${res.jobs.map((j) => j.id).join(',')}` },
    handler: (r, c) => H.createBackup(c.ctx, r, c.caller, c.via === 'http' ? 'api' : 'cli'),
  }),
  ListBackups: unary({ name: 'ListBackups', role: 'viewer', what: 'list backups', handler: (r, c) => H.listBackups(c.ctx, r) }),
  GetBackup: unary({ name: 'GetBackup', role: 'viewer', what: 'read backups', handler: (r, c) => H.getBackup(c.ctx, r) }),
  RestoreBackup: unary({
    name: 'RestoreBackup',
    role: 'admin',
    what: 'restore backups',
    audit: { target: (r) => withDryRun(`${r.backupId} -> ${r.targetHost || '(own host)'}`, r.dryRun), detail: (res) => `job ${res.id}` },
    handler: (r, c) => H.restoreBackup(c.ctx, r, c.caller),
  }),
  VerifyBackup: unary({
    name: 'VerifyBackup',
    role: 'operator',
    what: 'verify backups',
    audit: { target: (r) => r.backupId, detail: (res) => (res.ok ? 'ok' : `${res.problems.length} problem(s)`) },
    handler: (r, c) => H.verifyBackup(c.ctx, r),
  }),
  DeleteBackup: unary({
    name: 'DeleteBackup',
    role: 'admin',
    what: 'delete backups',
    audit: { target: (r) => r.backupId, detail: (res) => `freed ${res.freedBytes} bytes` },
    handler: (r, c) => H.deleteBackup(c.ctx, r),
  }),
  ImportBackup: unary({
    name: 'ImportBackup',
    role: 'admin',
    what: 'import backups',
    audit: { target: (r) => r.path, detail: (res) => `as ${res.id}` },
    handler: async (r, c) =>
      backupMsg(await importBackup({ catalog: c.ctx.catalog, store: c.ctx.store, log: c.ctx.log }, r.path, r.host), false),
  }),
  ExportBackup: stream({
    name: 'ExportBackup',
    role: 'admin',
    what: 'export backups',
    audit: { target: (r) => r.backupId },
    download: { contentType: 'application/x-tar', bytes: (m) => m.data, fileName: (r) => `${r.backupId}.tar` },
    handler: async function* (r, c) {
      yield* exportBackup(c.ctx.store, await H.mustBackup(c.ctx, r.backupId));
    },
  }),
  ConfirmRestore: unary({
    name: 'ConfirmRestore',
    role: 'admin',
    what: 'confirm restores',
    audit: { target: (r) => r.jobId },
    handler: (r, c) => H.confirmRestore(c.ctx, r),
  }),
  GetStatus: unary({
    name: 'GetStatus',
    role: 'viewer',
    what: 'read the fleet status',
    handler: (r, c) => c.ctx.monitor.status(r.refresh),
  }),
  GetJob: unary({ name: 'GetJob', role: 'viewer', what: 'read jobs', handler: (r, c) => H.getJob(c.ctx, r) }),
  WatchJob: stream({ name: 'WatchJob', role: 'viewer', what: 'watch jobs', handler: (r, c) => c.ctx.jobs.watch(r.id, c.signal) }),
  CreateToken: unary({
    name: 'CreateToken',
    role: 'admin',
    what: 'create tokens',
    audit: { target: (r) => `${r.name} (${r.role || 'viewer'})` },
    handler: (r, c) => H.createTokenRpc(c.ctx, r),
  }),
  ListTokens: unary({ name: 'ListTokens', role: 'admin', what: 'list tokens', handler: (_r, c) => H.listTokens(c.ctx) }),
  RevokeToken: unary({
    name: 'RevokeToken',
    role: 'admin',
    what: 'revoke tokens',
    audit: { target: (r) => r.token, detail: (res) => `revoked ${res.name} (id ${res.id})` },
    handler: (r, c) => H.revokeTokenRpc(c.ctx, r),
  }),
  ListEvidence: unary({
    name: 'ListEvidence',
    role: 'viewer',
    what: 'read the drill and verify history',
    handler: (r, c) => H.listEvidence(c.ctx, r),
  }),
  ListAudit: unary({ name: 'ListAudit', role: 'admin', what: 'read the audit log', handler: (r, c) => H.listAudit(c.ctx, r) }),
  PruneBackups: unary({
    name: 'PruneBackups',
    role: 'admin',
    what: 'prune backups',
    audit: {
      target: (r) => withDryRun(r.host || '(all hosts)', r.dryRun),
      detail: (res) => (res.dryRun ? 'dry run' : `deleted ${res.deleted}, freed ${res.freedBytes} bytes`),
    },
    handler: (r, c) => H.pruneBackups(c.ctx, r, c.caller),
  }),
  RunDrill: unary({
    name: 'RunDrill',
    role: 'admin',
    what: 'run restore drills',
    audit: { target: (r) => `${r.host} -> ${r.drillHost}`, detail: (res) => `job ${res.id}` },
    handler: (r, c) => H.runDrill(c.ctx, r, c.caller),
  }),
  ListJobs: unary({ name: 'ListJobs', role: 'viewer', what: 'list jobs', handler: (r, c) => listJobs(c.ctx, r) }),
  GetJobLogs: unary({ name: 'GetJobLogs', role: 'viewer', what: 'read job logs', handler: (r, c) => jobLogs(c.ctx, r) }),
  CancelJob: unary({
    name: 'CancelJob',
    role: 'admin',
    what: 'cancel jobs',
    audit: { target: (r) => r.id },
    handler: (r, c) => cancelJob(c.ctx, r, c.caller),
  }),
  UpdateHost: unary({
    name: 'UpdateHost',
    role: 'admin',
    what: 'change hosts',
    audit: {
      target: (r) =>
        [r.name, r.address && `address ${r.address}`, r.setGroup && `group ${r.group || '(none)'}`, r.setRpo && `rpo ${r.rpoSeconds}`]
          .filter(Boolean)
          .join(' '),
    },
    handler: (r, c) => H.updateHost(c.ctx, r),
  }),
  ListSchedules: unary({
    name: 'ListSchedules',
    role: 'viewer',
    what: 'list schedules',
    handler: async (_r, c) => ({ schedules: await c.ctx.schedules.list() }),
  }),
  SetSchedulePaused: unary({
    name: 'SetSchedulePaused',
    role: 'admin',
    what: 'pause schedules',
    audit: { target: (r) => `${r.name} ${r.paused ? 'paused' : 'resumed'}` },
    handler: (r, c) => c.ctx.schedules.setPaused(r.name, r.paused ? c.caller.name : null),
  }),
  PinBackup: unary({
    name: 'PinBackup',
    role: 'admin',
    what: 'pin backups',
    audit: { target: (r) => `${r.backupId} ${r.pinned ? 'pinned' : 'unpinned'}`, detail: (res) => res.id },
    handler: (r, c) => H.pinBackup(c.ctx, r),
  }),
  RunSchedule: unary({
    name: 'RunSchedule',
    role: 'admin',
    what: 'run schedules',
    audit: { target: (r) => r.name },
    handler: async (r, c) => c.ctx.schedules.runNow(r.name, c.caller.name),
  }),
  ScanStore: unary({
    name: 'ScanStore',
    role: 'admin',
    what: 'rebuild the catalog from the store',
    audit: {
      target: () => '(store)',
      detail: (res) => `hosts added ${res.hostsAdded.length}, backups adopted ${res.adopted}, marked missing ${res.marked}`,
    },
    handler: async (_r, c) => {
      const { catalog, store, log, notifications } = c.ctx;
      return scanStore({ catalog, store, log: log.child({ part: 'store' }), notifications });
    },
  }),
};

/** The entries in table order. */
export function routeList(): Route[] {
  return Object.values(ROUTES) as Route[];
}

/** The entry for an RPC name, or undefined (names come from the wire: check them). */
export function routeFor(name: string): Route | undefined {
  return Object.prototype.hasOwnProperty.call(ROUTES, name) ? (ROUTES[name as RpcName] as Route) : undefined;
}

/** True when `role` may make calls that need `need`. */
export function roleAllows(role: string, need: RouteRole): boolean {
  const have = ROLES.indexOf(role as RouteRole);
  return have >= 0 && have >= ROLES.indexOf(need);
}
