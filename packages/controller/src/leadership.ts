/**
 * Leadership: which controller fires schedules, applies retention and reconciles jobs.
 * See docs/design/catalog-postgres.md.
 *
 * SQLite: one controller per catalog file, always the leader (SoleLeadership).
 *
 * PostgreSQL (PgLeadership), on a dedicated connection (never a pooled one: a session-level
 * advisory lock belongs to the session that took it):
 *   1. connect; ask the server to end the session when it has been idle for `idleMs`
 *      (idle_session_timeout: a leader cut off by a network partition loses its lock after
 *      that) and take this controller's liveness lock (LOCK_NS_LIVE, hashtext(id));
 *   2. every `retryMs`: a follower tries pg_try_advisory_lock(LOCK_NS, LOCK_LEADER) (and
 *      reads who holds it, for status); a leader checks its connection with SELECT 1, which
 *      must answer within `retryMs + 1 s`;
 *   3. lock taken: onLead() (reconcile, start the scheduler), while the checks of step 2 go
 *      on; if it fails, the connection is dropped (which releases the lock) and step 2 goes on;
 *   4. the connection fails, ends or the check times out: onLose() at once (the scheduler
 *      stops), the connection is dropped, and step 1 is tried again at the next interval.
 * The leader stops after at most retryMs + 1 s without an answer, well before the server ends
 * its idle session (idleMs, at least 10 s): two leaders never fire at once, and the
 * jobs_one_per_slot index refuses a second job for a slot even if they did.
 * When the leader process dies its session ends and the server releases the lock: a follower
 * takes over within retryMs (plus its connect time).
 */
import os from 'node:os';
import pg from 'pg';
import type { Logger } from '@boxback/common';
import { LOCK_LEADER, LOCK_NS, LOCK_NS_LIVE, pgClientConfig, type PgConnectOptions } from './catalog/postgres.js';

export interface LeadershipHooks {
  /** Became the leader: start leader-only work. A rejection gives the leadership up. */
  onLead(): Promise<void>;
  /** No longer the leader: stop leader-only work now. */
  onLose(reason: string): void;
}

export interface Leadership {
  /** This controller's id (hostname:pid), also the owner recorded on the jobs it runs. */
  readonly id: string;
  isLeader(): boolean;
  /** The leading controller's id as last seen ('' : none known). */
  leader(): string;
  /** Starts; resolves after the first attempt (a leader has run onLead by then). */
  start(hooks: LeadershipHooks): Promise<void>;
  stop(): Promise<void>;
  /** Whether the controller with this id runs (its jobs are not reconciled by another). */
  isAlive(id: string): Promise<boolean>;
}

export function controllerId(): string {
  return `${os.hostname()}:${process.pid}`;
}

/** The only controller of a SQLite catalog: always the leader. */
export class SoleLeadership implements Leadership {
  readonly id = controllerId();
  isLeader(): boolean {
    return true;
  }
  leader(): string {
    return this.id;
  }
  async start(hooks: LeadershipHooks): Promise<void> {
    await hooks.onLead();
  }
  async stop(): Promise<void> {}
  async isAlive(id: string): Promise<boolean> {
    return id === this.id;
  }
}

const APP_PREFIX = 'boxback-controller ';

export class PgLeadership implements Leadership {
  readonly id = controllerId();
  private client?: pg.Client;
  private leading = false;
  private leaderId = '';
  private hooks?: LeadershipHooks;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private attempting?: Promise<void>;
  private readonly idleMs: number;
  /** The first attempt (start) waits for onLead, as SoleLeadership does. */
  private first = true;

  constructor(
    private readonly opts: PgConnectOptions,
    private readonly retryMs: number,
    private readonly log: Logger,
  ) {
    this.idleMs = Math.max(10_000, 5 * retryMs);
  }

  isLeader(): boolean {
    return this.leading;
  }

  leader(): string {
    return this.leaderId;
  }

  async start(hooks: LeadershipHooks): Promise<void> {
    this.hooks = hooks;
    await this.attempt();
    this.first = false;
    this.arm();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.attempting;
    this.drop('the controller is stopping');
  }

  async isAlive(id: string): Promise<boolean> {
    if (id === this.id) return true;
    if (!id) return false; // jobs from before owners were recorded
    const c = this.client;
    if (!c) return true; // cannot tell: leave its jobs alone
    try {
      const r = await c.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS got', [LOCK_NS_LIVE, id]);
      if (!r.rows[0].got) return true;
      await c.query('SELECT pg_advisory_unlock($1, hashtext($2))', [LOCK_NS_LIVE, id]);
      return false;
    } catch {
      return true;
    }
  }

  private arm(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.attempting = this.attempt().finally(() => {
        this.attempting = undefined;
        this.arm();
      });
    }, this.retryMs);
    this.timer.unref();
  }

  private async connect(): Promise<pg.Client> {
    const c = new pg.Client({
      ...pgClientConfig({ ...this.opts, applicationName: `${APP_PREFIX}${this.id}`.slice(0, 63) }),
      query_timeout: this.retryMs + 1_000,
    });
    c.on('error', (err) => {
      if (this.client === c) this.drop(`the lock connection failed: ${err.message}`);
    });
    c.on('end', () => {
      if (this.client === c) this.drop('the lock connection closed');
    });
    try {
      await c.connect();
      await c.query(`SET idle_session_timeout = ${this.idleMs}`);
      await c.query('SELECT pg_try_advisory_lock($1, hashtext($2))', [LOCK_NS_LIVE, this.id]);
    } catch (err) {
      await c.end().catch(() => undefined);
      throw err;
    }
    this.client = c;
    return c;
  }

  private async attempt(): Promise<void> {
    if (this.stopped) return;
    let c: pg.Client;
    try {
      c = this.client ?? (await this.connect());
      if (this.leading) {
        await c.query('SELECT 1');
        return;
      }
      const r = await c.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS got', [LOCK_NS, LOCK_LEADER]);
      if (!r.rows[0].got) {
        this.leaderId = await this.currentLeader(c);
        return;
      }
    } catch (err) {
      if (this.leading || this.client) this.drop(`the lock connection failed: ${(err as Error).message}`);
      else this.log.warn({ err: (err as Error).message }, 'cannot reach the catalog for the leadership; retrying');
      return;
    }
    this.leading = true;
    this.leaderId = this.id;
    this.log.info({ controller: this.id }, 'leading: this controller runs schedules, retention and reconciliation');
    // Not awaited: the connection checks go on while the leader starts (reconciliation may take a while).
    const lead = this.hooks?.onLead() ?? Promise.resolve();
    if (this.first) {
      this.first = false;
      this.arm(); // the checks go on during the first onLead too
      await lead.catch(() => undefined);
    }
    lead.catch((err: unknown) => {
      if (!this.leading) return;
      this.log.error({ err }, 'starting as the leader failed; giving the leadership up');
      this.drop('starting as the leader failed');
    });
  }

  private async currentLeader(c: pg.Client): Promise<string> {
    const r = await c.query<{ app: string }>(
      `SELECT a.application_name AS app FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 2 AND l.granted
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      [LOCK_NS, LOCK_LEADER],
    );
    const app = r.rows[0]?.app ?? '';
    return app.startsWith(APP_PREFIX) ? app.slice(APP_PREFIX.length) : app;
  }

  /** Forget the connection (ending it releases every lock it holds) and stop leading at once. */
  private drop(reason: string): void {
    const c = this.client;
    this.client = undefined;
    if (c) void c.end().catch(() => undefined);
    if (this.leading) {
      this.leading = false;
      this.leaderId = '';
      this.log.warn({ reason }, 'no longer leading: schedules and retention stopped here');
      this.hooks?.onLose(reason);
    }
  }
}
