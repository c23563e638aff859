/**
 * `boxback backup create|get|restore|verify|delete|import|export` and `boxback backups`.
 *
 * create: confirm (--group/--all only: on a terminal, or --yes; else exit 2) -> CreateBackup -> (--no-wait: print job IDs) -> follow every job with progress ->
 *         one summary line per host -> exit 5 when any failed.
 * restore: GetBackup -> confirm (TTY, unless --yes or --dry-run) -> RestoreBackup ->
 *          follow -> dry-run report or the confirm hint -> exit 5 on Failed/RolledBack.
 * Wherever a backup ID is taken, HOST@latest names that host's newest Restorable backup
 * (the controller resolves it; the CLI resolves it once first so that it names one backup).
 */
import { createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { BoxbackError, datasetFacts, parseWithSchema, type ManifestDataset, type wire } from '@boxback/common';
import { z } from 'zod';
import { parseDuration } from '../../config.js';
import { positiveInt, tableOptions, type CliContext } from '../context.js';
import { humanAge, humanBytes, humanDate, humanDuration, table } from '../format.js';
import { followJobs, resultLine, type WatchedJob } from '../watch.js';
import { mustBeRestorable } from '../../restorable.js';

type BackupMsg = wire.Backup;

/** "✓ 3h ago (1m05s)" for a backup whose drill passed, "✗ 2d ago" for one whose last drill failed, "-" never drilled. */
export function drillCell(b: BackupMsg): string {
  if (b.drillPassedAtMs) return `✓ ${humanAge(b.drillPassedAtMs)}${b.drillDurationMs ? ` (${humanDuration(b.drillDurationMs)})` : ''}`;
  if (b.drillAtMs) return `✗ ${humanAge(b.drillAtMs)}`;
  return '-';
}

/** "yes", "no", or "DAMAGED" for a backup a verification found damaged (kept by retention, never counted). */
const restorableCell = (b: BackupMsg): string => (b.restorable ? 'yes' : b.damaged ? 'DAMAGED' : 'no');

const viaText = (v: string | undefined): string => (v === 'schedule' ? 'auto' : v === 'import' ? 'import' : 'manual');

export function backupsTable(list: BackupMsg[]): string {
  if (!list.length) return 'no backups yet: `boxback backup create --host NAME`';
  return table(list, [
    { header: 'Created', get: (b) => `${humanDate(b.createdAtMs)} (${humanAge(b.createdAtMs)})`, priority: 11 },
    { header: 'Backup ID', get: (b) => b.id, priority: 12 },
    { header: 'Host', get: (b) => b.host, priority: 5 },
    { header: 'Size', get: (b) => humanBytes(b.sizeBytes), align: 'right', priority: 4 },
    { header: 'Consistency', get: (b) => b.consistency || '-', priority: 3 },
    { header: 'Status', get: (b) => b.status, priority: 6 },
    { header: 'Restorable', get: restorableCell, priority: 11 },
    { header: 'Via', get: (b) => viaText(b.initiatedVia), priority: 2 },
    { header: 'Drill', get: drillCell, priority: 7 },
    { header: 'Label', get: (b) => `${b.pinned ? '📌 ' : ''}${b.label || (b.pinned ? 'pinned' : '-')}`, priority: 8 },
  ]);
}

export function backupDetails(b: BackupMsg): string {
  const rows: Array<[string, string]> = [
    ['Backup ID', b.id],
    ['Host', b.host],
    ['Created', `${humanDate(b.createdAtMs)} (${humanAge(b.createdAtMs)})`],
    ['Status', b.status],
    ['Restorable', restorableCell(b)],
    ...(b.damaged ? ([['Damage', b.damage ?? '']] as Array<[string, string]>) : []),
    ['Size', `${humanBytes(b.sizeBytes)} in ${b.fileCount} files`],
    ['Consistency', b.consistency || '-'],
    ['Quiesce window', b.quiesceWindowMs ? humanDuration(b.quiesceWindowMs) : '-'],
    ['Product version', b.productVersion || '-'],
    ['Verified', b.verifiedAtMs ? humanAge(b.verifiedAtMs) : 'never'],
    ['Initiated via', `${b.initiatedVia || 'cli'} (${viaText(b.initiatedVia)})`],
    [
      'Restore drill',
      b.drillResult ? `${b.drillResult}, ${humanAge(b.drillAtMs ?? 0)}, took ${humanDuration(b.drillDurationMs ?? 0)}` : 'never',
    ],
    ['Origin', b.origin],
    ['Path', b.path],
    ['Job', b.jobId || '-'],
    ['Label', b.label || '-'],
    ['Pinned', b.pinned ? 'yes: retention never deletes it (`boxback backup unpin`)' : 'no'],
  ];
  try {
    const m = JSON.parse(b.manifestJson || '{}') as {
      datasets?: ManifestDataset[];
      trees?: Array<{ name: string; dir: string; files: number; bytes: number }>;
    };
    for (const d of m.datasets ?? [])
      rows.push([`  dataset ${d.name}`, `${d.archive} (${humanBytes(d.bytes)}) -> ${d.target || '(plan decides)'}; ${datasetFacts(d)}`]);
    for (const t of m.trees ?? []) rows.push([`  tree ${t.name}`, `${t.dir}/ ${t.files} files, ${humanBytes(t.bytes)}`]);
  } catch {
    // no manifest details
  }
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

/** `gocd1@latest` -> the ID of gocd1's newest Restorable backup (asked once, so every later call names the same one). */
async function resolveId(ctx: CliContext, id: string): Promise<string> {
  if (!id.endsWith('@latest')) return id;
  const b = await ctx.client().call('GetBackup', { id });
  ctx.info(`${id} is ${b.id}`);
  return b.id;
}

async function follow(ctx: CliContext, jobs: WatchedJob[]) {
  const results = await followJobs(ctx.client(), jobs, { json: ctx.json, tty: ctx.tty });
  ctx.failOnJobs(results);
  return results;
}

export function registerBackupCommands(program: Command, ctx: CliContext): void {
  const backup = program.command('backup').description('create, inspect, restore, verify, delete, import and export backups');

  backup
    .command('create')
    .description('back up one host, a group or the whole fleet now')
    .option('--host <name...>', 'host(s) to back up')
    .option('--group <group>', 'every host of a group')
    .option('--all', 'every registered host')
    .option('--live', 'do not quiesce the services (recorded as "live")')
    .option('--label <label>', 'label the backup(s), e.g. pre-upgrade (`boxback backups --label pre-upgrade`)')
    .option('-y, --yes', 'do not ask (--group and --all ask first; without a terminal they need --yes)')
    .option('--no-wait', 'print the job IDs and return')
    .option('--concurrency <n>', 'at most N hosts at once for this request', positiveInt('--concurrency'))
    .action(
      async (o: {
        host?: string[];
        group?: string;
        all?: boolean;
        live?: boolean;
        label?: string;
        yes?: boolean;
        wait: boolean;
        concurrency?: number;
      }) => {
        const chosen = [Boolean(o.host?.length), Boolean(o.group), Boolean(o.all)].filter(Boolean).length;
        if (chosen !== 1)
          throw new BoxbackError('BOXBACK_ERR_USAGE', 'name what to back up: exactly one of --host NAME, --group G or --all');
        // --group and --all quiesce many hosts at once: asked on a terminal; without one, --yes or exit 2
        if (o.all || o.group) {
          await ctx.confirm(
            `Back up ${o.all ? 'every host' : `every host of group ${o.group}`}${o.live ? ' (live, services keep running)' : ''}?`,
            o.yes,
          );
        }
        const res = await ctx.client().call('CreateBackup', {
          client: 'cli',
          hosts: o.host ?? [],
          group: o.group ?? '',
          all: Boolean(o.all),
          live: Boolean(o.live),
          concurrency: o.concurrency ?? 0,
          label: o.label ?? '',
        });
        if (!o.wait) {
          ctx.out(
            { jobs: res.jobs },
            () => res.jobs.map((j) => `${j.host}  ${j.id}`).join('\n') + '\n\nfollow with `boxback job watch ID`',
          );
          return;
        }
        ctx.info(`started ${res.jobs.length} backup job(s)`);
        const results = await follow(ctx, res.jobs);
        const w = Math.max(4, ...res.jobs.map((j) => j.host.length));
        ctx.out({ jobs: res.jobs.map((j, i) => ({ ...j, result: results[i] })) }, () =>
          res.jobs.map((j, i) => resultLine(j, results[i], w)).join('\n'),
        );
      },
    );

  backup
    .command('get <id>')
    .description("show one backup and its manifest summary (ID, or HOST@latest: the host's newest Restorable backup)")
    .action(async (id: string) => {
      const b = await ctx.client().call('GetBackup', { id });
      ctx.out({ ...b, manifest: b.manifestJson ? JSON.parse(b.manifestJson) : null, manifestJson: undefined }, () => backupDetails(b));
    });

  backup
    .command('restore <id>')
    .description('restore a backup (ID or HOST@latest) onto its host, or onto another with --target')
    .option('--target <host>', 'host to restore onto (default: the host it came from)')
    .option('--dry-run', 'show the steps and host-file changes, change nothing')
    .option('--force', 'restore even when the backup is from a newer product version')
    .option('-y, --yes', 'do not ask for confirmation')
    .action(async (id: string, o: { target?: string; dryRun?: boolean; force?: boolean; yes?: boolean }) => {
      const b = await ctx.client().call('GetBackup', { id });
      const target = o.target || b.host;
      // before the confirmation: the reason, not "needs confirmation"
      mustBeRestorable({ ...b, verifyFailed: Boolean(b.damage), errorMessage: b.damage });
      if (!o.dryRun) {
        await ctx.confirm(
          `Restore ${b.id} (${humanDate(b.createdAtMs)}, ${b.consistency || 'unknown consistency'}) onto ${target}? Its services stop and their data is replaced`,
          o.yes,
        );
      }
      const job = await ctx.client().call('RestoreBackup', {
        backupId: id,
        targetHost: o.target ?? '',
        dryRun: Boolean(o.dryRun),
        force: Boolean(o.force),
      });
      ctx.info(`restore job ${job.id} on ${job.host}`);
      const [r] = await follow(ctx, [job]);
      ctx.out({ job, result: r }, () => {
        const lines = [resultLine(job, r, job.host.length)];
        if (r.dryRunReport) lines.push('', r.dryRunReport.trimEnd());
        if (r.status === 'Completed' && !o.dryRun)
          lines.push('', `safety copies are kept on ${job.host}; once it looks right: boxback restore confirm ${job.id}`);
        return lines.join('\n');
      });
    });

  backup
    .command('verify <id>')
    .description('re-check every checksum of a stored backup (ID or HOST@latest) and the CRC-32 of every zip entry')
    .action(async (given: string) => {
      const id = await resolveId(ctx, given);
      const r = await ctx.client().call('VerifyBackup', { backupId: id }, 6 * 3600_000);
      if (!r.ok) ctx.exitCode = 5;
      ctx.out(r, () =>
        r.ok
          ? `${id}: ok, ${r.filesChecked} files, ${humanBytes(r.bytesChecked)} checked, ${r.zipEntriesChecked} zip entries CRC-checked, in ${humanDuration(r.durationMs)}`
          : [`${id}: ${r.problems.length} problem(s); it is no longer Restorable`, ...r.problems.map((p) => `  ${p}`)].join('\n'),
      );
    });

  backup
    .command('delete <id>')
    .description('delete a backup (ID or HOST@latest) from the store and the catalog')
    .option('-y, --yes', 'do not ask for confirmation')
    .action(async (given: string, o: { yes?: boolean }) => {
      const id = await resolveId(ctx, given);
      await ctx.confirm(`Delete backup ${id}? This cannot be undone`, o.yes);
      const r = await ctx.client().call('DeleteBackup', { backupId: id }, 3600_000);
      ctx.out(r, () => `deleted ${id}, freed ${humanBytes(r.freedBytes)}`);
    });

  backup
    .command('import <path>')
    .description("register a backup directory (GoCD-made or boxback) or an export .tar that is on the controller's filesystem")
    .option('--host <name>', 'host to file it under (required for a GoCD-made directory)')
    .action(async (p: string, o: { host?: string }) => {
      const b = await ctx.client().call('ImportBackup', { path: path.resolve(p), host: o.host ?? '' }, 6 * 3600_000);
      ctx.out(b, () => `imported as ${b.id} (${humanBytes(b.sizeBytes)}, ${b.restorable ? 'Restorable' : 'not Restorable'})`);
    });

  backup
    .command('export <id>')
    .description('download a backup (ID or HOST@latest) as one tar file (-o -: to stdout, for a pipe)')
    .requiredOption('-o, --output <file>', 'tar file to write (written as FILE.part, then renamed); - writes the tar to stdout')
    .action(async (id: string, o: { output: string }) => {
      const chunks = (async function* () {
        for await (const chunk of ctx.client().stream('ExportBackup', { backupId: id })) yield chunk.data;
      })();
      if (o.output === '-') {
        if (process.stdout.isTTY)
          throw new BoxbackError(
            'BOXBACK_ERR_USAGE',
            '-o - writes a tar to stdout, which is a terminal: pipe it (| tar -x) or redirect it',
          );
        const bytes = await writeAll(process.stdout, chunks);
        ctx.info(`wrote ${humanBytes(bytes)} of tar to stdout`); // stdout carries the tar and nothing else
        return;
      }
      const out = path.resolve(o.output);
      const tmp = `${out}.part`;
      const ws = createWriteStream(tmp, { flags: 'w', mode: 0o600 });
      let bytes = 0;
      try {
        bytes = await writeAll(ws, chunks);
        await new Promise<void>((resolve, reject) => ws.end((err?: Error | null) => (err ? reject(err) : resolve())));
        await fsp.rename(tmp, out);
      } catch (err) {
        ws.destroy();
        await fsp.rm(tmp, { force: true });
        throw err;
      }
      ctx.out({ file: out, bytes }, () => `wrote ${out} (${humanBytes(bytes)})`);
    });

  const backups = tableOptions(program.command('backups'))
    .description(
      'list backups, newest first (Via: manual, or auto by a schedule; Drill: ✓ when a restore drill passed); `backups prune` applies retention',
    )
    .option('--host <name>', 'only this host')
    .option('--label <label>', 'only backups with this label')
    .option('--status <status>', 'only this status: restorable, Completed, PartiallyFailed, Failed')
    .option('--since <when>', 'only backups made since: a duration back from now (7d, 12h) or a date (2026-11-01, RFC 3339)', sinceOption)
    .option('--limit <n>', 'at most N, newest first', positiveInt('--limit'))
    .action(async (o: { host?: string; label?: string; status?: string; since?: number; limit?: number }) => {
      const r = await ctx.client().call('ListBackups', {
        host: o.host ?? '',
        label: o.label ?? '',
        status: o.status ?? '',
        sinceMs: o.since ?? 0,
        limit: o.limit ?? 0,
      });
      ctx.out(r.backups, () => backupsTable(r.backups));
    });

  for (const [name, pinned] of [
    ['pin', true],
    ['unpin', false],
  ] as const) {
    backup
      .command(`${name} <id>`)
      .description(pinned ? 'pin a backup (ID or HOST@latest): retention never deletes it' : 'unpin a backup: retention judges it again')
      .action(async (given: string) => {
        const b = await ctx.client().call('PinBackup', { backupId: given, pinned });
        ctx.out(b, () => (pinned ? `pinned ${b.id}: retention never deletes it` : `unpinned ${b.id}: retention judges it again`));
      });
  }

  tableOptions(backups.command('prune'))
    .description('apply the retention policy now: delete what it does not keep (--dry-run: only show what would go, and why)')
    .option('--host <name>', 'only this host')
    .option('--dry-run', 'list what would be deleted, delete nothing')
    .option('-y, --yes', 'do not ask for confirmation')
    .action(async (o: { host?: string; dryRun?: boolean; yes?: boolean }) => {
      // `--host` after `prune` may land on `backups` itself (it has the same option)
      const host = o.host ?? backups.opts<{ host?: string }>().host ?? '';
      const call = (dryRun: boolean) => ctx.client().call('PruneBackups', { host, dryRun }, 3600_000);
      let r: PruneResult;
      if (o.dryRun) r = await call(true);
      else {
        const plan = await call(true);
        const n = plan.items.filter((i) => !i.keep).length;
        // nothing to delete still runs once: an object store frees what earlier deletes left
        if (n > 0) await ctx.confirm(`Delete ${n} backup(s) the retention policy does not keep${host ? ` (host ${host})` : ''}?`, o.yes);
        r = await call(false);
      }
      if (r.items.some((i) => i.error)) ctx.exitCode = 5;
      ctx.out(r, () => pruneText(r));
    });
}

type PruneResult = wire.PruneBackupsResponse;

export function pruneText(r: PruneResult): string {
  if (!r.items.length) return 'no backups';
  const forget = r.items.filter((i) => !i.keep).length;
  const t = table(r.items, [
    { header: 'Backup ID', get: (i) => i.id, priority: 20 },
    { header: 'Created', get: (i) => `${humanDate(i.createdAtMs)} (${humanAge(i.createdAtMs)})`, priority: 5 },
    { header: 'Via', get: (i) => viaText(i.initiatedVia), priority: 4 },
    {
      header: 'Action',
      get: (i) => (i.keep ? 'keep' : i.deleted ? 'deleted' : i.error ? 'FAILED' : r.dryRun ? 'would delete' : 'delete'),
      priority: 20,
    },
    { header: 'Why', get: (i) => (i.error ? `${i.reasons.join(', ')}: ${i.error}` : i.reasons.join(', ')), priority: 15 },
  ]);
  const tail = r.dryRun
    ? `dry run: ${forget} of ${r.items.length} backup(s) would be deleted; nothing was changed`
    : `deleted ${r.deleted} backup(s), freed ${humanBytes(r.freedBytes)}`;
  return `${t}

${tail}`;
}

/**
 * Write every chunk to `ws`, waiting on back-pressure (a slow pipe slows the download); the
 * byte count. A write error (EPIPE: the reader of `-o -` went away) ends the download.
 */
async function writeAll(ws: NodeJS.WritableStream, chunks: AsyncIterable<Uint8Array>): Promise<number> {
  let failed: Error | undefined;
  let wake: (() => void) | undefined;
  const onError = (e: Error) => {
    failed = e;
    wake?.();
  };
  ws.on('error', onError);
  try {
    let bytes = 0;
    for await (const data of chunks) {
      if (failed) break;
      bytes += data.length;
      if (!ws.write(data)) {
        await new Promise<void>((resolve) => {
          wake = resolve;
          ws.once('drain', resolve);
        });
      }
    }
    if (failed) {
      const code = (failed as NodeJS.ErrnoException).code;
      throw code === 'EPIPE' ? new BoxbackError('BOXBACK_ERR_INTERNAL', 'the reader of the tar closed the pipe before its end') : failed;
    }
    return bytes;
  } finally {
    ws.off('error', onError);
  }
}

/** `--since 7d` -> now minus 7 days; `--since 2026-11-01` (or RFC 3339) -> that time; ms since the epoch. */
export function sinceOption(v: string): number {
  if (/^\d+\s*(s|m|h|d|w)$/.test(v.trim())) return Date.now() - parseDuration(v.trim()) * 1000;
  const t = Date.parse(v);
  if (!Number.isFinite(t))
    throw new BoxbackError('BOXBACK_ERR_USAGE', `--since wants a duration (7d, 12h) or a date (2026-11-01), not "${v}"`);
  return t;
}

/** `--rpo 24h` -> seconds, `--rpo none` -> -1 (a spare box that only receives drills), as a usage error when malformed. */
export function rpoOption(v: string): number {
  if (v.trim().toLowerCase() === 'none') return -1;
  const s = parseWithSchema(z.string().regex(/^\d+\s*(s|m|h|d|w)?$/, 'want e.g. 90s, 15m, 24h, 7d'), v, '--rpo', 'BOXBACK_ERR_USAGE');
  return parseDuration(s);
}
