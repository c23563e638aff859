/**
 * The controller's config file (controller.yaml): raw YAML -> defaults -> validated -> frozen.
 * Relative paths are resolved against the config file's directory. A bad key is reported
 * by name ("concurrency: Too small...") with BOXBACK_ERR_CONFIG_INVALID (exit 2).
 */
import path from 'node:path';
import { z } from 'zod';
import { BoxbackError, compileStoreConfig, loadYamlFile, resolveFrom, storeConfigSchema, type StoreConfig } from '@boxback/common';
import { notifierConfigSchema, type NotifierConfig } from './policy/notify.js';
import { isValidTimeZone, retentionPolicySchema, type RetentionPolicy } from './policy/retention.js';
import { scheduleSchema, type Schedule } from './policy/schedule.js';

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
    /** Catalog: a SQLite file path, or postgres://user@host:port/db (password from catalogPasswordFile or PGPASSWORD). */
    catalog: z.string().min(1),
    /** PostgreSQL catalogs: a file holding the password (first line). */
    catalogPasswordFile: z.string().min(1).optional(),
    /** PostgreSQL catalogs: how often a follower tries to become the leader (and the leader checks its lock connection). */
    leaderRetrySeconds: duration.default(2),
    /** The backup store shared with the agents. */
    store: storeConfigSchema,
    /** Fleet-wide bound on backups running at once. */
    concurrency: z.number().int().min(1).max(1000).default(4),
    /** RPO for hosts registered without one. */
    defaultRpoSeconds: duration.default(86_400),
    /** Prometheus metrics and /healthz over HTTP (optional). */
    metrics: z
      .object({ listen: z.string().regex(listenRe, 'want host:port') })
      .strict()
      .optional(),
    /** The dashboard over HTTPS with the controller's certificate (optional): where, and how long a sign-in lasts. */
    http: z
      .object({ listen: z.string().regex(listenRe, 'want host:port'), sessionTimeout: duration.default('8h') })
      .strict()
      .optional(),
    /** How often every agent is asked for its info (status, last seen). */
    pollSeconds: duration.default(15),
    /** How long SIGTERM waits for running jobs before leaving them to reconciliation. */
    shutdownGraceSeconds: duration.default(10),
    /** Cron schedules of backups, verifications and restore drills (see policy/schedule.ts). */
    schedules: z.array(scheduleSchema).default([]),
    /** Retention policies: the default, per group, per host (the most specific one wins). */
    retention: z
      .object({
        /** Time zone the hourly/daily/weekly/monthly buckets are cut in. */
        timezone: z.string().default('UTC').refine(isValidTimeZone, 'unknown time zone: want an IANA name such as UTC or Europe/Berlin'),
        default: retentionPolicySchema.optional(),
        groups: z.record(z.string(), retentionPolicySchema).default({}),
        hosts: z.record(z.string(), retentionPolicySchema).default({}),
      })
      .strict()
      .optional(),
    /** Webhook notifications on failure, at-risk and (opt-in) success. */
    notify: z
      .object({
        webhooks: z.array(notifierConfigSchema).default([]),
        /** How often at-risk is evaluated besides each status call. */
        atRiskCheckSeconds: duration.default(60),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.schedules.forEach((s, i) => {
      if (seen.has(s.name))
        ctx.addIssue({ code: 'custom', path: ['schedules', i, 'name'], message: `two schedules are named "${s.name}"` });
      seen.add(s.name);
      if (s.kind === 'drill' && !s.drillHost)
        ctx.addIssue({
          code: 'custom',
          path: ['schedules', i, 'drillHost'],
          message: 'a drill schedule needs drillHost: the host to restore onto',
        });
      if (s.kind !== 'drill' && s.drillHost)
        ctx.addIssue({ code: 'custom', path: ['schedules', i, 'drillHost'], message: 'only drill schedules take drillHost' });
    });
  });

export interface RetentionConfig {
  readonly timezone: string;
  readonly default?: RetentionPolicy;
  readonly groups: Readonly<Record<string, RetentionPolicy>>;
  readonly hosts: Readonly<Record<string, RetentionPolicy>>;
}

export interface ControllerConfig {
  readonly file: string;
  readonly listen: string;
  readonly tls: { ca: string; cert: string; key: string };
  /** A SQLite file path (resolved) or a postgres:// URL without a password. */
  readonly catalog: string;
  readonly catalogKind: 'sqlite' | 'postgres';
  readonly catalogPasswordFile?: string;
  readonly leaderRetrySeconds: number;
  readonly store: StoreConfig;
  readonly concurrency: number;
  readonly defaultRpoSeconds: number;
  readonly metricsListen?: string;
  /** Dashboard address (undefined: no dashboard) and its session lifetime. */
  readonly httpListen?: string;
  readonly httpSessionSeconds: number;
  readonly pollSeconds: number;
  readonly shutdownGraceSeconds: number;
  readonly schedules: readonly Schedule[];
  /** Undefined: no retention (nothing is ever deleted automatically). */
  readonly retention?: RetentionConfig;
  readonly webhooks: readonly NotifierConfig[];
  readonly atRiskCheckSeconds: number;
}

export function loadControllerConfig(file: string): ControllerConfig {
  const raw = loadYamlFile(controllerConfigSchema, file);
  const r = (p: string) => resolveFrom(file, p);
  const isPg = /^postgres(ql)?:\/\//.test(raw.catalog);
  if (isPg) checkPgUrl(path.resolve(file), raw.catalog);
  else if (raw.catalogPasswordFile) {
    throw new BoxbackError(
      'BOXBACK_ERR_CONFIG_INVALID',
      `${path.resolve(file)}: catalogPasswordFile: only a postgres:// catalog takes a password`,
    );
  }
  return Object.freeze({
    file: path.resolve(file),
    listen: raw.listen,
    tls: Object.freeze({ ca: r(raw.tls.ca), cert: r(raw.tls.cert), key: r(raw.tls.key) }),
    catalog: isPg ? raw.catalog : r(raw.catalog),
    catalogKind: isPg ? 'postgres' : 'sqlite',
    catalogPasswordFile: raw.catalogPasswordFile && r(raw.catalogPasswordFile),
    leaderRetrySeconds: Math.max(1, parseDuration(raw.leaderRetrySeconds)),
    store: compileStoreConfig(raw.store, file),
    concurrency: raw.concurrency,
    defaultRpoSeconds: parseDuration(raw.defaultRpoSeconds),
    metricsListen: raw.metrics?.listen,
    httpListen: raw.http?.listen,
    httpSessionSeconds: Math.max(1, parseDuration(raw.http?.sessionTimeout ?? '8h')),
    pollSeconds: Math.max(1, parseDuration(raw.pollSeconds)),
    shutdownGraceSeconds: parseDuration(raw.shutdownGraceSeconds),
    schedules: Object.freeze(raw.schedules),
    retention: raw.retention && Object.freeze({ ...raw.retention }),
    webhooks: Object.freeze(raw.notify?.webhooks ?? []),
    atRiskCheckSeconds: Math.max(1, parseDuration(raw.notify?.atRiskCheckSeconds ?? 60)),
  });
}

/** postgres://user@host:port/db: parsable, a database named, and no password in it (never in a config file or a log line). */
function checkPgUrl(file: string, url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new BoxbackError('BOXBACK_ERR_CONFIG_INVALID', `${file}: catalog: not a valid URL; want postgres://user@host:port/db`);
  }
  if (u.password) {
    throw new BoxbackError(
      'BOXBACK_ERR_CONFIG_INVALID',
      `${file}: catalog: the URL must not hold a password; put it in catalogPasswordFile (mode 0600) or PGPASSWORD`,
    );
  }
  if (!u.hostname || u.pathname.length <= 1) {
    throw new BoxbackError('BOXBACK_ERR_CONFIG_INVALID', `${file}: catalog: want postgres://user@host:port/db (a host and a database)`);
  }
}
