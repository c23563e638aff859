/**
 * Webhooks in the daemon: one Notifier (policy/notify.ts) per configured `notify.webhooks`
 * entry, fed from three places:
 *   1. every ended job (JobRunner finish listener): Failed or RolledBack -> "failure";
 *      a Completed backup -> "success" (delivered only to hooks that list it; it also ends a
 *      host's at-risk spell so the next one is reported again);
 *   2. every status computation (GetStatus, `boxback status`): each host's at-risk flag;
 *   3. a timer every `notify.atRiskCheckSeconds`, which computes the status itself, so an
 *      RPO passing is reported even when nobody looks;
 *   4. a verification that found a backup damaged, and retention deleting a damaged backup
 *      whose keepDamagedDays passed: "damaged".
 * A Notifier never rejects and dedupes at-risk per spell; nothing here can fail a job.
 */
import type { JobResult, Logger } from '@boxback/common';
import type { BackupRow, JobRow } from './catalog/types.js';
import { Notifier, type NotificationInput, type NotifierConfig } from './policy/notify.js';

export interface AtRiskInput {
  host: string;
  atRisk: boolean;
  lastGoodBackupId: string;
  lastGoodAgeSeconds: number;
  rpoSeconds: number;
  /** When the backup data behind this verdict was read (ms since the epoch). */
  asOfMs?: number;
}

export class Notifications {
  readonly notifiers: Notifier[];
  private timer?: NodeJS.Timeout;
  /** Per host, when its last backup completed: an at-risk verdict from older data is stale. */
  private readonly succeededAt = new Map<string, number>();

  constructor(webhooks: readonly NotifierConfig[], log: Logger) {
    this.notifiers = webhooks.map((w) => new Notifier(w, { log }));
  }

  get enabled(): boolean {
    return this.notifiers.length > 0;
  }

  private send(n: NotificationInput): void {
    for (const x of this.notifiers) void x.notify(n);
  }

  onJobFinished(row: JobRow, result: JobResult): void {
    if (!this.enabled) return;
    const base = { host: row.host, jobId: row.id, backupId: result.backupId || row.backupId || null, status: result.status };
    if (result.status === 'Failed' || result.status === 'RolledBack') {
      this.send({
        ...base,
        event: 'failure',
        error: result.errorMessage || result.errorCode || null,
        message: `${row.kind} job ${row.id} on ${row.host} ended ${result.status}${result.errorMessage ? `: ${result.errorMessage}` : ''}`,
      });
    } else if (result.status === 'Completed' && row.kind === 'backup') {
      this.succeededAt.set(row.host, Date.now());
      this.send({ ...base, event: 'success', message: `backup of ${row.host} completed: ${result.backupId}` });
    }
  }

  /** A backup found damaged (or deleted as such): event "damaged". */
  damaged(b: Pick<BackupRow, 'id' | 'host' | 'errorMessage'>, message: string): void {
    if (!this.enabled) return;
    this.send({ event: 'damaged', host: b.host, backupId: b.id, status: 'Damaged', error: b.errorMessage || null, message });
  }

  /** One host's at-risk flag as status computed it (notified once per at-risk spell). */
  report(h: AtRiskInput): void {
    if (!this.enabled) return;
    // A status computed from data read before the host's last successful backup would
    // start a false at-risk spell right after the success ended the previous one.
    if (h.atRisk && h.asOfMs !== undefined && h.asOfMs < (this.succeededAt.get(h.host) ?? 0)) return;
    const age = h.lastGoodAgeSeconds < 0 ? 'no Restorable backup at all' : `newest Restorable backup is ${h.lastGoodAgeSeconds}s old`;
    for (const n of this.notifiers) {
      void n.setAtRisk(h.host, h.atRisk, {
        backupId: h.lastGoodBackupId || null,
        message: `${h.host} is at risk: ${age}, RPO ${h.rpoSeconds}s`,
      });
    }
  }

  /** Evaluate at-risk every `seconds` with `check` (which computes the status and reports). */
  start(seconds: number, check: () => Promise<unknown>, log: Logger): void {
    if (!this.enabled) return;
    this.timer = setInterval(() => {
      check().catch((err) => log.warn({ err }, 'at-risk check failed'));
    }, seconds * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    // deliveries under way get a few seconds; a webhook never holds a shutdown for long
    let t: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(this.notifiers.map((n) => n.whenIdle())), new Promise((r) => (t = setTimeout(r, 3_000)))]);
    clearTimeout(t);
  }
}
