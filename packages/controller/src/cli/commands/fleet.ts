/**
 * `boxback hosts add|set|list|remove`, `boxback status [--watch]`, `boxback schedules`,
 * `boxback restore confirm`, `boxback tokens create|list|revoke`, `boxback audit`.
 */
import type { Command } from 'commander';
import { BoxbackError, ExitCode, type JobResult, type wire } from '@boxback/common';
import { positiveInt, tableOptions, type CliContext } from '../context.js';
import { humanAge, humanBytes, humanDate, humanDuration, table } from '../format.js';
import { followJobs, resultLine } from '../watch.js';
import { toJson } from '../json.js';
import { parseDuration } from '../../config.js';
import { rpoOption } from './backup.js';

type StatusMsg = wire.StatusResponse;
type HostWithStatus = wire.HostStatus & { host: wire.Host };

/** "24h00m", "default" (0) or "none" (-1: a drill-only spare). */
export function rpoText(s: number): string {
  return s < 0 ? 'none' : s ? humanDuration(s * 1000) : 'default';
}

type ScheduleMsg = wire.ScheduleInfo;

export function schedulesTable(list: ScheduleMsg[]): string {
  if (!list.length) return 'no schedules: add them under `schedules:` in controller.yaml';
  return table(list, [
    { header: 'Schedule', get: (s) => s.name, priority: 20 },
    { header: 'Kind', get: (s) => s.kind, priority: 15 },
    { header: 'Cron', get: (s) => `${s.cron} ${s.timezone}`, priority: 10 },
    {
      header: 'Covers',
      get: (s) =>
        (s.hosts.length ? s.hosts.join(',') : s.group ? `group ${s.group}` : 'every host') + (s.drillHost ? ` -> ${s.drillHost}` : ''),
      priority: 9,
    },
    {
      header: 'Next run',
      get: (s) =>
        s.paused ? 'paused' : s.running ? 'running now' : s.nextRunMs ? `${humanDateTime(s.nextRunMs)} (${humanIn(s.nextRunMs)})` : 'never',
      priority: 18,
    },
    { header: 'Last run', get: (s) => (s.lastSlotMs ? humanAge(s.lastSlotMs) : 'never'), priority: 6 },
    { header: 'Paused', get: (s) => (s.paused ? `by ${s.pausedBy}, ${humanAge(s.pausedAtMs)}` : '-'), priority: 8 },
  ]);
}

function humanDateTime(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 16) + 'Z';
}

/** "active", "revoked 2d ago", "expired 3h ago". */
function tokenState(t: wire.TokenInfo, now = Date.now()): string {
  if (t.revokedAtMs) return `revoked ${humanAge(t.revokedAtMs, now)}`;
  if (t.expiresAtMs && t.expiresAtMs <= now) return `expired ${humanAge(t.expiresAtMs, now)}`;
  return 'active';
}

/** "in 3m05s" (or "now" when due). */
function humanIn(ms: number, now = Date.now()): string {
  return ms <= now ? 'now' : `in ${humanDuration(ms - now)}`;
}

/** Only when this controller does not lead: which one does (SQLite: always the one answering). */
function leaderNote(s: StatusMsg): string {
  if (!s.controller || s.leader === s.controller) return '';
  return s.leader ? `, a follower (leader: ${s.leader})` : ', a follower (no leader at the moment)';
}

export function statusText(s: StatusMsg): string {
  const head = `${s.totalHosts} host(s), ${s.reachableHosts} reachable, ${s.atRiskHosts} at risk, ${s.runningJobs} job(s) running — controller ${s.controllerVersion}${leaderNote(s)}`;
  // the controller always names the host of a status row
  const hosts = s.hosts.filter((h): h is HostWithStatus => h.host !== null);
  if (!hosts.length) return `${head}\nno hosts: \`boxback hosts add NAME --address HOST:PORT\``;
  const t = table(hosts, [
    { header: 'Host', get: (h) => h.host.name, priority: 20 },
    { header: 'Agent', get: (h) => (h.reachable ? `up ${h.host.agentVersion}` : 'DOWN'), priority: 15 },
    { header: 'Product', get: (h) => (h.host.product ? `${h.host.product} ${h.host.productVersion}`.trim() : '-'), priority: 3 },
    {
      header: 'Running',
      get: (h) => {
        const j = h.runningJob;
        if (!j) return '-';
        const p = j.progress;
        const pct = p && p.bytesTotal ? ` ${Math.floor((100 * p.bytesDone) / p.bytesTotal)}%` : '';
        return `${j.kind} ${j.phase || 'queued'}${pct}`;
      },
      priority: 8,
    },
    { header: 'Last good backup', get: (h) => h.lastGoodBackup?.id ?? 'none', priority: 5 },
    { header: 'Age', get: (h) => (h.lastGoodAgeSeconds >= 0 ? humanDuration(h.lastGoodAgeSeconds * 1000) : '-'), priority: 12 },
    { header: 'RPO', get: (h) => rpoText(h.host.rpoSeconds), priority: 2 },
    { header: 'Next run', get: (h) => (h.nextRunMs ? humanIn(h.nextRunMs) : '-'), priority: 9 },
    {
      header: 'Last drill',
      get: (h) =>
        h.lastDrillAtMs
          ? `✓ ${humanAge(h.lastDrillAtMs)}${h.lastDrillDurationMs ? ` (${humanDuration(h.lastDrillDurationMs)})` : ''}`
          : '-',
      priority: 7,
    },
    { header: 'Safety copies', get: (h) => (h.safetyCopies ? `${h.safetyCopies} (${humanBytes(h.safetyCopyBytes)})` : '-'), priority: 1 },
    { header: 'At risk', get: (h) => (h.atRisk ? 'AT RISK' : 'ok'), priority: 18 },
  ]);
  const down = hosts.filter((h) => !h.reachable).map((h) => `  ${h.host.name}: ${h.unreachableReason}`);
  return [head, '', t, ...(down.length ? ['', 'unreachable:', ...down] : [])].join('\n');
}

/**
 * `status --exit-code`: one line per host that needs someone, DOWN first (its agent did not
 * answer), then AT RISK (no Restorable backup younger than its RPO); none when all is well.
 */
export function troubleLines(s: StatusMsg): string[] {
  const hosts = s.hosts.filter((h): h is HostWithStatus => h.host !== null);
  const down = hosts
    .filter((h) => !h.reachable)
    .map((h) => `boxback: ${h.host.name} DOWN: ${h.unreachableReason || 'the agent did not answer'}`);
  const risk = hosts
    .filter((h) => h.atRisk)
    .map((h) => {
      const newest =
        h.lastGoodAgeSeconds >= 0 ? `newest Restorable backup ${humanDuration(h.lastGoodAgeSeconds * 1000)} old` : 'no Restorable backup';
      return `boxback: ${h.host.name} AT RISK: ${newest}, RPO ${rpoText(h.host.rpoSeconds)}`;
    });
  return [...down, ...risk];
}

export function registerFleetCommands(program: Command, ctx: CliContext): void {
  const hosts = program.command('hosts').description('register, list and remove services boxes');
  hosts
    .command('add <name>')
    .description("register a host by its agent's address (the agent is asked first)")
    .requiredOption('--address <host:port>', "the agent's address")
    .option('--group <group>', 'group for fleet backups')
    .option('--rpo <duration>', "recovery point objective, e.g. 24h (default: the controller's; none: a drill-only spare)", rpoOption)
    .option('--skip-check', 'register without asking the agent')
    .action(async (name: string, o: { address: string; group?: string; rpo?: number; skipCheck?: boolean }) => {
      const h = await ctx
        .client()
        .call(
          'AddHost',
          { name, address: o.address, group: o.group ?? '', rpoSeconds: o.rpo ?? 0, skipCheck: Boolean(o.skipCheck) },
          30_000,
        );
      ctx.out(h, () => `added ${h.name} at ${h.address}${h.agentVersion ? ` (agent ${h.agentVersion}, plan ${h.planName})` : ''}`);
    });
  hosts
    .command('set <name>')
    .description("change a host's agent address, group or RPO (--rpo none: a spare box that only receives drills, never at risk)")
    .option('--address <host:port>', "the agent's new address")
    .option('--group <group>', "the host's group ('' : none)")
    .option('--rpo <duration>', "recovery point objective, e.g. 24h; default: the controller's; none: never at risk", (v: string) =>
      v === 'default' ? 0 : rpoOption(v),
    )
    .action(async (name: string, o: { address?: string; group?: string; rpo?: number }) => {
      const h = await ctx.client().call('UpdateHost', {
        name,
        address: o.address ?? '',
        group: o.group ?? '',
        setGroup: o.group !== undefined,
        rpoSeconds: o.rpo ?? 0,
        setRpo: o.rpo !== undefined,
      });
      ctx.out(h, () => `${h.name}: address ${h.address}, group ${h.group || '-'}, RPO ${rpoText(h.rpoSeconds)}`);
    });
  tableOptions(hosts.command('list'))
    .description('list registered hosts')
    .option('--group <group>', 'only this group')
    .action(async (o: { group?: string }) => {
      const r = await ctx.client().call('ListHosts', { group: o.group ?? '' });
      ctx.out(r.hosts, () =>
        r.hosts.length
          ? table(r.hosts, [
              { header: 'Name', get: (h) => h.name, priority: 20 },
              { header: 'Address', get: (h) => h.address || '(none: found in the store)', priority: 15 },
              { header: 'Group', get: (h) => h.group || '-', priority: 5 },
              { header: 'Plan', get: (h) => h.planName || '-', priority: 3 },
              { header: 'Agent', get: (h) => h.agentVersion || '-', priority: 2 },
              { header: 'RPO', get: (h) => rpoText(h.rpoSeconds), priority: 4 },
              { header: 'Last seen', get: (h) => humanAge(h.lastSeenMs), priority: 6 },
            ])
          : 'no hosts: `boxback hosts add NAME --address HOST:PORT`',
      );
    });
  hosts
    .command('remove <name>')
    .description('remove a host from the catalog (its backups stay in the store)')
    .action(async (name: string) => {
      const r = await ctx.client().call('RemoveHost', { name });
      ctx.out(r, () => `removed ${name}`);
    });

  tableOptions(program.command('status'))
    .description('every host: agent, running job, last good backup and its age, next scheduled run, last passed drill, at risk')
    .option('--watch', 'refresh every 2 seconds')
    .option('--refresh', 'ask every agent now instead of using the last poll')
    .option('--exit-code', 'exit 9 when a host is AT RISK or its agent DOWN, naming each on stderr (for cron and monitoring)')
    .action(async (o: { watch?: boolean; refresh?: boolean; exitCode?: boolean }) => {
      const once = async () => ctx.client().call('GetStatus', { refresh: Boolean(o.refresh) });
      if (o.watch && o.exitCode) throw new BoxbackError('BOXBACK_ERR_USAGE', '--exit-code needs a status that ends: drop --watch');
      if (!o.watch) {
        const s = await once();
        ctx.out(s, () => statusText(s));
        if (o.exitCode) {
          const lines = troubleLines(s);
          if (lines.length) {
            ctx.finalError = lines.join('\n');
            ctx.exitCode = ExitCode.AT_RISK;
          }
        }
        return;
      }
      for (;;) {
        const s = await once();
        if (ctx.json) process.stdout.write(`${toJson(s, true)}\n`);
        else process.stdout.write(`${ctx.tty ? '\x1b[2J\x1b[H' : ''}${statusText(s)}\n\n`);
        await new Promise((r) => setTimeout(r, 2_000));
      }
    });

  const schedules = tableOptions(program.command('schedules'))
    .description("the config's schedules: next runs, pause, resume, run now (`boxback schedules` lists them)")
    .action(async () => {
      const r = await ctx.client().call('ListSchedules', {});
      ctx.out(r.schedules, () => schedulesTable(r.schedules));
    });
  const pauseOrResume = (paused: boolean) => async (name: string) => {
    const s = await ctx.client().call('SetSchedulePaused', { name, paused });
    ctx.out(s, () =>
      paused
        ? `paused ${s.name}: its runs are skipped until \`boxback schedules resume ${s.name}\` (kept across controller restarts)`
        : `resumed ${s.name}: next run ${s.nextRunMs ? `${humanDateTime(s.nextRunMs)} (${humanIn(s.nextRunMs)})` : 'never'}`,
    );
  };
  schedules
    .command('pause <name>')
    .description("skip the schedule's runs until resumed (kept across restarts)")
    .action(pauseOrResume(true));
  schedules
    .command('resume <name>')
    .description('run the schedule again from its next slot (missed ones are not caught up)')
    .action(pauseOrResume(false));
  schedules
    .command('run <name>')
    .description('run the schedule now (paused or not); its jobs go on in the background: `boxback jobs --state active`')
    .action(async (name: string) => {
      const r = await ctx.client().call('RunSchedule', { name });
      ctx.out(r, () => `started ${r.name} now; follow its jobs with \`boxback jobs --state active\``);
    });

  program
    .command('restore')
    .description('after a restore')
    .command('confirm <jobId>')
    .description('accept a restore: drop the safety copies its host keeps')
    .action(async (jobId: string) => {
      const r = await ctx.client().call('ConfirmRestore', { jobId }, 3600_000);
      ctx.out(
        r,
        () => `confirmed ${jobId}: removed ${r.removed} safety cop${r.removed === 1 ? 'y' : 'ies'}, freed ${humanBytes(r.freedBytes)}`,
      );
    });

  const drill = program.command('drill').description('restore drills: prove a backup restores, on a spare box, and time it');
  drill
    .command('run')
    .description("restore a host's newest Restorable backup onto a drill host, health-check it, record the result on the backup, clean up")
    .requiredOption('--host <name>', 'host whose newest Restorable backup is drilled')
    .requiredOption('--on <drillHost>', 'spare host to restore onto (its services are replaced)')
    .option('-y, --yes', 'do not ask for confirmation')
    .option('--no-wait', 'print the job ID and return')
    .action(async (o: { host: string; on: string; yes?: boolean; wait: boolean }) => {
      await ctx.confirm(`Drill ${o.host} onto ${o.on}? The services and data of ${o.on} are replaced`, o.yes);
      const job = await ctx.client().call('RunDrill', { host: o.host, drillHost: o.on });
      if (!o.wait) {
        ctx.out({ job }, () => `${job.host}  ${job.id}  (drilling ${job.backupId})\n\nfollow with \`boxback job watch ${job.id}\``);
        return;
      }
      ctx.info(`drill job ${job.id}: restoring ${job.backupId} onto ${job.host}`);
      const [r] = await followJobs(ctx.client(), [job], { json: ctx.json, tty: ctx.tty });
      ctx.failOnJobs([r]);
      const b = await ctx.client().call('GetBackup', { id: job.backupId });
      ctx.out({ job, result: r, backup: { id: b.id, drillResult: b.drillResult, drillDurationMs: b.drillDurationMs } }, () =>
        [
          resultLine(job, r, job.host.length),
          `drill of ${b.id}: ${b.drillResult || r.status}, recovery took ${humanDuration(b.drillDurationMs || r.durationMs)}`,
        ].join('\n'),
      );
    });

  tableOptions(program.command('drills'))
    .description('the drill and verify history, newest first (kept after the backups they tested are deleted)')
    .option('--host <name>', 'only the backups of this host')
    .option('--kind <kind>', 'only drill or verify')
    .option('--limit <n>', 'how many', positiveInt('--limit'), 50)
    .action(async (o: { host?: string; kind?: string; limit: number }) => {
      const r = await ctx.client().call('ListEvidence', { host: o.host ?? '', kind: o.kind ?? '', limit: o.limit });
      ctx.out(r.entries, () =>
        r.entries.length
          ? table(r.entries, [
              { header: 'When', get: (e) => `${humanDate(e.atMs)} (${humanAge(e.atMs)})`, priority: 20 },
              { header: 'Host', get: (e) => e.host, priority: 18 },
              { header: 'Kind', get: (e) => e.kind, priority: 18 },
              { header: 'Backup ID', get: (e) => `${e.backupId}${e.backupExists ? '' : ' (deleted)'}`, priority: 16 },
              { header: 'Result', get: (e) => (e.passed ? 'passed' : 'FAILED'), priority: 20 },
              { header: 'Duration', get: (e) => (e.durationMs ? humanDuration(e.durationMs) : '-'), align: 'right', priority: 12 },
              { header: 'On', get: (e) => e.target || '-', priority: 6 },
              { header: 'Detail', get: (e) => e.detail, priority: 1 },
            ])
          : 'no drills or verifies yet: `boxback drill run --host H --on SPARE`, `boxback backup verify ID`',
      );
    });

  const tokens = program.command('tokens').description('API tokens (admins only)');
  tokens
    .command('create')
    .description('create a token and print it once')
    .requiredOption('--name <name>', 'who the token is for')
    .option('--role <role>', 'viewer (reads), operator (also backs up and verifies) or admin (everything)', 'viewer')
    .option('--expires <duration>', 'stop working after this long (90d, 12h, ...; default: never)')
    .action(async (o: { name: string; role: string; expires?: string }) => {
      const expiresInSeconds = o.expires ? parseDuration(o.expires) : 0;
      const r = await ctx.client().call('CreateToken', { name: o.name, role: o.role, expiresInSeconds });
      ctx.out(r, () => r.token);
      const until = r.expiresAtMs ? `, valid until ${new Date(r.expiresAtMs).toISOString()}` : '';
      ctx.info(`created ${r.role} token "${r.name}"${until}; it is shown only once`);
    });
  tokens
    .command('revoke')
    .description('revoke a token by name or ID: every call with it fails from now on')
    .argument('<name-or-id>', 'the token, as `boxback tokens list` names it')
    .action(async (nameOrId: string) => {
      const r = await ctx.client().call('RevokeToken', { token: nameOrId });
      ctx.out(r, () => `revoked token "${r.name}" (id ${r.id}); calls with it fail from now on`);
    });
  tableOptions(tokens.command('list'))
    .description('list tokens (never the secrets)')
    .action(async () => {
      const r = await ctx.client().call('ListTokens', {});
      ctx.out(r.tokens, () =>
        table(r.tokens, [
          { header: 'ID', get: (t) => String(t.id), align: 'right', priority: 15 },
          { header: 'Name', get: (t) => t.name, priority: 20 },
          { header: 'Role', get: (t) => t.role, priority: 15 },
          { header: 'State', get: (t) => tokenState(t), priority: 20 },
          { header: 'Created', get: (t) => humanAge(t.createdAtMs) },
          { header: 'Last used', get: (t) => humanAge(t.lastUsedMs), priority: 15 },
          { header: 'Expires', get: (t) => (t.expiresAtMs ? humanDate(t.expiresAtMs) : 'never'), priority: 15 },
        ]),
      );
    });

  tableOptions(program.command('audit'))
    .description('the newest entries of the audit log (admins only)')
    .option('--limit <n>', 'how many', positiveInt('--limit'), 50)
    .action(async (o: { limit: number }) => {
      const r = await ctx.client().call('ListAudit', { limit: o.limit });
      ctx.out(r.entries, () =>
        table(r.entries, [
          { header: 'When', get: (e) => new Date(e.atMs).toISOString().replace('T', ' ').slice(0, 19), priority: 20 },
          { header: 'Who', get: (e) => e.who, priority: 20 },
          { header: 'Action', get: (e) => e.action, priority: 20 },
          { header: 'Target', get: (e) => e.target, priority: 15 },
          { header: 'Result', get: (e) => e.result, priority: 15 },
          { header: 'Detail', get: (e) => e.detail, priority: 1 },
        ]),
      );
    });
}

export type { JobResult };
