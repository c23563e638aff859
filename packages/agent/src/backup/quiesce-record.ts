// PLACEHOLDER: the backup helper replaces this file.
import type { Logger } from '@boxback/common';
import type { AgentConfig } from '../config.js';

/** On start-up: resume services a crashed agent left quiesced (recorded on disk), then log it. */
export async function recoverQuiesce(config: AgentConfig, log: Logger): Promise<void> {
  void config;
  void log;
}

/** The quiesce lease now held, if any (for GetInfo). */
export function currentQuiesce(): { deadlineMs: number } | undefined {
  return undefined;
}
