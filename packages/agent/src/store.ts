/**
 * This agent's BackupStore: one per loaded config (the local backend keeps the link farms
 * it prepares for the next journaled backup, so backups, journals and RPCs share it).
 *
 * Backup and restore go through the interface only. The one local path left is for GoCD's
 * post-backup hook variables (localHostDir, localBackupDir): the local store's directories,
 * undefined (the variables empty) for another kind (see test/unit/store-confinement.test.ts).
 */
import path from 'node:path';
import { openStore, type BackupRef, type BackupStore, type Logger } from '@boxback/common';
import type { AgentConfig } from './config.js';

const stores = new WeakMap<AgentConfig, BackupStore>();

export function agentStore(config: AgentConfig, log?: Logger): BackupStore {
  let s = stores.get(config);
  if (!s) {
    // A non-local store writes each backup's archives to a scratch directory first: under the
    // state directory, so that the archive cache (backup/archive-cache.ts) can hard-link them.
    s = openStore(config.store, { log, scratchDir: path.join(config.stateDir, 's3-scratch') });
    stores.set(config, s);
  }
  return s;
}

/** The local store's directory of this host's backups (GoCD's hook variables name it); undefined for another kind. */
export function localHostDir(config: AgentConfig): string | undefined {
  return config.store.kind === 'local' ? path.join(config.store.path, config.name) : undefined;
}

/** The local store's directory of a backup (GoCD's hook variables name it); undefined for another kind. */
export function localBackupDir(config: AgentConfig, ref: BackupRef): string | undefined {
  const host = localHostDir(config);
  return host && path.join(path.dirname(host), ref.host, `backup_${ref.timestamp}`);
}
