/**
 * The agent's outbox: results of backups it published that the controller may not have
 * received. The job stream is the normal way a result travels; the outbox covers the moments
 * it cannot (the controller killed or the connection dropped right after PUBLISH, or during a
 * backup that went on without its controller: docs/design/protocol.md "Losing the controller").
 *
 *   1. put: a backup that published writes its result here, before sending it on the stream
 *      (`<stateDir>/outbox/<jobId>.json`: temp name, fsync, rename, fsync of the directory);
 *   2. ack: the controller acknowledges a result once the catalog holds it (AckResults), and
 *      the entry goes;
 *   3. until then GetInfo counts it (unsent_results) and UnsentResults hands it over: the
 *      controller's poll sees the count when the agent comes back or the controller restarts,
 *      records the backup, corrects the job with a note, and acknowledges.
 * An entry older than MAX_AGE_MS is dropped (the store reconcile adopts the backup anyway).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic, type JobResult, type Logger } from '@boxback/common';

export const OUTBOX_DIR = 'outbox';
const MAX_AGE_MS = 30 * 24 * 3600_000;
const SAFE_ID = /^[A-Za-z0-9._-]{1,200}$/;

interface Entry {
  writtenAtMs: number;
  result: JobResult;
}

export class Outbox {
  readonly dir: string;

  constructor(
    stateDir: string,
    private readonly log: Logger,
  ) {
    this.dir = path.join(stateDir, OUTBOX_DIR);
  }

  private file(jobId: string): string | undefined {
    return SAFE_ID.test(jobId) && !jobId.startsWith('.') ? path.join(this.dir, `${jobId}.json`) : undefined;
  }

  /** Keep `result` until the controller acknowledges it (durable before this resolves). */
  async put(result: JobResult): Promise<void> {
    const file = this.file(result.jobId);
    if (!file) throw new Error(`job id ${JSON.stringify(result.jobId)} cannot name an outbox entry`);
    await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const entry: Entry = { writtenAtMs: Date.now(), result };
    await writeFileAtomic(file, JSON.stringify(entry), 0o600);
  }

  private async names(): Promise<string[]> {
    try {
      return (await fsp.readdir(this.dir)).filter((n) => n.endsWith('.json') && !n.startsWith('.'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  /** How many results wait (GetInfo). */
  async count(): Promise<number> {
    return (await this.names()).length;
  }

  /** Every result that waits, oldest first; unreadable and expired entries are dropped (and logged). */
  async list(now = Date.now()): Promise<JobResult[]> {
    const entries: Entry[] = [];
    for (const name of await this.names()) {
      const file = path.join(this.dir, name);
      try {
        const e = JSON.parse(await fsp.readFile(file, 'utf8')) as Entry;
        if (!e?.result?.jobId) throw new Error('no result in it');
        if (now - e.writtenAtMs > MAX_AGE_MS) {
          this.log.warn({ jobId: e.result.jobId, backupId: e.result.backupId }, 'outbox entry never acknowledged; dropped after 30 days');
          await fsp.rm(file, { force: true });
          continue;
        }
        entries.push(e);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // acknowledged meanwhile
        this.log.warn({ file, err: (err as Error).message }, 'unreadable outbox entry; dropped');
        await fsp.rm(file, { force: true });
      }
    }
    return entries.sort((a, b) => a.writtenAtMs - b.writtenAtMs).map((e) => e.result);
  }

  /** The controller holds these results: drop them. Returns how many entries were removed. */
  async ack(jobIds: readonly string[]): Promise<number> {
    let removed = 0;
    for (const id of jobIds) {
      const file = this.file(id);
      if (!file) continue;
      try {
        await fsp.unlink(file);
        removed++;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    return removed;
  }
}
