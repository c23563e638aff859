/**
 * A compiled `store:` config (config.ts) to its BackupStore. One line per backend; a new
 * backend adds its schema to config.ts and its constructor here.
 */
import type { Logger } from '../logger.js';
import type { BackupStore } from './backup-store.js';
import type { StoreConfig } from './config.js';
import { LocalBackupStore } from './local/local-store.js';
import { S3BackupStore } from './s3/s3-store.js';

export interface OpenStoreOptions {
  log?: Logger;
  /** local: prepare hard-link farms for journaled backups (the agent; default true). */
  prepareFarms?: boolean;
  /** s3: where backups are staged and downloads checked before use (default: the OS temp dir). */
  scratchDir?: string;
}

export function openStore(config: StoreConfig, o: OpenStoreOptions = {}): BackupStore {
  switch (config.kind) {
    case 'local':
      return new LocalBackupStore(config.path, o);
    case 's3':
      // opens lazily: the credentials file is read now, the key and the bucket at first use
      return new S3BackupStore(config, { log: o.log, scratchDir: o.scratchDir, graceMs: config.pruneGraceSeconds * 1000 });
  }
}
