/**
 * Feeding the Prometheus metrics of policy/metrics.ts from the daemon (config
 * `metrics.listen`). The registry and the HTTP server (/metrics, /healthz) live there;
 * this file turns the catalog and the host monitor's last poll into its inputs:
 *   1. per host: newest Restorable backup (time, size, quiesce window), newest completed
 *      backup job's duration, agent up at the last poll, at risk against the RPO;
 *   2. the newest passed drill and verify per host, from the evidence (they outlive the backup);
 *   3. job counts by source host, kind and result, from the catalog (so they survive restarts):
 *      drills under the drilled host, verifies from the evidence, restore dry runs left out;
 *      every series of every registered host starts at 0 (policy/metrics.ts JOB_SERIES).
 * It refreshes every few seconds and right after a job ends.
 */
import type { Logger } from '@boxback/common';
import type { Catalog } from './catalog/types.js';
import { ControllerMetrics, startMetricsServer, type MetricsServer } from './policy/metrics.js';
import type { HostMonitor } from './status.js';

const REFRESH_MS = 5_000;

export class MetricsFeed {
  readonly metrics = new ControllerMetrics();
  private server?: MetricsServer;
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  serving = true;

  constructor(
    private readonly catalog: Catalog,
    private readonly monitor: HostMonitor,
    private readonly defaultRpoSeconds: number,
    private readonly log: Logger,
  ) {}

  /** Listen on "host:port" and start refreshing; resolves with the port. */
  async start(listen: string): Promise<number> {
    await this.refresh();
    this.server = await startMetricsServer(listen, this.metrics.registry, () => ({
      ok: this.serving,
      detail: this.serving ? 'serving' : 'shutting down',
    }));
    this.timer = setInterval(() => void this.refresh(), REFRESH_MS);
    this.timer.unref();
    return this.server.port;
  }

  /** Recompute every figure (one at a time; a refresh asked during one joins it). */
  refresh(): Promise<void> {
    this.running ??= this.compute()
      .catch((err) => this.log.warn({ err }, 'refreshing metrics failed'))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async compute(): Promise<void> {
    const now = Date.now();
    await this.monitor.checkStore(false, now); // a backup gone from the store is no last success

    const durations = new Map((await this.catalog.lastCompletedBackupJobs()).map((j) => [j.host, (j.endedAtMs - j.startedAtMs) / 1000]));
    const drills = await this.catalog.lastPassedEvidence('drill');
    const verifies = await this.catalog.lastPassedEvidence('verify');
    const hosts = [];
    for (const h of await this.catalog.listHosts()) {
      const b = await this.catalog.lastRestorable(h.name);
      const rpo = h.rpoSeconds > 0 ? h.rpoSeconds : this.defaultRpoSeconds;
      hosts.push({
        host: h.name,
        lastSuccessAtMs: b?.createdAtMs ?? null,
        lastBackupDurationSeconds: durations.get(h.name) ?? null,
        lastBackupSizeBytes: b?.sizeBytes ?? null,
        quiesceWindowSeconds: b ? b.quiesceWindowMs / 1000 : null,
        lastDrillSuccessAtMs: drills.get(h.name)?.atMs ?? null,
        lastVerifySuccessAtMs: verifies.get(h.name)?.atMs ?? null,
        agentUp: Boolean(this.monitor.last(h.name)?.info),
        atRisk: h.rpoSeconds >= 0 && (!b || now - b.createdAtMs > rpo * 1000),
      });
    }
    const jobCounts = (await this.catalog.countJobs())
      .filter((c) => c.state !== 'Queued' && c.state !== 'Running')
      .map((c) => ({ host: c.host, kind: c.kind, result: c.state, count: c.count }));
    this.metrics.updateFromStatus({ hosts, jobCounts });
  }

  async close(): Promise<void> {
    this.serving = false;
    clearInterval(this.timer);
    await this.running;
    await this.server?.close();
  }
}
