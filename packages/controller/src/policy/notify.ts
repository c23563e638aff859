/**
 * Webhook notifications: a JSON POST on failure, on a host turning at-risk, on a backup found
 * damaged (a verification failed; retention keeps it, then deletes it after keepDamagedDays,
 * which is reported again), and (opt-in) on success.
 *
 * Flow of one `notify()`:
 *   1. Events the config does not list are dropped ("filtered").
 *   2. An at-risk event for a host already reported at-risk is dropped ("deduped") until the host
 *      recovers: `recovered(host)`, `setAtRisk(host, false)`, or a success event for it.
 *   3. POST `{event, host, jobId, backupId, status, error, message, at}` with a per-attempt timeout
 *      (AbortSignal.timeout). Network errors, timeouts, 408, 429 and 5xx are retried after
 *      backoffSeconds * 2^i, up to `retries` more times; other 4xx answers are final.
 *   4. Whatever happens, the promise resolves with an outcome and never rejects: a notification
 *      must never fail a backup. A delivery that failed is logged, and an at-risk one is forgotten
 *      so that the next at-risk report tries again.
 * The URL may carry a secret (Slack-style hooks): logs show its origin only.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { Logger } from '@boxback/common';

export const NOTIFY_EVENTS = ['failure', 'at-risk', 'success', 'damaged'] as const;
export type NotifyEvent = (typeof NOTIFY_EVENTS)[number];

export const notifierConfigSchema = z
  .object({
    url: z.url({ protocol: /^https?$/, error: 'want an http:// or https:// URL' }),
    events: z.array(z.enum(NOTIFY_EVENTS)).min(1).default(['failure', 'at-risk', 'damaged']),
    /** Per attempt. */
    timeoutSeconds: z.number().positive().max(300).default(10),
    /** Retries after the first attempt. */
    retries: z.number().int().nonnegative().max(10).default(3),
    /** Wait before the first retry; doubled for each further one. */
    backoffSeconds: z.number().nonnegative().max(600).default(2),
    /** Extra request headers, e.g. Authorization. */
    headers: z.record(z.string(), z.string()).optional(),
  })
  .strict();

export type NotifierConfig = z.infer<typeof notifierConfigSchema>;
export type NotifierConfigInput = z.input<typeof notifierConfigSchema>;

export interface NotificationInput {
  event: NotifyEvent;
  host: string;
  jobId?: string | null;
  backupId?: string | null;
  /** Job or backup status: Completed, Failed, PartiallyFailed... */
  status?: string | null;
  error?: string | null;
  /** A line for a person ("no Restorable backup for 26h, RPO 24h"). */
  message?: string | null;
}

/** The JSON body POSTed. Every key is always present (null when unknown). */
export interface NotificationPayload {
  event: NotifyEvent;
  host: string;
  jobId: string | null;
  backupId: string | null;
  status: string | null;
  error: string | null;
  message: string | null;
  /** ISO 8601 UTC. */
  at: string;
}

export type NotifyOutcome = 'sent' | 'filtered' | 'deduped' | 'failed';

export interface NotifierOptions {
  log?: Logger;
  /** Injected for tests; default: global fetch. */
  fetch?: typeof fetch;
  now?: () => number;
}

const RETRYABLE_STATUS = (s: number): boolean => s === 408 || s === 429 || s >= 500;

export class Notifier {
  readonly config: NotifierConfig;
  /** Hosts reported at-risk (or being reported) and not recovered since. */
  private readonly atRisk = new Set<string>();
  private readonly inFlight = new Set<Promise<NotifyOutcome>>();
  private readonly fetchFn: typeof fetch;
  private readonly now: () => number;

  constructor(
    config: NotifierConfigInput | NotifierConfig,
    private readonly opts: NotifierOptions = {},
  ) {
    this.config = notifierConfigSchema.parse(config);
    this.fetchFn = opts.fetch ?? fetch;
    this.now = opts.now ?? Date.now;
  }

  /** Send one notification (see the header). Never rejects. */
  notify(n: NotificationInput): Promise<NotifyOutcome> {
    if (n.event === 'success') this.atRisk.delete(n.host);
    if (!this.config.events.includes(n.event)) return Promise.resolve('filtered');
    if (n.event === 'at-risk') {
      if (this.atRisk.has(n.host)) return Promise.resolve('deduped');
      this.atRisk.add(n.host);
    }
    const p = this.deliver(this.payload(n)).then(
      (ok) => {
        if (!ok && n.event === 'at-risk') this.atRisk.delete(n.host);
        return ok ? ('sent' as const) : ('failed' as const);
      },
      () => 'failed' as const,
    );
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
    return p;
  }

  /** Report a host's at-risk state at every status poll: notifies once per at-risk spell. */
  setAtRisk(host: string, atRisk: boolean, detail: Omit<NotificationInput, 'event' | 'host'> = {}): Promise<NotifyOutcome | 'unchanged'> {
    if (!atRisk) {
      this.recovered(host);
      return Promise.resolve('unchanged');
    }
    return this.notify({ ...detail, event: 'at-risk', host });
  }

  /** The host is no longer at risk: its next at-risk spell is notified again. */
  recovered(host: string): void {
    this.atRisk.delete(host);
  }

  /** Hosts currently considered notified as at-risk. */
  atRiskHosts(): string[] {
    return [...this.atRisk].sort();
  }

  /** Resolves when every notification under way has been delivered or given up. */
  async whenIdle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  private payload(n: NotificationInput): NotificationPayload {
    return {
      event: n.event,
      host: n.host,
      jobId: n.jobId ?? null,
      backupId: n.backupId ?? null,
      status: n.status ?? null,
      error: n.error ?? null,
      message: n.message ?? null,
      at: new Date(this.now()).toISOString(),
    };
  }

  /** POST with retries; true when the endpoint answered 2xx. */
  private async deliver(body: NotificationPayload): Promise<boolean> {
    const { retries, backoffSeconds, timeoutSeconds } = this.config;
    const target = safeOrigin(this.config.url);
    let last = '';
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (attempt > 0) await sleep(backoffSeconds * 1000 * 2 ** (attempt - 1));
      try {
        const res = await this.fetchFn(this.config.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'boxback-controller', ...this.config.headers },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(timeoutSeconds * 1000),
        });
        await res.arrayBuffer().catch(() => undefined); // free the connection
        if (res.ok) {
          this.opts.log?.debug({ target, event: body.event, host: body.host, attempt: attempt + 1 }, 'webhook delivered');
          return true;
        }
        last = `HTTP ${res.status}`;
        if (!RETRYABLE_STATUS(res.status)) break;
      } catch (e) {
        last = e instanceof Error ? (e.name === 'TimeoutError' ? `timed out after ${timeoutSeconds}s` : e.message) : String(e);
      }
      this.opts.log?.warn({ target, event: body.event, host: body.host, attempt: attempt + 1, error: last }, 'webhook attempt failed');
    }
    this.opts.log?.error({ target, event: body.event, host: body.host, error: last }, 'webhook notification not delivered');
    return false;
  }
}

function safeOrigin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '(bad url)';
  }
}
