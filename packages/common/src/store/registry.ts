/**
 * A compiled `store:` config (config.ts) to its BackupStore. One line per backend; a new
 * backend adds its schema to config.ts and its constructor here.
 */
import { BoxbackError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { BackupStore } from './backup-store.js';
import type { StoreConfig } from './config.js';
import { LocalBackupStore } from './local/local-store.js';

export interface OpenStoreOptions {
  log?: Logger;
  /** local: prepare hard-link farms for journaled backups (the agent; default true). */
  prepareFarms?: boolean;
}

export function openStore(config: StoreConfig, o: OpenStoreOptions = {}): BackupStore {
  switch (config.kind) {
    case 'local':
      return new LocalBackupStore(config.path, o);
    case 's3':
      throw new BoxbackError('BOXBACK_ERR_CONFIG_INVALID', 'the s3 store is not available in this build');
  }
}
