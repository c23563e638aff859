/**
 * What each ControllerService call does, once the caller is authenticated and allowed
 * (server.ts does that, and the audit log). Inputs are checked here with messages a person
 * can act on; every failure is a BoxbackError.
 */
import { BoxbackError, checkName, refFromPath, type BackupStore, type Logger, type VerifyBackupResponse, type wire } from '@boxback/common';
import type { Agents } from './agent-client.js';
import { createToken, revokeToken, type Caller } from './auth.js';
import type { BackupRow, Catalog, EvidenceKind, HostRow, HostUpdate, TokenRow } from './catalog/types.js';
import type { ControllerConfig } from './config.js';
import { listAnswer } from './api/answer-bytes.js';
import { backupMsg, hostMsg, jobMsg } from './convert.js';
import type { JobRunner } from './jobs.js';
import type { DrillRunner } from './drill.js';
import type { Notifications } from './notifications.js';
import type { RetentionRunner } from './retention.js';
import type { ScheduleRunner } from './scheduling.js';
import type { HostMonitor } from './status.js';
import { mustBeRestorable } from './restorable.js';

export interface Ctx {
  config: ControllerConfig;
  /** Every read and write of stored backups (or ask the host's agent). */
  store: BackupStore;
  catalog: Catalog;
  agents: Agents;
  jobs: JobRunner;
  monitor: HostMonitor;
  log: Logger;
  retention: RetentionRunner;
  schedules: ScheduleRunner;
  drills: DrillRunner;
  notifications: Notifications;
}

/** What deleting a backup needs (the daemon's Ctx, or a part of it). */
export type DeleteCtx = Pick<Ctx, 'config' | 'catalog' | 'agents' | 'jobs' | 'log' | 'store'>;

// Requests are the generated wire types (proto-loader fills every default in); each
// handler checks the fields it uses.
type W = wire.ControllerServiceRpcs;
type Req<N extends keyof W> = W[N]['req'];

const ADDRESS_RE = /^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/;

export async function mustHost(ctx: Ctx, name: string): Promise<HostRow> {
  if (!name) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', 'no host named');
  const h = await ctx.catalog.getHost(name);
  if (!h)
    throw new BoxbackError(
      'BOXBACK_ERR_NOT_FOUND',
      `no host "${name}": list hosts with \`boxback hosts list\`, add one with \`boxback hosts add\``,
    );
  return h;
}

/** `HOST@latest` names a host's newest Restorable backup, wherever a backup ID is taken. */
export const LATEST_SUFFIX = '@latest';

export async function mustBackup(ctx: Pick<Ctx, 'catalog'>, id: string): Promise<BackupRow> {
  if (!id) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', 'no backup ID given (IDs look like host@YYYYMMdd-HHmmss)');
  if (id.endsWith(LATEST_SUFFIX)) {
    const host = id.slice(0, -LATEST_SUFFIX.length);
    const latest = host ? await ctx.catalog.lastRestorable(host) : undefined;
    if (!latest)
      throw new BoxbackError(
        'BOXBACK_ERR_NOT_FOUND',
        `${id}: host "${host}" has no Restorable backup (${host ? `\`boxback backups --host ${host}\`` : 'name a host: HOST@latest'})`,
      );
    return latest;
  }
  const b = await ctx.catalog.getBackup(id);
  if (!b) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no backup "${id}": list backups with \`boxback backups\``);
  return b;
}

/** 0: the controller's default; -1: none (a drill-only spare, never at risk); else seconds. */
function checkRpo(v: unknown): void {
  if (Number(v) < -1) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', 'rpo must be seconds, 0 (the default) or -1 (none)');
}

function checkGroup(g: string | undefined): void {
  if (g && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(g)) checkName(g, 'group name');
}

/** `boxback hosts set`: change a host's address, group or RPO (only the fields asked for). */
export async function updateHost(ctx: Ctx, r: Req<'UpdateHost'>) {
  const h = await mustHost(ctx, r.name);
  const u: HostUpdate = {};
  if (r.address) {
    if (!ADDRESS_RE.test(r.address))
      throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad agent address "${r.address}": want host:port, e.g. 10.0.0.5:7444`);
    u.address = r.address;
  }
  if (r.setGroup) {
    checkGroup(r.group);
    u.group = r.group ?? '';
  }
  if (r.setRpo) {
    checkRpo(r.rpoSeconds);
    u.rpoSeconds = Number(r.rpoSeconds ?? 0);
  }
  if (!Object.keys(u).length) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', 'nothing to change: give --address, --group or --rpo');
  await ctx.catalog.updateHost(h.name, u);
  if (u.address) ctx.agents.drop(h.name);
  await ctx.schedules.refreshHosts();
  return hostMsg({ ...h, ...u });
}

/** A host row not yet seen by its agent (AddHost, or a store scan: no address). */
export function newHostRow(name: string, address: string, group = '', rpoSeconds = 0): HostRow {
  return {
    name,
    address,
    group,
    rpoSeconds,
    planName: '',
    product: '',
    productVersion: '',
    agentVersion: '',
    lastSeenMs: 0,
    createdAtMs: Date.now(),
  };
}

export async function addHost(ctx: Ctx, r: Req<'AddHost'>) {
  checkName(r.name);
  if (!ADDRESS_RE.test(r.address ?? '')) {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad agent address "${r.address ?? ''}": want host:port, e.g. 10.0.0.5:7444`);
  }
  checkRpo(r.rpoSeconds);
  checkGroup(r.group);
  if (await ctx.catalog.getHost(r.name)) {
    throw new BoxbackError(
      'BOXBACK_ERR_ALREADY_EXISTS',
      `host ${r.name} is already registered; \`boxback hosts remove ${r.name}\` first to change it`,
    );
  }
  const row = newHostRow(r.name, r.address, r.group ?? '', Number(r.rpoSeconds ?? 0));
  if (!r.skipCheck) {
    let info;
    try {
      info = await ctx.agents.get(row).getInfo(5_000);
    } catch (err) {
      ctx.agents.drop(row.name);
      const be = err as BoxbackError;
      throw new BoxbackError(be.code ?? 'BOXBACK_ERR_UNREACHABLE', `${be.message} (register anyway with --skip-check)`);
    }
    if (info.name && info.name !== row.name) {
      ctx.agents.drop(row.name);
      throw new BoxbackError(
        'BOXBACK_ERR_INVALID_ARGUMENT',
        `the agent at ${row.address} is named "${info.name}", not "${row.name}": use its name`,
      );
    }
    Object.assign(row, {
      planName: info.planName,
      product: info.product,
      productVersion: info.productVersion,
      agentVersion: info.agentVersion,
      lastSeenMs: Date.now(),
    });
  }
  await ctx.catalog.addHost(row);
  await ctx.schedules.refreshHosts();
  return hostMsg(row);
}

export async function removeHost(ctx: Ctx, r: Req<'RemoveHost'>) {
  const running = ctx.jobs.activeJobFor(r.name);
  if (running) throw new BoxbackError('BOXBACK_ERR_BUSY', `host ${r.name} is running job ${running.row.id}; wait for it first`);
  const removed = await ctx.catalog.removeHost(r.name);
  if (!removed) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no host "${r.name}": list hosts with \`boxback hosts list\``);
  ctx.agents.drop(r.name);
  ctx.monitor.forget(r.name);
  await ctx.schedules.refreshHosts();
  return { removed };
}

export async function listHosts(ctx: Ctx, r: Req<'ListHosts'>) {
  return { hosts: (await ctx.catalog.listHosts(r.group || undefined)).map(hostMsg) };
}

async function selectHosts(ctx: Ctx, r: Req<'CreateBackup'>): Promise<HostRow[]> {
  const names: string[] = r.hosts ?? [];
  const chosen = [names.length > 0, Boolean(r.group), Boolean(r.all)].filter(Boolean).length;
  if (chosen !== 1)
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', 'name the hosts to back up: exactly one of --host, --group or --all');
  if (r.all) return ctx.catalog.listHosts();
  if (r.group) {
    const hs = await ctx.catalog.listHosts(r.group);
    if (!hs.length) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no hosts in group "${r.group}": see \`boxback hosts list\``);
    return hs;
  }
  return Promise.all([...new Set(names)].map((n) => mustHost(ctx, n)));
}

/**
 * Initiated via 'cli' only for the boxback CLI (over gRPC, `client: "cli"`); 'api' for anything
 * else: another gRPC client, or the dashboard's HTTP API (`via` 'api').
 */
export async function createBackup(ctx: Ctx, r: Req<'CreateBackup'>, caller: Caller, via: 'cli' | 'api' = 'cli') {
  if (Number(r.concurrency) < 0) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', 'concurrency must be 1 or more');
  const hosts = await selectHosts(ctx, r);
  const rows = await ctx.jobs.createBackups(hosts, {
    live: Boolean(r.live),
    concurrency: Number(r.concurrency ?? 0),
    requestedBy: caller.name,
    via: via === 'cli' && r.client === 'cli' ? 'cli' : 'api',
    label: checkLabel(r.label ?? ''),
  });
  // 1000 hosts: the answer's jobs made and encoded in slices of the event loop, not in the turn that sends it
  return listAnswer('CreateBackup', 'jobs', rows, (j) => jobMsg(j));
}

function checkLabel(label: string): string {
  if (label && !/^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/.test(label))
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad label "${label}": want letters, digits, ".", "_", ":" or "-" (at most 64)`);
  return label;
}

/** Newest first, filtered by label, status ("restorable" too), creation time, then cut to `limit`. */
export async function listBackups(ctx: Ctx, r: Req<'ListBackups'>) {
  const status = (r.status ?? '').toLowerCase();
  let list = await ctx.catalog.listBackups(r.host || undefined);
  if (r.label) list = list.filter((b) => b.label === r.label);
  if (status) list = list.filter((b) => (status === 'restorable' ? b.restorable : b.status.toLowerCase() === status));
  if (Number(r.sinceMs) > 0) list = list.filter((b) => b.createdAtMs >= Number(r.sinceMs));
  if (Number(r.limit) > 0) list = list.slice(0, Number(r.limit));
  return { backups: list.map((b) => backupMsg(b)) };
}

/** `boxback backup pin|unpin ID`: retention never deletes a pinned backup. */
export async function pinBackup(ctx: Ctx, r: Req<'PinBackup'>) {
  const b = await mustBackup(ctx, r.backupId);
  await ctx.catalog.updateBackup(b.id, { pinned: Boolean(r.pinned) });
  return backupMsg({ ...b, pinned: Boolean(r.pinned) });
}

export async function getBackup(ctx: Ctx, r: Req<'GetBackup'>) {
  return backupMsg(await mustBackup(ctx, r.id), true);
}

export async function restoreBackup(ctx: Ctx, r: Req<'RestoreBackup'>, caller: Caller) {
  const b = await mustBackup(ctx, r.backupId);
  mustBeRestorable(b);
  const target = await mustHost(ctx, r.targetHost || b.host);
  const row = await ctx.jobs.createRestore(b, target, { dryRun: Boolean(r.dryRun), force: Boolean(r.force), requestedBy: caller.name });
  return jobMsg(row);
}

export async function verifyBackup(ctx: Ctx, r: Req<'VerifyBackup'>): Promise<wire.ControllerVerifyResponse> {
  const res = await verifyOne(ctx, await mustBackup(ctx, r.backupId));
  return { ...res, zipEntriesChecked: res.zipEntriesChecked ?? 0 };
}

/** Re-check every checksum and every zip entry's CRC-32 of `b` (evidence recorded under its host) (through the store when it holds the backup here, else by its agent); record the outcome. */
export async function verifyOne(
  ctx: Pick<Ctx, 'config' | 'catalog' | 'agents' | 'store'> & { notifications?: Notifications },
  b: BackupRow,
): Promise<VerifyBackupResponse> {
  const ref = refFromPath(b.path);
  let res: VerifyBackupResponse;
  const local = await ctx.store.has(ref);
  if (local) {
    res = await ctx.store.verify(ref);
  } else {
    // the store does not hold it here (a local store not mounted on this box): the host's agent checks it
    const host = await ctx.catalog.getHost(b.host);
    if (!host)
      throw new BoxbackError(
        'BOXBACK_ERR_NOT_FOUND',
        `backup ${b.id} is not in this controller's store and its host ${b.host} is not registered`,
      );
    res = await ctx.agents.get(host).verifyBackup(b.path);
  }
  const errorMessage = res.ok ? '' : `${res.problems.length} problem(s), first: ${res.problems[0] ?? ''}`;
  const atMs = Date.now();
  await ctx.catalog.updateBackup(b.id, { verifiedAtMs: atMs, verifyFailed: !res.ok, errorMessage });
  await ctx.catalog.appendEvidence({
    host: b.host,
    kind: 'verify',
    backupId: b.id,
    atMs,
    passed: res.ok,
    durationMs: res.durationMs,
    target: local ? '' : b.host,
    jobId: '',
    detail: res.ok ? `${res.filesChecked} files, ${res.zipEntriesChecked ?? 0} zip entries checked` : errorMessage,
  });
  if (!res.ok)
    ctx.notifications?.damaged(
      { ...b, errorMessage },
      `backup ${b.id} failed verification and is no longer Restorable; retention keeps it as damaged: ${errorMessage}`,
    );
  return res;
}

export async function deleteBackup(ctx: Ctx, r: Req<'DeleteBackup'>) {
  const b = await mustBackup(ctx, r.backupId);
  return { deleted: true, freedBytes: await removeBackup(ctx, b) };
}

/** Delete a backup from the store (by its agent, else locally) and the catalog; returns the bytes freed. */
export async function removeBackup(ctx: DeleteCtx, b: BackupRow): Promise<number> {
  for (const a of ctx.jobs.activeJobs()) {
    if ((a.row.kind === 'restore' || a.row.kind === 'drill') && a.row.backupId === b.id)
      throw new BoxbackError('BOXBACK_ERR_BUSY', `restore job ${a.row.id} is reading ${b.id}; wait for it`);
  }
  const ref = refFromPath(b.path);
  let freed = 0;
  const host = await ctx.catalog.getHost(b.host);
  let viaAgent = false;
  if (host) {
    try {
      freed = (await ctx.agents.get(host).deleteBackup(b.path)).freedBytes;
      viaAgent = true;
    } catch (err) {
      ctx.log.warn({ err, backupId: b.id }, 'the agent could not delete the backup; deleting it from the controller');
    }
  }
  // the store makes it vanish from listings first, then frees what only it held
  if (!viaAgent) freed = (await ctx.store.delete(ref)).freedBytes;
  await ctx.catalog.deleteBackup(b.id);
  return freed;
}

export async function pruneBackups(ctx: Ctx, r: Req<'PruneBackups'>, caller: Caller) {
  return ctx.retention.prune({ host: r.host || undefined, dryRun: Boolean(r.dryRun), by: caller.name, pruneStore: true });
}

export async function runDrill(ctx: Ctx, r: Req<'RunDrill'>, caller: Caller) {
  const row = await ctx.drills.start(r.host ?? '', r.drillHost ?? '', caller.name);
  return jobMsg(row);
}

export async function confirmRestore(ctx: Ctx, r: Req<'ConfirmRestore'>) {
  const job = await ctx.catalog.getJob(r.jobId);
  if (!job) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no job "${r.jobId}"`);
  if (job.kind !== 'restore') throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `job ${job.id} is a ${job.kind} job, not a restore`);
  const host = await mustHost(ctx, job.host);
  return ctx.agents.get(host).confirmRestore(job.id);
}

export async function getJob(ctx: Ctx, r: Req<'GetJob'>) {
  const live = ctx.jobs.activeJobs().find((a) => a.row.id === r.id);
  if (live) return jobMsg(live.row, live.progress);
  const j = await ctx.catalog.getJob(r.id);
  if (!j) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no job "${r.id}"`);
  return jobMsg(j);
}

export async function createTokenRpc(ctx: Ctx, r: Req<'CreateToken'>) {
  const { token, row } = await createToken(ctx.catalog, r.name ?? '', r.role || 'viewer', Number(r.expiresInSeconds ?? 0));
  return { token, name: row.name, role: row.role, expiresAtMs: row.expiresAtMs };
}

function tokenMsg(t: TokenRow) {
  return {
    name: t.name,
    role: t.role,
    createdAtMs: t.createdAtMs,
    lastUsedMs: t.lastUsedMs,
    id: t.id,
    expiresAtMs: t.expiresAtMs,
    revokedAtMs: t.revokedAtMs,
  };
}

export async function listTokens(ctx: Ctx) {
  return { tokens: (await ctx.catalog.listTokens()).map(tokenMsg) };
}

export async function revokeTokenRpc(ctx: Ctx, r: Req<'RevokeToken'>) {
  return tokenMsg(await revokeToken(ctx.catalog, String(r.token ?? '').trim()));
}

/** Drills and verifies, newest first, each saying whether the backup it tested still exists. */
export async function listEvidence(ctx: Ctx, r: Req<'ListEvidence'>) {
  const kind = String(r.kind ?? '').trim();
  if (kind && kind !== 'drill' && kind !== 'verify')
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `no evidence kind "${kind}": want drill or verify`);
  const rows = await ctx.catalog.listEvidence({
    host: r.host || undefined,
    kind: (kind || undefined) as EvidenceKind | undefined,
    limit: r.limit > 0 ? Math.min(r.limit, 10_000) : 100,
  });
  const exists = new Set((await ctx.catalog.listBackups(r.host || undefined)).map((b) => b.id));
  return { entries: rows.map((e) => ({ ...e, backupExists: exists.has(e.backupId) })) };
}

export async function listAudit(ctx: Ctx, r: Req<'ListAudit'>) {
  return { entries: await ctx.catalog.listAudit(Number(r.limit) > 0 ? Number(r.limit) : 100) };
}
