/**
 * Fleet status. A monitor asks every agent for its info every `pollSeconds` (bounded
 * parallelism), keeps the answers in memory and records plan, versions and last-seen in
 * the catalog. GetStatus answers from that memory (fast at hundreds of hosts) unless the
 * caller asks for a refresh; a host never polled yet is asked inline.
 * At risk: no Restorable backup younger than the host's RPO (or the default RPO).
 */
import { BOXBACK_VERSION, mapLimit, type AgentInfo, type Logger } from '@boxback/common';
import type { AgentClients } from './agent-client.js';
import type { Catalog, HostRow } from './catalog/types.js';
import { backupMsg, hostMsg, jobMsg } from './convert.js';
import type { JobRunner } from './jobs.js';

interface Seen {
  atMs: number;
  info?: AgentInfo;
  error?: string;
}

export class HostMonitor {
  private readonly seen = new Map<string, Seen>();
  private timer?: NodeJS.Timeout;
  private polling?: Promise<void>;

  constructor(
    private readonly catalog: Catalog,
    private readonly agents: AgentClients,
    private readonly jobs: JobRunner,
    private readonly log: Logger,
    private readonly defaultRpoSeconds: number,
  ) {}

  start(pollSeconds: number): void {
    const tick = () => {
      this.polling ??= this.pollAll()
        .catch((err) => this.log.warn({ err }, 'polling agents failed'))
        .finally(() => (this.polling = undefined));
    };
    tick();
    this.timer = setInterval(tick, pollSeconds * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.polling;
  }

  forget(name: string): void {
    this.seen.delete(name);
  }

  last(name: string): Seen | undefined {
    return this.seen.get(name);
  }

  async pollAll(): Promise<void> {
    const hosts = await this.catalog.listHosts();
    await mapLimit(hosts, 32, (h) => this.poll(h));
  }

  /** Ask one agent; remember the answer; record what it reports in the catalog. */
  async poll(h: HostRow, deadlineMs = 3_000): Promise<Seen> {
    const now = Date.now();
    try {
      const info = await this.agents.get(h).getInfo(deadlineMs);
      const s: Seen = { atMs: now, info };
      this.seen.set(h.name, s);
      await this.catalog.updateHost(h.name, {
        planName: info.planName,
        product: info.product,
        productVersion: info.productVersion,
        agentVersion: info.agentVersion,
        lastSeenMs: now,
      });
      return s;
    } catch (err) {
      const s: Seen = { atMs: now, error: (err as Error).message };
      this.seen.set(h.name, s);
      return s;
    }
  }

  async status(refresh: boolean) {
    const now = Date.now();
    const hosts = await this.catalog.listHosts();
    const out = await mapLimit(hosts, 32, async (h) => {
      let s = this.seen.get(h.name);
      if (!s || refresh) s = await this.poll(h, refresh ? 3_000 : 1_500);
      const fresh = (await this.catalog.getHost(h.name)) ?? h;
      const last = await this.catalog.lastRestorable(h.name);
      const ageS = last ? Math.max(0, Math.floor((now - last.createdAtMs) / 1000)) : -1;
      const rpo = h.rpoSeconds > 0 ? h.rpoSeconds : this.defaultRpoSeconds;
      const running = this.jobs.activeJobFor(h.name);
      const copies = s.info?.safetyCopies ?? [];
      return {
        host: hostMsg(fresh),
        reachable: Boolean(s.info),
        unreachableReason: s.error ?? '',
        runningJob: running ? jobMsg(running.row, running.progress) : null,
        lastGoodBackup: last ? backupMsg(last) : null,
        lastGoodAgeSeconds: ageS,
        nextRunMs: 0,
        atRisk: !last || ageS > rpo,
        safetyCopies: copies.length,
        safetyCopyBytes: copies.reduce((n, c) => n + Number(c.sizeBytes), 0),
      };
    });
    return {
      hosts: out,
      totalHosts: out.length,
      reachableHosts: out.filter((h) => h.reachable).length,
      atRiskHosts: out.filter((h) => h.atRisk).length,
      runningJobs: this.jobs.activeJobs().filter((a) => a.row.state === 'Running').length,
      controllerVersion: BOXBACK_VERSION,
      atMs: now,
    };
  }
}
