/**
 * The controller daemon's gRPC server: ControllerService over TLS (no client certificate
 * needed; callers present a bearer token) and the standard grpc.health.v1 service.
 *
 * Every call goes through the same steps:
 *   1. refuse when shutting down (UNAVAILABLE, BOXBACK_ERR_SHUTTING_DOWN),
 *   2. authenticate the token, check the role the call needs,
 *   3. run the handler,
 *   4. for mutating calls, append who/what/target/result to the audit log,
 *   5. send the result, or the error as a gRPC status with a boxback error code.
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
import { BoxbackError, asBoxbackError, createLogger, loadServices, serverCredentials, toServiceError, type Logger } from '@boxback/common';
import { AgentClients } from './agent-client.js';
import { Authenticator, requireRole, type Caller, type Need } from './auth.js';
import type { Catalog } from './catalog/types.js';
import { openCatalog, pgOptions } from './catalog/open.js';
import { PgLeadership, SoleLeadership, type Leadership } from './leadership.js';
import type { ControllerConfig } from './config.js';
import * as H from './handlers.js';
import { exportBackup, importBackup } from './import-export.js';
import { cancelJob, jobLogs, listJobs } from './job-control.js';
import { JobRunner } from './jobs.js';
import { reconcileJobs } from './reconcile.js';
import { HostMonitor } from './status.js';
import { backupMsg } from './convert.js';
import { MetricsFeed } from './metrics.js';
import { DrillRunner } from './drill.js';
import { Notifications } from './notifications.js';
import { RetentionRunner } from './retention.js';
import { ScheduleRunner } from './scheduling.js';

// Requests as proto-loader delivers them (every field present, defaults filled in);
// each handler checks the fields it uses.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Req = Record<string, any>;
const SERVICE_NAME = 'boxback.v1.ControllerService';
const ORPHAN_SWEEP_MS = 30_000;
const RETENTION_SWEEP_MS = 10 * 60_000;

const admin = (what: string): Need => ({ role: 'admin', what });
const viewer: Need = { role: 'viewer', what: 'read' };

export class ControllerServer {
  readonly ctx: H.Ctx;
  private readonly server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024 });
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE_NAME]: 'NOT_SERVING' });
  private readonly auth: Authenticator;
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

  private constructor(config: ControllerConfig, catalog: Catalog, log: Logger, leadership: Leadership) {
    this.leadership = leadership;
    const agents = new AgentClients(config.tls);
    const jobs = new JobRunner(catalog, agents, log, config.concurrency, config.store);
    jobs.owner = leadership.id;
    const monitor = new HostMonitor(catalog, agents, jobs, log, config.defaultRpoSeconds);
    const base = { config, catalog, agents, jobs, log };
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
    this.ctx = { ...base, monitor, retention, drills, notifications, schedules };
    this.auth = new Authenticator(catalog);
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
    return s;
  }

  /** Became the leader: reconcile, then fire schedules (and with PostgreSQL, sweep orphans and retention). */
  private async lead(): Promise<void> {
    const epoch = ++this.leaderEpoch;
    const still = () => epoch === this.leaderEpoch && this.leadership.isLeader() && !this.closing;
    const n = await this.reconcile();
    if (n) this.ctx.log.info({ jobs: n }, 'reconciled jobs left by a previous run');
    if (!still()) return;
    await this.ctx.schedules.start();
    if (!still()) {
      // lost while starting (a newer lead() restarts the Scheduler itself)
      if (!this.leadership.isLeader() || this.closing) this.ctx.schedules.stop();
      return;
    }
    if (this.ctx.config.catalogKind !== 'postgres') return;
    const every = (ms: number, fn: () => Promise<unknown>) => {
      const t = setInterval(() => {
        if (still()) void fn().catch((err) => this.ctx.log.warn({ err }, 'leader sweep failed'));
      }, ms);
      t.unref();
      this.leaderTimers.push(t);
    };
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
      store: this.ctx.config.store,
      skip: async (row) => jobs.activeJobs().some((a) => a.row.id === row.id) || (await this.leadership.isAlive(row.owner ?? '')),
    });
  }

  private async listen(): Promise<void> {
    const { ControllerService } = loadServices();
    this.server.addService(ControllerService.service, this.handlers());
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

  private async audit(caller: Caller | undefined, action: string, target: string, result: string, detail = ''): Promise<void> {
    try {
      await this.ctx.catalog.appendAudit({ atMs: Date.now(), who: caller?.name ?? '(unauthenticated)', action, target, result, detail });
    } catch (err) {
      this.ctx.log.error({ err, action }, 'writing the audit log failed');
    }
  }

  private fail(action: string, err: unknown): Partial<grpc.ServiceError> {
    const be = asBoxbackError(err);
    if (be.code === 'BOXBACK_ERR_INTERNAL' || be.code === 'BOXBACK_ERR_CATALOG') this.ctx.log.error({ err, action }, 'call failed');
    else this.ctx.log.debug({ code: be.code, action, msg: be.message }, 'call refused');
    return toServiceError(be);
  }

  private unary(action: string, need: Need, fn: (req: Req, caller: Caller) => Promise<unknown>, target?: (req: Req) => string) {
    return (call: grpc.ServerUnaryCall<Req, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      let caller: Caller | undefined;
      void (async () => {
        try {
          if (this.closing) throw new BoxbackError('BOXBACK_ERR_SHUTTING_DOWN', 'the controller is shutting down; retry in a moment');
          const c = (caller = await this.auth.authenticate(call));
          requireRole(c, need);
          const res = await fn(call.request, c);
          if (target) await this.audit(c, action, target(call.request), 'ok', detailOf(action, res));
          cb(null, res);
        } catch (err) {
          if (target && caller) await this.audit(caller, action, target(call.request), asBoxbackError(err).code);
          cb(this.fail(action, err) as grpc.ServiceError);
        }
      })();
    };
  }

  private stream<T>(
    action: string,
    need: Need,
    fn: (req: Req, caller: Caller, signal: AbortSignal) => AsyncGenerator<T>,
    target?: (req: Req) => string,
  ) {
    return (call: grpc.ServerWritableStream<Req, T>) => {
      let cancelled = false;
      const abort = new AbortController();
      call.on('cancelled', () => {
        cancelled = true;
        abort.abort();
      });
      void (async () => {
        let caller: Caller | undefined;
        try {
          if (this.closing) throw new BoxbackError('BOXBACK_ERR_SHUTTING_DOWN', 'the controller is shutting down; retry in a moment');
          caller = await this.auth.authenticate(call);
          requireRole(caller, need);
          if (target) await this.audit(caller, action, target(call.request), 'ok');
          const it = fn(call.request, caller, abort.signal);
          for await (const item of it) {
            if (cancelled) {
              await it.return(undefined);
              break;
            }
            if (!call.write(item)) await new Promise((r) => call.once('drain', r));
          }
          call.end();
        } catch (err) {
          if (target && caller) await this.audit(caller, action, target(call.request), asBoxbackError(err).code);
          if (!cancelled) call.emit('error', this.fail(action, err));
        }
      })();
    };
  }

  private handlers(): grpc.UntypedServiceImplementation {
    const c = this.ctx;
    const imp = { catalog: c.catalog, store: c.config.store };
    return {
      AddHost: this.unary(
        'AddHost',
        admin('add hosts'),
        (r) => H.addHost(c, r),
        (r) => r.name,
      ),
      ListHosts: this.unary('ListHosts', viewer, (r) => H.listHosts(c, r)),
      RemoveHost: this.unary(
        'RemoveHost',
        admin('remove hosts'),
        (r) => H.removeHost(c, r),
        (r) => r.name,
      ),
      CreateBackup: this.unary('CreateBackup', admin('create backups'), (r, who) => H.createBackup(c, r, who), targetOfCreate),
      ListBackups: this.unary('ListBackups', viewer, (r) => H.listBackups(c, r)),
      GetBackup: this.unary('GetBackup', viewer, (r) => H.getBackup(c, r)),
      RestoreBackup: this.unary(
        'RestoreBackup',
        admin('restore backups'),
        (r, who) => H.restoreBackup(c, r, who),
        (r) => `${r.backupId} -> ${r.targetHost || '(own host)'}${r.dryRun ? ' (dry run)' : ''}`,
      ),
      VerifyBackup: this.unary(
        'VerifyBackup',
        admin('verify backups'),
        (r) => H.verifyBackup(c, r),
        (r) => r.backupId,
      ),
      DeleteBackup: this.unary(
        'DeleteBackup',
        admin('delete backups'),
        (r) => H.deleteBackup(c, r),
        (r) => r.backupId,
      ),
      ImportBackup: this.unary(
        'ImportBackup',
        admin('import backups'),
        async (r) => backupMsg(await importBackup(imp, r.path, r.host), false),
        (r) => r.path,
      ),
      ExportBackup: this.stream(
        'ExportBackup',
        admin('export backups'),
        (r) => this.exportStream(r),
        (r) => r.backupId,
      ),
      ConfirmRestore: this.unary(
        'ConfirmRestore',
        admin('confirm restores'),
        (r) => H.confirmRestore(c, r),
        (r) => r.jobId,
      ),
      GetStatus: this.unary('GetStatus', viewer, (r) => c.monitor.status(Boolean(r.refresh))),
      GetJob: this.unary('GetJob', viewer, (r) => H.getJob(c, r)),
      WatchJob: this.stream('WatchJob', viewer, (r, _who, signal) => c.jobs.watch(r.id, signal)),
      CreateToken: this.unary(
        'CreateToken',
        admin('create tokens'),
        (r) => H.createTokenRpc(c, r),
        (r) => `${r.name} (${r.role || 'viewer'})`,
      ),
      ListTokens: this.unary('ListTokens', admin('list tokens'), () => H.listTokens(c)),
      ListAudit: this.unary('ListAudit', admin('read the audit log'), (r) => H.listAudit(c, r)),
      PruneBackups: this.unary(
        'PruneBackups',
        admin('prune backups'),
        (r, who) => H.pruneBackups(c, r, who),
        (r) => `${r.host || '(all hosts)'}${r.dryRun ? ' (dry run)' : ''}`,
      ),
      RunDrill: this.unary(
        'RunDrill',
        admin('run restore drills'),
        (r, who) => H.runDrill(c, r, who),
        (r) => `${r.host} -> ${r.drillHost}`,
      ),
      ListJobs: this.unary('ListJobs', viewer, (r) => listJobs(c, r)),
      GetJobLogs: this.unary('GetJobLogs', viewer, (r) => jobLogs(c, r)),
      CancelJob: this.unary(
        'CancelJob',
        admin('cancel jobs'),
        (r, who) => cancelJob(c, r, who),
        (r) => r.id,
      ),
    };
  }

  private async *exportStream(r: Req) {
    const b = await H.mustBackup(this.ctx, r.backupId);
    yield* exportBackup(this.ctx.config.store, b);
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
    await this.ctx.notifications.stop();
    this.ctx.agents.closeAll();
    await this.ctx.catalog.close();
    log.info('stopped');
  }
}

function targetOfCreate(r: Req): string {
  if (r.all) return '(all hosts)';
  if (r.group) return `group ${r.group}`;
  return (r.hosts ?? []).join(',');
}

function detailOf(action: string, res: unknown): string {
  const r = res as Record<string, unknown> & { jobs?: { id: string }[]; problems?: string[] };
  if (action === 'CreateBackup') return `jobs ${(r.jobs ?? []).map((j: { id: string }) => j.id).join(',')}`;
  if (action === 'RestoreBackup') return `job ${r.id}`;
  if (action === 'VerifyBackup') return r.ok ? 'ok' : `${r.problems?.length ?? 0} problem(s)`;
  if (action === 'DeleteBackup') return `freed ${r.freedBytes ?? 0} bytes`;
  if (action === 'ImportBackup') return `as ${r.id}`;
  if (action === 'PruneBackups') return r.dryRun ? 'dry run' : `deleted ${r.deleted ?? 0}, freed ${r.freedBytes ?? 0} bytes`;
  if (action === 'RunDrill') return `job ${r.id}`;
  return '';
}
