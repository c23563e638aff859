// PLACEHOLDER: the restore helper replaces this file.
import type { Logger, SafetyCopyInfo } from '@boxback/common';
import type { AgentConfig } from '../config.js';

export async function listSafetyCopies(config: AgentConfig): Promise<SafetyCopyInfo[]> {
  void config;
  return [];
}

/** Drop the safety copies of one restore job ('' = all). */
export async function confirmRestore(config: AgentConfig, jobId: string, log: Logger): Promise<{ removed: number; freedBytes: number }> {
  void config;
  void jobId;
  void log;
  return { removed: 0, freedBytes: 0 };
}

/** Remove safety copies older than the plan's age limit. */
export async function pruneSafetyCopies(config: AgentConfig, log: Logger): Promise<void> {
  void config;
  void log;
}
