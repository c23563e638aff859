/**
 * Host plans: what a services box holds and how to treat it, declared in YAML and
 * validated with errors that name the bad key. Shipped examples: deploy/plans/.
 */
import path from 'node:path';
import { z } from 'zod';
import { BoxbackError, isInside, loadYamlFile, resolveFrom } from '@boxback/common';
import { journalPlanSchema } from './journal/plan-extension.js';
import { datasetSchema, driverOf } from './datasets/registry.js';

const absPath = z.string().refine((p) => path.isAbsolute(p), 'must be an absolute path');
const argv = z.array(z.string()).min(1, 'must name a program');
const seconds = (def: number) => z.number().positive().max(86_400).default(def);
const onError = z.enum(['fail', 'continue']).default('fail');
const owner = z.object({ user: z.string().min(1), group: z.string().min(1) }).strict();

const commandStep = z
  .object({
    command: argv,
    timeoutSeconds: seconds(60),
    onError,
    env: z.record(z.string(), z.string()).optional(),
  })
  .strict();

const httpCall = z
  .object({
    url: z.string().url(),
    method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']).default('POST'),
    headers: z.record(z.string(), z.string()).optional(),
    body: z.string().optional(),
    expectStatus: z.array(z.number().int()).default([200, 201, 202, 204]),
  })
  .strict();

/** A thing to call: an HTTP request or a command. */
const action = z
  .object({ http: httpCall.optional(), command: argv.optional(), timeoutSeconds: seconds(30) })
  .strict()
  .refine((a) => !!a.http !== !!a.command, 'give exactly one of http or command');

const service = z
  .object({
    name: z.string().min(1),
    /** Managed by systemd: the unit name. */
    systemd: z.string().optional(),
    /** Or start/stop commands. */
    start: argv.optional(),
    stop: argv.optional(),
    /** Pid file to check the process is really gone (command-managed services). */
    pidFile: absPath.optional(),
    /** Regex matched against /proc/<pid>/cmdline to find its processes (either kind). */
    processMatch: z.string().optional(),
    stopTimeoutSeconds: seconds(60),
    startTimeoutSeconds: seconds(60),
  })
  .strict()
  .refine((s) => !!s.systemd || (!!s.start && !!s.stop), 'give systemd: UNIT, or both start and stop commands');

const tree = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'lower-case letters, digits and -'),
    /** Directory inside the backup directory (default: the name). */
    dir: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/)
      .optional(),
    source: absPath,
    excludes: z.array(z.string()).default([]),
    owner: owner.optional(),
    /** GoCD phase name for progress (SYNC_ARTIFACTS, SYNC_TEST_REPORTS). */
    phase: z.string().optional(),
  })
  .strict();

const hostFile = z
  .object({ path: absPath.optional(), glob: absPath.optional() })
  .strict()
  .refine((h) => !!h.path !== !!h.glob, 'give exactly one of path or glob');

const planSchema = z
  .object({
    name: z.string().min(1),
    product: z.string().min(1).default('generic'),
    description: z.string().optional(),
    /** How to read the installed product version (restore refuses a newer backup). */
    version: z
      .object({ file: absPath.optional(), command: argv.optional(), regex: z.string().optional() })
      .strict()
      .refine((v) => !!v.file !== !!v.command, 'give exactly one of file or command')
      .optional(),
    services: z.array(service).default([]),
    quiesce: z
      .object({
        mode: z.enum(['stop', 'maintenance', 'none']).default('stop'),
        /** The lease: services are resumed at the latest this long after quiescing. */
        leaseSeconds: seconds(900),
        enter: action.optional(),
        exit: action.optional(),
        onError,
        /** Commands run inside the window, before the copy (a database checkpoint, a flush). */
        inWindow: z.array(commandStep).default([]),
      })
      .strict()
      .refine((q) => q.mode !== 'maintenance' || (!!q.enter && !!q.exit), 'maintenance mode needs enter and exit')
      .default({ mode: 'stop', leaseSeconds: 900, onError: 'fail', inWindow: [] }),
    /** One member per dataset kind (datasets/registry.ts). */
    datasets: z.array(datasetSchema).default([]),
    trees: z.array(tree).default([]),
    /** The change journal of the trees (issue 7; docs/design/change-journal.md). */
    journal: journalPlanSchema.default({ enabled: true, fullPassEvery: { backups: 30, hours: 168 } }),
    hostFiles: z.array(hostFile).default([]),
    health: z
      .object({
        http: httpCall.partial({ method: true }).optional(),
        command: argv.optional(),
        timeoutSeconds: seconds(120),
        intervalSeconds: seconds(1),
      })
      .strict()
      .refine((h) => !!h.http !== !!h.command, 'give exactly one of http or command')
      .optional(),
    hooks: z
      .object({ preBackup: z.array(commandStep).default([]), postBackup: z.array(commandStep).default([]) })
      .strict()
      .default({ preBackup: [], postBackup: [] }),
    restore: z
      .object({
        cleanup: z
          .array(
            z
              .object({
                name: z.string(),
                remove: z.array(absPath).optional(),
                command: argv.optional(),
                timeoutSeconds: seconds(120),
                onError,
              })
              .strict()
              .refine((c) => !!c.remove !== !!c.command, 'give exactly one of remove or command'),
          )
          .default([]),
        /** Safety copies older than this are removed by the agent. */
        safetyCopyMaxAgeHours: z.number().positive().default(72),
        /** uid/gid mapping when the target box's ids differ: "1000": 2000. */
        uidMap: z.record(z.string(), z.number().int()).default({}),
        gidMap: z.record(z.string(), z.number().int()).default({}),
      })
      .strict()
      .default({ cleanup: [], safetyCopyMaxAgeHours: 72, uidMap: {}, gidMap: {} }),
  })
  .strict()
  .superRefine((p, ctx) => {
    const seen = new Set<string>();
    for (const [i, d] of p.datasets.entries()) {
      if (seen.has(d.archive))
        ctx.addIssue({ code: 'custom', path: ['datasets', i, 'archive'], message: `archive ${d.archive} is used twice` });
      seen.add(d.archive);
    }
    for (const [i, t] of p.trees.entries()) {
      const dir = t.dir ?? t.name;
      if (seen.has(dir)) ctx.addIssue({ code: 'custom', path: ['trees', i, 'dir'], message: `${dir} is used twice` });
      seen.add(dir);
    }
  });

export type Plan = z.output<typeof planSchema>;
export type PlanService = Plan['services'][number];
export type PlanDataset = Plan['datasets'][number];
export type PlanTree = Plan['trees'][number];
export type PlanAction = NonNullable<Plan['quiesce']['enter']>;
export type PlanCommandStep = Plan['hooks']['preBackup'][number];
export type PlanHealth = NonNullable<Plan['health']>;
export { planSchema };

/** Every path the plan would read or write, with the key that names it. */
export function planPaths(plan: Plan): Array<{ key: string; path: string }> {
  const out: Array<{ key: string; path: string }> = [];
  plan.datasets.forEach((d, i) => {
    if (d.path) out.push({ key: `datasets.${i}.path`, path: d.path });
    d.files?.forEach((f, j) => out.push({ key: `datasets.${i}.files.${j}`, path: f }));
    driverOf(d)
      .paths?.(d)
      ?.forEach((p) => out.push({ key: `datasets.${i}.${p.key}`, path: p.path }));
  });
  plan.trees.forEach((t, i) => out.push({ key: `trees.${i}.source`, path: t.source }));
  plan.hostFiles.forEach((h, i) => out.push({ key: `hostFiles.${i}`, path: (h.path ?? h.glob)! }));
  plan.restore.cleanup.forEach((c, i) => c.remove?.forEach((r, j) => out.push({ key: `restore.cleanup.${i}.remove.${j}`, path: r })));
  return out;
}

/** Load and validate a plan; every path must lie inside one of `allowedRoots`. */
export function loadPlan(file: string, allowedRoots: string[]): Plan {
  const plan = loadYamlFile(planSchema, file, 'BOXBACK_ERR_PLAN_INVALID');
  checkPlanRoots(plan, allowedRoots, file);
  return plan;
}

export function checkPlanRoots(plan: Plan, allowedRoots: string[], file = 'plan'): void {
  for (const { key, path: p } of planPaths(plan)) {
    const probe = p.includes('*') ? path.dirname(p) : p;
    if (!allowedRoots.some((r) => isInside(r, probe))) {
      throw new BoxbackError(
        'BOXBACK_ERR_PATH_NOT_ALLOWED',
        `${file}: ${key}: ${p} is outside the agent's allowedRoots (${allowedRoots.join(', ') || 'none'})`,
      );
    }
  }
}

export { resolveFrom };
