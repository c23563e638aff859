import type { Manifest } from '@boxback/common';
export function writeFakeBackup(
  store: string,
  host: string,
  o?: { agentVersion?: string; windowMs?: number },
): Promise<{ rel: string; manifest: Manifest; json: string }>;
