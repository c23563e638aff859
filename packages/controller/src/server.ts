/**
 * The controller daemon's gRPC server: ControllerService over TLS (no client certificate
 * needed; callers present a bearer token) and the standard grpc.health.v1 service.
 *
 * Every call is an entry of the route table (api/routes.ts: role, audit, typed request and
 * response, handler), run by the Dispatcher (api/dispatch.ts: shutting down? -> token ->
 * role -> handler -> audit) behind the gRPC adapter (api/grpc-adapter.ts).
 *
 * Startup: open the catalog, take part in the leadership (leadership.ts), listen, start
 * polling agents. The leader (always, with SQLite) reconciles jobs a previous run left
 * Running, fires schedules and applies retention; with PostgreSQL it also reconciles the jobs
 * of controllers that are gone (every ORPHAN_SWEEP_MS) and sweeps retention (every
 * RETENTION_SWEEP_MS: followers run the jobs they are asked for but apply no retention) and
 * sends at-risk alerts.
 * Any controller serves every call and runs the jobs created through it.
 * Shutdown (SIGTERM): health NOT_SERVING, refuse new calls, stop leading, let jobs finish
 * within the grace period, drain the server, close channels and the catalog.
 */
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { BoxbackError, createLogger, loadServices, openStore, serverCredentials, type Logger } from '@boxback/common';
import { ThreadAgents } from './agent-thread.js';
import { Dispatcher } from './api/dispatch.js';
import { grpcImplementation, memoizedDefinition } from './api/grpc-adapter.js';
import { Dashboard } from './dashboard/server.js';
import { Authenticator } from './auth.js';
import type { Catalog } from './catalog/types.js';
import { openCatalog, pgOptions } from './catalog/open.js';
import { PgLeadership, SoleLeadership, type Leadership } from './leadership.js';
import type { ControllerConfig } from './config.js';
import * as H from './handlers.js';
import { JobRunner } from './jobs.js';
import { AgentOutboxes } from './agent-outbox.js';
import { reconcileJobs } from './reconcile.js';
import { HostMonitor } from './status.js';
import { scanIfCatalogEmpty } from './store-scan.js';
import { STORE_SWEEP_MS, checkPresence, reconcileStore, type AgreementDeps } from './store-agreement.js';
import { MetricsFeed } from './metrics.js';
import { DrillRunner } from './drill.js';
import { Notifications } from './notifications.js';
import { RetentionRunner } from './retention.js';
import { ScheduleRunner } from './scheduling.js';

/** After a backup whose agent dropped: look for what it may have published, soon and once more later. */
const AFTER_DROP_MS = [20_000, 120_000];
const SERVICE_NAME = 'boxback.v1.ControllerService';
const ORPHAN_SWEEP_MS = 30_000;
const RETENTION_SWEEP_MS = 10 * 60_000;

export class ControllerServer {
  readonly ctx: H.Ctx;
  private readonly server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024 });
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
  /** Runs route-table entries for every adapter. */
  readonly dispatcher: Dispatcher;
  private closing = false;
  private metrics?: MetricsFeed;
  readonly leadership: Leadership;
  /** Bumped on every gain and loss of the leadership: leader work started under an old epoch stops. */
  private leaderEpoch = 0;
  private leaderTimers: NodeJS.Timeout[] = [];
  private sweeping = false;
  port = 0;
  /** Port of the metrics HTTP server (0 when not configured). */
  metricsPort = 0;
  private dashboard?: Dashboard;
  /** Port of the dashboard (0 when not configured). */
  httpPort = 0;

  private readonly agreement: AgreementDeps;

  private constructor(config: ControllerConfig, catalog: Catalog, log: Logger, leadership: Leadership) {
    this.leadership = leadership;
    const agents = ThreadAgents.start(config.tls);
    const store = openStore(config.store, { log: log.child({ part: 'store' }), prepareFarms: false });
    const jobs = new JobRunner(catalog, agents, log, config.concurrency, store);
    jobs.owner = leadership.id;
    const monitor = new HostMonitor(catalog, agents, jobs, log, config.defaultRpoSeconds);
    const base = { config, catalog, agents, jobs, log, store };
    const notifications = new Notifications(config.webhooks, log.child({ part: 'notify' }));
    const retention = new RetentionRunner({ ...base, notifications }, log.child({ part: 'retention' }));
    const drills = new DrillRunner(base, log.child({ part: 'drill' }));
    const schedules = new ScheduleRunner({
      schedules: config.schedules,
      catalog,
      jobs,
      drills,
      verify: (b) => H.verifyOne({ ...base, notifications }, b),
      log: log.child({ part: 'scheduler' }),
      isLeader: () => leadership.isLeader(),
    });
    monitor.nextRuns = (hosts) => schedules.nextRuns(hosts);
    monitor.leadership = leadership;
    monitor.onAtRisk = (h) => {
      if (leadership.isLeader()) notifications.report(h); // one at-risk alert, not one per controller
    };
    jobs.onFinish((row, result) => {
      if (leadership.isLeader()) retention.onJobFinished(row, result);
    });
    jobs.onFinish((row, result) => notifications.onJobFinished(row, result));
    // The catalog and the store agree (store-agreement.ts): presence before status and retention count a backup,
    // and a reconcile of the host after a backup whose agent dropped (it may have published after all).
    const agreement: AgreementDeps = { catalog, store, log: log.child({ part: 'store' }), notifications };
    this.agreement = agreement;
    monitor.checkPresence = (b) => checkPresence(agreement, b);
    // Results an agent could not deliver (agent-outbox.ts): taken when a poll sees them, acknowledged after a recorded backup.
    const outboxes = new AgentOutboxes({ catalog, agents, log: log.child({ part: 'outbox' }), store });
    monitor.onInfo = (h, info) => {
      if (info.unsentResults && leadership.isLeader())
        void outboxes.collect(h).catch((err) => log.warn({ err, host: h.name }, 'taking unsent results failed'));
    };
    // the agent asked again on the job's open channel: the poll round skips it (status.ts)
    jobs.onFinish((row) => {
      void catalog.getHost(row.host).then(
        (h) => h && monitor.refreshAfterJob(h),
        () => undefined,
      );
    });
    jobs.onFinish((row, result) => {
      const recorded = result.status === 'Completed' || result.status === 'PartiallyFailed';
      if (row.kind === 'backup' && result.backupId && recorded) outboxes.ack(row.host, [row.id]);
    });
    retention.checkPresence = (b) => checkPresence(agreement, b);
    jobs.onFinish((row, result) => {
      if (row.kind !== 'backup' || result.errorCode !== 'BOXBACK_ERR_UNREACHABLE' || !leadership.isLeader()) return;
      for (const ms of AFTER_DROP_MS) {
        setTimeout(() => void reconcileStore(agreement, row.host).catch((err) => log.warn({ err }, 'store reconcile failed')), ms).unref();
      }
    });
    this.ctx = { ...base, monitor, retention, drills, notifications, schedules };
    this.dispatcher = new Dispatcher(this.ctx, new Authenticator(catalog), () => this.closing);
  }

  /** Open the catalog, reconcile, start polling and listen. */
  static async start(config: ControllerConfig, log: Logger = createLogger('boxback-controller')): Promise<ControllerServer> {
    const catalog = await openCatalog(config, log);
    const leadership =
      config.catalogKind === 'postgres'
        ? new PgLeadership(pgOptions(config), config.leaderRetrySeconds * 1000, log.child({ part: 'leadership' }))
        : new SoleLeadership();
    const s = new ControllerServer(config, catalog, log, leadership);
    try {
      await leadership.start({ onLead: () => s.lead(), onLose: () => s.follow() });
      await s.listen();
    } catch (err) {
      await leadership.stop().catch(() => undefined);
      await catalog.close();
      throw err;
    }
    log.info({ controller: leadership.id, leader: leadership.leader() || '(none yet)' }, 'controller started');
    s.ctx.monitor.start(config.pollSeconds);
    s.ctx.notifications.start(config.atRiskCheckSeconds, () => s.ctx.monitor.status(false), log);
    if (config.metricsListen) {
      s.metrics = new MetricsFeed(catalog, s.ctx.monitor, config.defaultRpoSeconds, log);
      const feed = s.metrics;
      s.ctx.jobs.onFinish(() => void feed.refresh());
      try {
        s.metricsPort = await s.metrics.start(config.metricsListen);
      } catch (err) {
        await s.shutdown();
        throw new BoxbackError(
          'BOXBACK_ERR_CONFIG_INVALID',
          `metrics.listen: cannot listen on ${config.metricsListen}: ${(err as Error).message}`,
        );
      }
      log.info({ listen: config.metricsListen, port: s.metricsPort }, 'metrics listening');
    }
    if (config.httpListen) await s.startDashboard(config.httpListen);
    return s;
  }

  private async startDashboard(listen: string): Promise<void> {
    const { config, log } = this.ctx;
    this.dashboard = new Dashboard(
      this.dispatcher,
      { listen, tls: config.tls, sessionSeconds: config.httpSessionSeconds, defaultRpoSeconds: config.defaultRpoSeconds },
      log.child({ part: 'dashboard' }),
    );
    try {
      this.httpPort = await this.dashboard.start();
    } catch (err) {
      await this.shutdown();
      if (err instanceof BoxbackError) throw err;
      throw new BoxbackError('BOXBACK_ERR_CONFIG_INVALID', `http.listen: cannot listen on ${listen}: ${(err as Error).message}`);
    }
    log.info({ listen, port: this.httpPort, url: `https://${listen.replace(/:\d+$/, '')}:${this.httpPort}/` }, 'dashboard listening');
  }

  /** Became the leader: reconcile, then fire schedules (and with PostgreSQL, sweep orphans and retention). */
  private async lead(): Promise<void> {
    const epoch = ++this.leaderEpoch;
    const still = () => epoch === this.leaderEpoch && this.leadership.isLeader() && !this.closing;
    // a lost (or new) catalog is rebuilt from the store before anything reads it (store-scan.ts)
    const scanned = await scanIfCatalogEmpty(this.agreement).catch((err) => {
      this.ctx.log.warn({ err }, 'catalog rebuild from the store failed');
      return undefined;
    });
    const n = await this.reconcile();
    if (n) this.ctx.log.info({ jobs: n }, 'reconciled jobs left by a previous run');
    if (!scanned) void reconcileStore(this.agreement).catch((err) => this.ctx.log.warn({ err }, 'store reconcile failed'));
    if (!still()) return;
    await this.ctx.schedules.start();
    if (!still()) {
      // lost while starting (a newer lead() restarts the Scheduler itself)
      if (!this.leadership.isLeader() || this.closing) this.ctx.schedules.stop();
      return;
    }
    const every = (ms: number, fn: () => Promise<unknown>) => {
      const t = setInterval(() => {
        if (still()) void fn().catch((err) => this.ctx.log.warn({ err }, 'leader sweep failed'));
      }, ms);
      t.unref();
      this.leaderTimers.push(t);
    };
    every(STORE_SWEEP_MS, () => reconcileStore(this.agreement));
    if (this.ctx.config.catalogKind !== 'postgres') return;
    every(ORPHAN_SWEEP_MS, async () => {
      if (this.sweeping) return;
      this.sweeping = true;
      try {
        const k = await this.reconcile();
        if (k) this.ctx.log.info({ jobs: k }, 'reconciled jobs of a controller that is gone');
      } finally {
        this.sweeping = false;
      }
    });
    if (this.ctx.config.retention) {
      const sweep = () => this.ctx.retention.prune({ dryRun: false, by: 'leader sweep' });
      every(RETENTION_SWEEP_MS, sweep);
      void sweep().catch((err) => this.ctx.log.warn({ err }, 'retention sweep failed'));
    }
  }

  /** Lost the leadership: stop firing schedules and sweeping at once (jobs already running go on). */
  private follow(): void {
    this.leaderEpoch++;
    this.ctx.schedules.stop();
    for (const t of this.leaderTimers) clearInterval(t);
    this.leaderTimers = [];
  }

  /** Reconcile Queued/Running jobs that no live controller runs. */
  private reconcile(): Promise<number> {
    const { catalog, agents, jobs, log } = this.ctx;
    return reconcileJobs({
      catalog,
      agents,
      jobs,
      log,
      store: this.ctx.store,
      skip: async (row) => jobs.activeJobs().some((a) => a.row.id === row.id) || (await this.leadership.isAlive(row.owner ?? '')),
    });
  }

  private async listen(): Promise<void> {
    const { ControllerService } = loadServices();
    this.server.addService(memoizedDefinition(ControllerService.service), grpcImplementation(this.dispatcher));
    this.health.addToServer(this.server);
    const creds = serverCredentials(this.ctx.config.tls, false);
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(this.ctx.config.listen, creds, (err, port) => {
        if (err)
          reject(new BoxbackError('BOXBACK_ERR_CONFIG_INVALID', `listen: cannot listen on ${this.ctx.config.listen}: ${err.message}`));
        else resolve(port);
      }),
    );
    this.health.setStatus('', 'SERVING');
    this.health.setStatus(SERVICE_NAME, 'SERVING');
    this.ctx.log.info({ listen: this.ctx.config.listen, port: this.port }, 'controller listening');
  }

  /** SIGTERM: stop taking calls, let jobs finish within the grace period, close everything. */
  async shutdown(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const log = this.ctx.log;
    log.info('shutting down');
    if (this.metrics) this.metrics.serving = false;
    this.health.setStatus('', 'NOT_SERVING');
    this.health.setStatus(SERVICE_NAME, 'NOT_SERVING');
    this.follow();
    await this.leadership.stop();
    await this.ctx.jobs.shutdown(this.ctx.config.shutdownGraceSeconds * 1000);
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        log.warn('calls still open after 5 s; closing them');
        this.server.forceShutdown();
        resolve();
      }, 5_000);
      this.server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
    await this.ctx.monitor.stop();
    await this.metrics?.close();
    await this.dashboard?.close();
    await this.ctx.notifications.stop();
    this.ctx.agents.closeAll();
    await this.ctx.catalog.close();
    log.info('stopped');
  }
}
