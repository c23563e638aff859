/**
 * The controller's config file (controller.yaml): raw YAML -> defaults -> validated -> frozen.
 * Relative paths are resolved against the config file's directory. A bad key is reported
 * by name ("concurrency: Too small...") with BOXBACK_ERR_CONFIG_INVALID (exit 2).
 */
import path from 'node:path';
import { z } from 'zod';
import { BoxbackError, loadYamlFile, resolveFrom } from '@boxback/common';

const listenRe = /^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/;

/** "90", "90s", "15m", "24h", "7d" -> seconds. */
export function parseDuration(v: string | number): number {
  if (typeof v === 'number') return v;
  const m = /^(\d+)\s*(s|m|h|d|w)?$/.exec(v.trim());
  if (!m) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad duration "${v}": want e.g. 90s, 15m, 24h, 7d`);
  const mult = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[(m[2] ?? 's') as 's'];
  return Number(m[1]) * mult;
}

const duration = z.union([
  z.number().int().nonnegative(),
  z.string().regex(/^\d+\s*(s|m|h|d|w)?$/, 'want seconds or a duration such as 90s, 15m, 24h, 7d'),
]);

const controllerConfigSchema = z
  .object({
    /** host:port the CLI and monitoring dial. */
    listen: z.string().regex(listenRe, 'want host:port'),
    /** The controller's TLS files: CA (checks agents), cert and key (server and agent client). */
    tls: z.object({ ca: z.string().min(1), cert: z.string().min(1), key: z.string().min(1) }).strict(),
    /** Catalog: a SQLite file path (postgres:// URLs come later). */
    catalog: z.string().min(1),
    /** The backup store shared with the agents. */
    store: z.string().min(1),
    /** Fleet-wide bound on backups running at once. */
    concurrency: z.number().int().min(1).max(1000).default(4),
    /** RPO for hosts registered without one. */
    defaultRpoSeconds: duration.default(86_400),
    /** Prometheus metrics and /healthz over HTTP (optional). */
    metrics: z
      .object({ listen: z.string().regex(listenRe, 'want host:port') })
      .strict()
      .optional(),
    /** How often every agent is asked for its info (status, last seen). */
    pollSeconds: duration.default(15),
    /** How long SIGTERM waits for running jobs before leaving them to reconciliation. */
    shutdownGraceSeconds: duration.default(10),
  })
  .strict();

export interface ControllerConfig {
  readonly file: string;
  readonly listen: string;
  readonly tls: { ca: string; cert: string; key: string };
  readonly catalog: string;
  readonly store: string;
  readonly concurrency: number;
  readonly defaultRpoSeconds: number;
  readonly metricsListen?: string;
  readonly pollSeconds: number;
  readonly shutdownGraceSeconds: number;
}

export function loadControllerConfig(file: string): ControllerConfig {
  const raw = loadYamlFile(controllerConfigSchema, file);
  const r = (p: string) => resolveFrom(file, p);
  if (/^postgres(ql)?:\/\//.test(raw.catalog)) {
    throw new BoxbackError(
      'BOXBACK_ERR_CONFIG_INVALID',
      `${path.resolve(file)}: catalog: PostgreSQL catalogs are not supported yet; use a SQLite file path`,
    );
  }
  return Object.freeze({
    file: path.resolve(file),
    listen: raw.listen,
    tls: Object.freeze({ ca: r(raw.tls.ca), cert: r(raw.tls.cert), key: r(raw.tls.key) }),
    catalog: r(raw.catalog),
    store: r(raw.store),
    concurrency: raw.concurrency,
    defaultRpoSeconds: parseDuration(raw.defaultRpoSeconds),
    metricsListen: raw.metrics?.listen,
    pollSeconds: Math.max(1, parseDuration(raw.pollSeconds)),
    shutdownGraceSeconds: parseDuration(raw.shutdownGraceSeconds),
  });
}
