/**
 * Retention in the daemon: the pure plan of policy/retention.ts applied to the catalog.
 *
 * Which policy a host gets: `retention.hosts[name]`, else `retention.groups[its group]`, else
 * `retention.default`, else none (an empty policy keeps everything). Backups made by a schedule
 * are "automated" and thinned by the tiers; CLI/API-made and imported ones are "manual".
 *
 * After every successful backup of a host (JobRunner finish listener):
 *   1. plan that host's backups with its policy (damaged ones age by the wall clock, read here
 *      and handed to the pure plan);
 *   2. delete each forgotten backup (by its agent, else locally; then the catalog row),
 *      one at a time, skipping one a restore is reading;
 *   3. audit each deletion as actor "retention" with the reason; a damaged backup deleted
 *      because its keepDamagedDays passed also sends the "damaged" webhook.
 * `prune()` (RPC PruneBackups, `boxback backups prune`) does the same for one host or all, or
 * with dryRun only returns the plan. After a run that is not a dry run, a store that frees
 * bytes only in its own prune (S3) is pruned: when something was deleted, else once a day. Runs are serialized: two never delete concurrently.
 * The plan never forgets the newest Restorable backup of a host (see policy/retention.ts).
 */
import { asBoxbackError, type JobResult, type Logger } from '@boxback/common';
import type { BackupRow, Catalog, HostRow, JobRow } from './catalog/types.js';
import type { RetentionConfig } from './config.js';
import type { Notifications } from './notifications.js';
import { removeBackup, type DeleteCtx } from './handlers.js';
import { planRetention, type RetentionPolicy } from './policy/retention.js';

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

export interface PruneResult {
  items: PruneItem[];
  deleted: number;
  freedBytes: number;
  dryRun: boolean;
}

export class RetentionRunner {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly d: DeleteCtx & { config: { retention?: RetentionConfig }; notifications?: Notifications },
    private readonly log: Logger,
  ) {}

  /** Marks Restorable backups missing from the store (store-agreement.ts); returns how many. */
  checkPresence?: (backups: Iterable<BackupRow>) => Promise<number>;

  private get catalog(): Catalog {
    return this.d.catalog;
  }

  /** The policy for a host and where it came from ("host", "group G", "default" or "none"). */
  policyFor(name: string, host: HostRow | undefined): { policy: RetentionPolicy; source: string } {
    const r = this.d.config.retention;
    if (r?.hosts[name]) return { policy: r.hosts[name], source: 'host' };
    if (host?.group && r?.groups[host.group]) return { policy: r.groups[host.group], source: `group ${host.group}` };
    if (r?.default) return { policy: r.default, source: 'default' };
    return { policy: {}, source: 'none' };
  }

  /** Finish listener: apply retention to the host of a backup job that Completed. */
  onJobFinished(row: JobRow, result: JobResult): void {
    if (row.kind !== 'backup' || result.status !== 'Completed' || !this.d.config.retention) return;
    void this.prune({ host: row.host, dryRun: false, by: `after ${row.id}` }).catch((err) =>
      this.log.error({ err, host: row.host }, 'retention after a backup failed'),
    );
  }

  /** Plan (and unless dryRun, apply) retention for one host or every host with backups. */
  prune(o: { host?: string; dryRun: boolean; by: string; pruneStore?: boolean }): Promise<PruneResult> {
    const run = this.chain.then(() => this.pruneNow(o));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async pruneNow(o: { host?: string; dryRun: boolean; by: string; pruneStore?: boolean }): Promise<PruneResult> {
    let all = await this.catalog.listBackups(o.host);
    // a Restorable backup that vanished from the store must not count as a host's newest good one
    if (this.checkPresence && (await this.checkPresence(all))) all = await this.catalog.listBackups(o.host);
    const byHost = new Map<string, BackupRow[]>();
    for (const b of all) (byHost.get(b.host) ?? byHost.set(b.host, []).get(b.host)!).push(b);
    const out: PruneResult = { items: [], deleted: 0, freedBytes: 0, dryRun: o.dryRun };
    for (const name of [...byHost.keys()].sort()) {
      const backups = byHost.get(name)!;
      const { policy, source } = this.policyFor(name, await this.catalog.getHost(name));
      const plan = planRetention(
        backups.map((b) => ({
          id: b.id,
          host: b.host,
          createdAtMs: b.createdAtMs,
          restorable: b.restorable,
          manual: b.initiatedVia !== 'schedule',
          status: b.status,
          damagedAtMs: b.status === 'Completed' && b.verifyFailed ? b.verifiedAtMs || b.createdAtMs : 0,
          drillPassedAtMs: b.drillPassedAtMs,
          pinned: b.pinned,
        })),
        policy,
        this.d.config.retention?.timezone ?? 'UTC',
        Date.now(),
      );
      const byId = new Map(backups.map((b) => [b.id, b]));
      const items = new Map<string, PruneItem>();
      const item = (id: string, keep: boolean, reasons: string[]): PruneItem => {
        const b = byId.get(id)!;
        return {
          id,
          host: b.host,
          createdAtMs: b.createdAtMs,
          keep,
          reasons,
          deleted: false,
          freedBytes: 0,
          error: '',
          initiatedVia: b.initiatedVia,
        };
      };
      for (const k of plan.keep) items.set(k.id, item(k.id, true, k.reasons));
      for (const f of plan.forget) items.set(f.id, item(f.id, false, [f.reason]));
      if (!o.dryRun && plan.forget.length) {
        this.log.info({ host: name, policy: source, forget: plan.forget.length, keep: plan.keep.length, by: o.by }, 'applying retention');
      }
      for (const f of o.dryRun ? [] : plan.forget) await this.deleteOne(byId.get(f.id)!, items.get(f.id)!, source, o.by, out);
      out.items.push(...backups.map((b) => items.get(b.id)!));
    }
    if (!o.dryRun) await this.pruneStore(out.deleted > 0 || Boolean(o.pruneStore), o.by);
    return out;
  }

  private lastStorePruneMs = 0;

  /**
   * An object store frees the bytes of deleted backups (and of interrupted ones) only in its
   * own prune: run it after retention deleted something (or an operator's prune asked), and at
   * least once a day otherwise.
   * Audited as actor "retention"; a failure is logged and audited, never thrown (the next run tries again).
   */
  private async pruneStore(now: boolean, by: string): Promise<void> {
    const store = this.d.store;
    if (!store.prune || (!now && Date.now() - this.lastStorePruneMs < 86_400_000)) return;
    this.lastStorePruneMs = Date.now();
    let result = 'ok';
    let detail: string;
    try {
      const r = await store.prune();
      detail = `freed ${r.deletedBytes} bytes (${by})`;
      this.log.info({ store: store.describe().location, deletedBytes: r.deletedBytes, by }, 'store pruned');
    } catch (err) {
      const be = asBoxbackError(err);
      result = be.code;
      detail = `${be.message} (${by})`;
      this.log.warn({ err: be.message }, 'the store prune failed; the next retention run tries again');
    }
    try {
      await this.catalog.appendAudit({
        atMs: Date.now(),
        who: 'retention',
        action: 'PruneStore',
        target: store.describe().location,
        result,
        detail,
      });
    } catch (err) {
      this.log.error({ err }, 'writing the audit log failed');
    }
  }

  private async deleteOne(b: BackupRow, it: PruneItem, source: string, by: string, out: PruneResult): Promise<void> {
    let result = 'ok';
    try {
      it.freedBytes = await removeBackup(this.d, b);
      it.deleted = true;
      out.deleted++;
      out.freedBytes += it.freedBytes;
    } catch (err) {
      const be = asBoxbackError(err);
      it.error = be.message;
      result = be.code;
      this.log.warn({ backupId: b.id, err: be.message }, 'retention could not delete a backup');
    }
    if (it.deleted && it.reasons.includes('damaged-expired'))
      this.d.notifications?.damaged(b, `damaged backup ${b.id} deleted by retention: its keepDamagedDays passed (${b.errorMessage})`);
    try {
      await this.catalog.appendAudit({
        atMs: Date.now(),
        who: 'retention',
        action: 'DeleteBackup',
        target: b.id,
        result,
        detail: `${it.reasons.join(',')} (policy: ${source}; ${by})${it.deleted ? `, freed ${it.freedBytes} bytes` : ''}`,
      });
    } catch (err) {
      this.log.error({ err }, 'writing the audit log failed');
    }
  }
}
