/**
 * This agent's BackupStore: one per loaded config (the local backend keeps the link farms
 * it prepares for the next journaled backup, so backups, journals and RPCs share it).
 *
 * `storeRoot` is the local store's directory, for the code that has not moved behind the
 * interface yet (backup.ts, restore.ts: see test/unit/store-confinement.test.ts).
 */
import path from 'node:path';
import { BoxbackError, openStore, type BackupRef, type BackupStore, type Logger } from '@boxback/common';
import type { AgentConfig } from './config.js';

const stores = new WeakMap<AgentConfig, BackupStore>();

export function agentStore(config: AgentConfig, log?: Logger): BackupStore {
  let s = stores.get(config);
  if (!s) {
    s = openStore(config.store, { log });
    stores.set(config, s);
  }
  return s;
}

/** The local store's directory (CONFIG_INVALID for another kind, until backup and restore use the interface only). */
export function storeRoot(config: AgentConfig): string {
  if (config.store.kind !== 'local')
    throw new BoxbackError(
      'BOXBACK_ERR_CONFIG_INVALID',
      `this agent's restore needs a local store for now (store: kind ${config.store.kind} in ${config.file})`,
    );
  return config.store.path;
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
