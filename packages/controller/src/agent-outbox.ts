/**
 * Results an agent could not deliver (its outbox, agent src/outbox.ts): a backup it published
 * after the controller died or the job stream dropped. The agent counts them in GetInfo
 * (`unsentResults`); when the status poll sees a count (the agent came back, or this
 * controller just started), `collect` runs for that host:
 *   1. UnsentResults: the results, oldest first;
 *   2. a result whose job is still Queued or Running is left for later (the job records it
 *      itself, or reconcile.ts concludes it);
 *   3. the backup is recorded unless the catalog has it (the store reconcile may have adopted
 *      it already): from the result's manifest, else from the store;
 *   4. its job, recorded Failed (the controller lost the stream, or reconcile found no backup),
 *      is corrected: the result's status and backup, and a note in the job's log;
 *   5. AckResults for every result the catalog now holds (the agent drops them).
 * After a backup job it recorded itself, the controller acknowledges at once (`ack`).
 */
import { isErrorCode, type BackupStore, type JobResult, type Logger } from '@boxback/common';
import type { Agents } from './agent-client.js';
import { rowFromResult, rowFromResultInStore } from './backup-record.js';
import type { Catalog, HostRow, JobRow } from './catalog/types.js';
import { isFinal } from './jobs.js';

export interface OutboxDeps {
  catalog: Catalog;
  agents: Agents;
  log: Logger;
  /** The backup store, where a manifest too large for the result is read (absent: the result's manifest only). */
  store?: BackupStore;
}

function viaOf(job: JobRow | undefined): string {
  try {
    return job ? String((JSON.parse(job.paramsJson) as { via?: string }).via ?? 'cli') : 'reconcile';
  } catch {
    return 'cli';
  }
}

export class AgentOutboxes {
  private readonly busy = new Set<string>();

  constructor(private readonly d: OutboxDeps) {}

  /** Tell the agent of `hostName` that the catalog holds these jobs' results (best effort: the next poll retries). */
  ack(hostName: string, jobIds: string[]): void {
    if (!jobIds.length) return;
    void this.d.catalog
      .getHost(hostName)
      .then((host) => (host ? this.d.agents.get(host).ackResults(jobIds) : undefined))
      .catch((err: unknown) =>
        this.d.log.debug({ host: hostName, err: (err as Error).message }, 'outbox ack failed; the next poll retries'),
      );
  }

  /** Take and record what the agent of `host` could not deliver; returns how many results were recorded. */
  async collect(host: HostRow): Promise<number> {
    if (this.busy.has(host.name)) return 0;
    this.busy.add(host.name);
    try {
      const results = await this.d.agents.get(host).unsentResults();
      const held: string[] = [];
      let recorded = 0;
      for (const r of results) {
        try {
          const outcome = await this.record(host, r);
          if (outcome !== 'later') held.push(r.jobId);
          if (outcome === 'recorded') recorded++;
        } catch (err) {
          this.d.log.warn({ err, host: host.name, jobId: r.jobId }, 'an unsent result could not be recorded; the next poll retries');
        }
      }
      if (held.length) await this.d.agents.get(host).ackResults(held);
      return recorded;
    } finally {
      this.busy.delete(host.name);
    }
  }

  private async record(host: HostRow, r: JobResult): Promise<'later' | 'known' | 'recorded'> {
    const { catalog, log } = this.d;
    const job = await catalog.getJob(r.jobId);
    if (job && !isFinal(job.state)) return 'later';
    let backup = (await catalog.listBackups(host.name)).find((b) => b.path === r.backupPath);
    let outcome: 'known' | 'recorded' = 'known';
    if (!backup) {
      const row = this.d.store ? await rowFromResultInStore(this.d.store, host.name, r.jobId, r) : rowFromResult(host.name, r.jobId, r);
      if (!row) throw new Error(`the result of job ${r.jobId} names no readable backup (${r.backupPath})`);
      backup = await catalog.putBackup({ ...row, initiatedVia: viaOf(job) });
      outcome = 'recorded';
      log.warn(
        { host: host.name, jobId: r.jobId, backupId: backup.id },
        'recorded a backup its agent reported after the job stream was lost',
      );
    }
    if (job && job.kind === 'backup' && job.state === 'Failed' && !job.backupId) {
      const was = job.errorCode ? `${job.errorCode}: ${job.errorMessage}` : job.errorMessage;
      const status = r.status === 'PartiallyFailed' || r.warnings.length ? 'PartiallyFailed' : 'Completed';
      await catalog.updateJob(job.id, {
        state: status,
        errorCode: isErrorCode(r.errorCode) ? r.errorCode : '',
        errorMessage: r.errorMessage,
        backupId: backup.id,
        warningCount: r.warnings.length,
      });
      await catalog.appendJobEvent({
        jobId: job.id,
        atMs: Date.now(),
        phase: '',
        state: status,
        message: `corrected by the agent's report: ${host.name} published backup ${backup.id} for this job after it was recorded Failed (${was})`,
      });
      log.warn({ host: host.name, jobId: job.id, backupId: backup.id }, 'job corrected from its agent outbox');
      outcome = 'recorded';
    }
    return outcome;
  }
}
