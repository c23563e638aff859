// PLACEHOLDER: the restore helper replaces this file with the real orchestrator.
import type { JobResult, RestoreRequest } from '@boxback/common';
import type { JobContext } from '../job.js';

/** Restore a stored backup onto this host. Returns Completed, Failed or RolledBack. */
export async function runRestore(ctx: JobContext, req: RestoreRequest): Promise<JobResult> {
  void ctx;
  void req;
  throw new Error('runRestore not implemented yet');
}
