// PLACEHOLDER: the backup helper replaces this file with the real orchestrator.
import type { BackupRequest, JobResult } from '@boxback/common';
import type { JobContext } from '../job.js';

/** Take a backup of this host. Never throws for an expected failure: returns a Failed result. */
export async function runBackup(ctx: JobContext, req: BackupRequest): Promise<JobResult> {
  void ctx;
  void req;
  throw new Error('runBackup not implemented yet');
}
