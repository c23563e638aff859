/**
 * Prometheus metrics for the controller, in a registry of its own (never prom-client's global
 * one, so that two controllers in one test process do not collide), and the HTTP server that
 * serves them with `/healthz`.
 *
 * Flow: the daemon calls `updateFromStatus()` with the same plain per-host data its status RPC
 * returns (after each poll or job end) and `recordJob()` when a job ends; Prometheus scrapes
 * `GET /metrics`; load balancers and systemd watchdogs poll `GET /healthz` (200 or 503, JSON).
 * A host missing from an update is removed from every per-host gauge, so a removed host stops
 * being reported instead of freezing at its last values. Every `boxback_jobs_total` series a
 * registered host can have (JOB_SERIES) exists from the start at 0, so that the documented
 * alert `increase(boxback_jobs_total{result!="Completed"}[1h]) > 0` fires on the first failure
 * (`increase` needs a sample before the one that counts it).
 * The exposition passes `promtool check metrics`: Node's default metrics are kept except the
 * three gauges prom-client names `_total` (nodejs_active_{handles,requests,resources}_total),
 * whose per-type twins without the suffix stay.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { BoxbackError } from '@boxback/common';

/** One host's figures, as the status code has them. Null/undefined: not known (never backed up). */
export interface HostMetricsInput {
  host: string;
  /** When the newest Restorable backup was made. */
  lastSuccessAtMs?: number | null;
  lastBackupDurationSeconds?: number | null;
  lastBackupSizeBytes?: number | null;
  /** How long the services were quiesced during the last backup. */
  quiesceWindowSeconds?: number | null;
  /** When a restore drill of one of the host's backups last passed (evidence: survives the backup). */
  lastDrillSuccessAtMs?: number | null;
  /** When a verification of one of the host's backups last passed. */
  lastVerifySuccessAtMs?: number | null;
  agentUp: boolean;
  atRisk: boolean;
}

/** Absolute job counts (from the catalog), for a controller that rebuilds its counter at start. */
export interface JobCountInput {
  host: string;
  kind: string;
  result: string;
  count: number;
}

export interface StatusForMetrics {
  hosts: readonly HostMetricsInput[];
  /** When given, boxback_jobs_total is reset to exactly these counts. */
  jobCounts?: readonly JobCountInput[];
}

/** Every (kind, result) a job of a registered host can end with: created at 0 per host. */
export const JOB_SERIES: ReadonlyArray<readonly [string, string]> = [
  ['backup', 'Completed'],
  ['backup', 'PartiallyFailed'],
  ['backup', 'Failed'],
  ['restore', 'Completed'],
  ['restore', 'Failed'],
  ['restore', 'RolledBack'],
  ['drill', 'Completed'],
  ['drill', 'Failed'],
  ['drill', 'RolledBack'],
  ['verify', 'Completed'],
  ['verify', 'Failed'],
];

/** prom-client default gauges whose `_total` names promtool refuses (their per-type twins stay). */
const NON_COUNTER_TOTALS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export interface ControllerMetricsOptions {
  /** Default process metrics (CPU, RSS, event loop lag, ...). Default true. */
  defaultMetrics?: boolean;
}

export class ControllerMetrics {
  readonly registry = new Registry();
  private readonly lastSuccess: Gauge<'host'>;
  private readonly duration: Gauge<'host'>;
  private readonly size: Gauge<'host'>;
  private readonly quiesce: Gauge<'host'>;
  private readonly agentUp: Gauge<'host'>;
  private readonly atRisk: Gauge<'host'>;
  private readonly lastDrill: Gauge<'host'>;
  private readonly lastVerify: Gauge<'host'>;
  private readonly jobs: Counter<'host' | 'kind' | 'result'>;
  private known = new Set<string>();

  constructor(opts: ControllerMetricsOptions = {}) {
    const registers = [this.registry];
    const gauge = (name: string, help: string): Gauge<'host'> => new Gauge({ name, help, labelNames: ['host'], registers });
    this.lastSuccess = gauge('boxback_last_success_timestamp_seconds', 'Unix time of the newest Restorable backup of the host.');
    this.duration = gauge('boxback_last_backup_duration_seconds', "Duration of the host's newest Restorable backup.");
    this.size = gauge('boxback_last_backup_size_bytes', "Size of the host's newest Restorable backup.");
    this.quiesce = gauge(
      'boxback_quiesce_window_seconds',
      "How long the host's services were quiesced during its newest Restorable backup.",
    );
    this.agentUp = gauge('boxback_agent_up', '1 when the controller reached the host agent at its last poll.');
    this.atRisk = gauge('boxback_host_at_risk', '1 when the host has no Restorable backup younger than its RPO.');
    this.lastDrill = gauge(
      'boxback_last_drill_success_timestamp_seconds',
      "Unix time a restore drill of one of the host's backups last passed (kept after that backup is deleted).",
    );
    this.lastVerify = gauge(
      'boxback_last_verify_success_timestamp_seconds',
      "Unix time a verification of one of the host's backups last passed (kept after that backup is deleted).",
    );
    this.jobs = new Counter({
      name: 'boxback_jobs_total',
      help: 'Jobs ended, by source host, kind (backup, restore, verify, drill; restore dry runs not counted) and result (Completed, Failed, ...).',
      labelNames: ['host', 'kind', 'result'],
      registers,
    });
    if (opts.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry });
      for (const name of NON_COUNTER_TOTALS) this.registry.removeSingleMetric(name);
    }
  }

  /** Set every per-host gauge from plain status data; hosts not listed are dropped. */
  updateFromStatus(status: StatusForMetrics): void {
    const now = new Set<string>();
    for (const h of status.hosts) {
      now.add(h.host);
      const l = { host: h.host };
      setOrRemove(this.lastSuccess, l, h.lastSuccessAtMs == null ? null : h.lastSuccessAtMs / 1000);
      setOrRemove(this.duration, l, h.lastBackupDurationSeconds);
      setOrRemove(this.size, l, h.lastBackupSizeBytes);
      setOrRemove(this.quiesce, l, h.quiesceWindowSeconds);
      setOrRemove(this.lastDrill, l, h.lastDrillSuccessAtMs == null ? null : h.lastDrillSuccessAtMs / 1000);
      setOrRemove(this.lastVerify, l, h.lastVerifySuccessAtMs == null ? null : h.lastVerifySuccessAtMs / 1000);
      this.agentUp.set(l, h.agentUp ? 1 : 0);
      this.atRisk.set(l, h.atRisk ? 1 : 0);
    }
    for (const gone of this.known) {
      if (now.has(gone)) continue;
      for (const g of [
        this.lastSuccess,
        this.duration,
        this.size,
        this.quiesce,
        this.agentUp,
        this.atRisk,
        this.lastDrill,
        this.lastVerify,
      ])
        g.remove({ host: gone });
    }
    this.known = now;
    if (status.jobCounts) {
      this.jobs.reset();
      for (const h of status.hosts) for (const [kind, result] of JOB_SERIES) this.jobs.inc({ host: h.host, kind, result }, 0);
      for (const c of status.jobCounts) this.jobs.inc({ host: c.host, kind: c.kind, result: c.result }, c.count);
    }
  }

  /** Count one ended job. */
  recordJob(host: string, kind: string, result: string): void {
    this.jobs.inc({ host, kind, result });
  }

  /** The exposition text, as /metrics serves it. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }
}

function setOrRemove(g: Gauge<'host'>, labels: { host: string }, v: number | null | undefined): void {
  if (v == null || !Number.isFinite(v)) g.remove(labels);
  else g.set(labels, v);
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface Health {
  ok: boolean;
  detail?: unknown;
}

export interface MetricsServer {
  port: number;
  host: string;
  close(): Promise<void>;
}

/** "127.0.0.1:9464", "[::1]:9464", ":9464" (every address) or a bare port. */
export function parseListen(listen: string | number): { host: string | undefined; port: number } {
  if (typeof listen === 'number') return { host: undefined, port: checkPort(listen, String(listen)) };
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]*)):(\d{1,5})$/.exec(listen.trim());
  if (!m) throw new BoxbackError('BOXBACK_ERR_CONFIG_INVALID', `bad metrics listen address "${listen}": want host:port`);
  return { host: m[1] ?? (m[2] || undefined), port: checkPort(Number(m[3]), listen) };
}

function checkPort(p: number, raw: string): number {
  if (!Number.isInteger(p) || p < 0 || p > 65_535) throw new BoxbackError('BOXBACK_ERR_CONFIG_INVALID', `bad metrics port in "${raw}"`);
  return p;
}

/** Serve GET /metrics and GET /healthz. Resolves once listening (port 0 picks a free one). */
export async function startMetricsServer(
  listen: string | number,
  registry: Registry,
  healthz: () => Health | Promise<Health>,
): Promise<MetricsServer> {
  const { host, port } = parseListen(listen);
  const server = http.createServer((req, res) => {
    void handle(req, res, registry, healthz);
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new BoxbackError(
          'BOXBACK_ERR_CONFIG_INVALID',
          `metrics server cannot listen on ${String(listen)}: ${e.code ?? e.message}`,
          {},
          { cause: e },
        ),
      ),
    );
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    port: addr.port,
    host: addr.address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function handle(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  registry: Registry,
  healthz: () => Health | Promise<Health>,
): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  const send = (code: number, type: string, body: string): void => {
    res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  const json = (code: number, v: unknown): void => send(code, 'application/json; charset=utf-8', `${JSON.stringify(v)}\n`);
  try {
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: 'method not allowed' });
    if (path === '/metrics') return send(200, registry.contentType, await registry.metrics());
    if (path === '/healthz') {
      const h = await healthz();
      return json(h.ok ? 200 : 503, { ok: h.ok, detail: h.detail ?? null });
    }
    return json(404, { error: 'not found', paths: ['/metrics', '/healthz'] });
  } catch (e) {
    // A failing health check is unhealthy, not a crash; a failing collector is a 500.
    if (path === '/healthz') return json(503, { ok: false, detail: e instanceof Error ? e.message : String(e) });
    if (!res.headersSent) json(500, { error: e instanceof Error ? e.message : String(e) });
    else res.destroy();
  }
}
