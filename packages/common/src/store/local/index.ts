/** The `local` backend (local-store.ts) and the pieces of it the agent still calls directly. */
export { LocalBackupStore, type LocalStoreOptions } from './local-store.js';
export * from './layout.js';
export * from './staging-fs.js';
export * from './rsync.js';
export * from './link-farm.js';
export * from './incremental-sync.js';
export * from './manifest-writer.js';
export { uniqueBytes, deleteBackupDir } from './delete.js';
export { randomAccessOf } from './read.js';
