/** The controller as a library (tests, the fleet bench): daemon, config, catalog, runner. */
export * from './config.js';
export * from './server.js';
export * from './auth.js';
export * from './jobs.js';
export * from './catalog/types.js';
export { SqliteCatalog } from './catalog/sqlite.js';
export { PgCatalog } from './catalog/postgres.js';
export { openCatalog } from './catalog/open.js';
export * from './leadership.js';
export { MIGRATIONS } from './catalog/migrations.js';
