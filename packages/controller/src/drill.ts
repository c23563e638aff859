/**
 * Restore drills: proving a host's backup restores, on another box, and timing it.
 *
 * A drill of host H onto drill host D (RunDrill, `boxback drill run`, a schedule of kind drill):
 *   1. take H's newest Restorable backup (refuse when there is none, or when D is H itself:
 *      a drill never overwrites the production box);
 *   2. queue a normal restore job of it onto D, of kind "drill" (D's host files get D's
 *      addresses; the agent verifies, restores, starts the services and runs the plan's
 *      health check, rolling back on failure);
 *   3. when the agent's result arrives, before the job is recorded: write the result and the
 *      restore's duration on the backup (drill_at_ms, drill_duration_ms, drill_result, and
 *      drill_passed_at_ms when it Completed) and as evidence under the source host (the
 *      `evidence` table, which outlives the backup: `boxback drills`, status, metrics);
 *   4. clean up: a Completed drill is confirmed on D (its safety copies are dropped; the
 *      drilled data stays as D's working copy until the next drill). A RolledBack one already
 *      put D back as it was.
 */
import { BoxbackError, type JobResult, type Logger } from '@boxback/common';
import type { Agents } from './agent-client.js';
import type { BackupRow, Catalog, HostRow, JobRow } from './catalog/types.js';
import type { JobRunner } from './jobs.js';

export class DrillRunner {
  constructor(
    private readonly d: { catalog: Catalog; jobs: JobRunner; agents: Agents },
    private readonly log: Logger,
  ) {}

  private async host(name: string, what: string): Promise<HostRow> {
    if (!name) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `no ${what} named`);
    const h = await this.d.catalog.getHost(name);
    if (!h) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no host "${name}" (${what}): list hosts with \`boxback hosts list\``);
    return h;
  }

  /** Queue a drill of `hostName`'s newest Restorable backup onto `drillHostName`; returns the job at once. */
  async start(hostName: string, drillHostName: string, requestedBy: string): Promise<JobRow> {
    const host = await this.host(hostName, 'host to drill');
    const target = await this.host(drillHostName, 'drill host');
    if (host.name === target.name) {
      throw new BoxbackError(
        'BOXBACK_ERR_INVALID_ARGUMENT',
        `a drill restores onto another box: --on ${target.name} is the host itself; name a spare drill host`,
      );
    }
    const b = await this.d.catalog.lastRestorable(host.name);
    if (!b) {
      throw new BoxbackError(
        'BOXBACK_ERR_NOT_FOUND',
        `host ${host.name} has no Restorable backup to drill: \`boxback backup create --host ${host.name}\` first`,
      );
    }
    return this.d.jobs.createRestore(b, target, {
      dryRun: false,
      force: false,
      requestedBy,
      drill: true,
      afterResult: (r, row) => this.record(b, target, r, row),
    });
  }

  /** Start a drill and wait for it; resolves with the drill job's final row. */
  async run(hostName: string, drillHostName: string, requestedBy: string): Promise<JobRow> {
    const row = await this.start(hostName, drillHostName, requestedBy);
    return (await this.d.jobs.waitFor(row.id)) ?? row;
  }

  private async record(b: BackupRow, target: HostRow, r: JobResult, row: JobRow): Promise<void> {
    const now = Date.now();
    const passed = r.status === 'Completed';
    const durationMs = r.durationMs > 0 ? r.durationMs : now - (row.startedAtMs || now);
    const drillResult = passed ? `passed on ${target.name}` : `${r.status} on ${target.name}: ${r.errorMessage || 'see the job'}`;
    await this.d.catalog.updateBackup(b.id, {
      drillAtMs: now,
      drillDurationMs: durationMs,
      drillResult,
      ...(passed ? { drillPassedAtMs: now } : {}),
    });
    await this.d.catalog.appendEvidence({
      host: b.host,
      kind: 'drill',
      backupId: b.id,
      atMs: now,
      passed,
      durationMs,
      target: target.name,
      jobId: row.id,
      detail: drillResult,
    });
    this.log.info({ backupId: b.id, drillHost: target.name, passed, durationMs, jobId: row.id }, 'restore drill ended');
    if (!passed) return;
    try {
      const c = await this.d.agents.get(target).confirmRestore(row.id);
      this.log.info({ jobId: row.id, removed: c.removed, freedBytes: c.freedBytes }, 'drill cleaned up: safety copies dropped');
    } catch (err) {
      r.warnings = [
        ...r.warnings,
        `the drill passed but its safety copies on ${target.name} were not dropped: ${(err as Error).message}; run \`boxback restore confirm ${row.id}\``,
      ];
    }
  }
}
