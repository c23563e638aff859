/**
 * The controller's policy modules: pure or self-contained pieces the daemon wires in.
 * They depend on @boxback/common and their own types only, never on the daemon's files.
 *   retention.ts  which backups to keep and forget (restic-style tiers, keep N manual)
 *   schedule.ts   cron schedules and the Scheduler (catch-up once, no overlap, retry, jitter)
 *   metrics.ts    Prometheus registry, /metrics and /healthz
 *   notify.ts     webhook notifications with retry and at-risk dedupe
 */
export * from './retention.js';
export * from './schedule.js';
export * from './metrics.js';
export * from './notify.js';
