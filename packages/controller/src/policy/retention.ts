/**
 * Retention: which backups of a host to keep and which to forget, as a pure function.
 *
 * Modelled on restic's `forget --keep-last/--keep-hourly/--keep-daily/--keep-weekly/--keep-monthly`
 * plus Platform.sh's "keep N manual": automated backups are thinned by the tiers, manual ones
 * are counted on their own. Steps, per host, newest first:
 *
 *   1. Queued/Running backups are kept ("in-progress"): they are not finished, not ours to judge.
 *   2. The newest Restorable backup is kept ("newest-restorable"), whatever the policy says,
 *      even with every keep-* set to 0: the only good backup is never silently deleted.
 *   3. Damaged backups (Completed, but a verification found a problem: `damagedAtMs` set) are
 *      kept ("damaged") until `keepDamagedDays` (default 30) have passed since that verification,
 *      then forgotten ("damaged-expired"); they never count as good. Without `nowMs` they never
 *      expire. The caller says so (webhook) when it deletes one.
 *   3b. The host's only backup that ever passed a restore drill is kept ("only-drilled") while it
 *      is Restorable: the one proof that the host restores is not thinned away.
 *   3c. Other non-restorable backups (Failed, PartiallyFailed) newer than the newest Restorable
 *      one are kept ("newer-than-newest-restorable": evidence of what is going wrong); older ones
 *      are forgotten ("not-restorable").
 *   4. Restorable automated backups go through the tiers. keepLast keeps the N newest. Each bucket
 *      tier (hourly, daily, weekly, monthly) walks the backups newest first and keeps the newest
 *      one of each bucket until it has kept N buckets; buckets are calendar hours, days, ISO weeks
 *      and months in the policy's time zone. Like restic >= 0.17, a bucket tier that found fewer
 *      than N buckets also keeps the oldest backup ("<tier>-oldest"). A backup kept by several
 *      tiers lists every reason.
 *   5. Restorable manual backups: the keepManual newest are kept ("manual").
 *   5b. A pinned backup (`boxback backup pin`) is always kept ("pinned"), whatever its status.
 *   6. A tier group with no keep-* set at all keeps everything ("no-policy"): an empty policy
 *      never deletes; an explicit 0 does.
 *
 * Everything else is forgotten ("outside-policy"). The caller deletes; this module only plans,
 * which is also what `boxback backups prune --dry-run` prints.
 */
import { z } from 'zod';
import { BoxbackError } from '@boxback/common';

const keep = z.number().int().nonnegative();

/** The retention policy as the controller's config spells it. Every key is optional. */
export const retentionPolicySchema = z
  .object({
    /** Keep the N newest automated Restorable backups. */
    keepLast: keep.optional(),
    /** Keep the newest automated Restorable backup of each of the last N hours that have one. */
    keepHourly: keep.optional(),
    /** ... of each of the last N days that have one. */
    keepDaily: keep.optional(),
    /** ... of each of the last N ISO weeks (Monday to Sunday) that have one. */
    keepWeekly: keep.optional(),
    /** ... of each of the last N calendar months that have one. */
    keepMonthly: keep.optional(),
    /** Keep the N newest manual Restorable backups (unset: manual backups are never pruned). */
    keepManual: keep.optional(),
    /** Keep a damaged backup (failed verification) this many days after it was found damaged (default 30). */
    keepDamagedDays: z.number().nonnegative().optional(),
  })
  .strict();

export type RetentionPolicy = z.infer<typeof retentionPolicySchema>;

export type RetentionBackupStatus = 'Queued' | 'Running' | 'Completed' | 'PartiallyFailed' | 'Failed';

/** What retention needs to know about one backup (a catalog row maps onto it directly). */
export interface BackupForRetention {
  id: string;
  host: string;
  createdAtMs: number;
  restorable: boolean;
  /** Taken on request (CLI), not by a schedule. */
  manual: boolean;
  /** Queued and Running backups are never forgotten. Missing: treated as finished. */
  status?: RetentionBackupStatus | string;
  /** When a verification found it damaged (0 or missing: not damaged). */
  damagedAtMs?: number;
  /** When a restore drill of it last passed (0 or missing: never). */
  drillPassedAtMs?: number;
  /** Pinned by an operator: never forgotten. */
  pinned?: boolean;
}

/** The default of keepDamagedDays. */
export const DEFAULT_KEEP_DAMAGED_DAYS = 30;

export type KeepReason =
  | 'in-progress'
  | 'newest-restorable'
  | 'newer-than-newest-restorable'
  | 'damaged'
  | 'only-drilled'
  | 'last'
  | 'hourly'
  | 'daily'
  | 'weekly'
  | 'monthly'
  | 'hourly-oldest'
  | 'daily-oldest'
  | 'weekly-oldest'
  | 'monthly-oldest'
  | 'manual'
  | 'pinned'
  | 'no-policy';

export type ForgetReason = 'not-restorable' | 'damaged-expired' | 'outside-policy';

export interface RetentionKeep {
  id: string;
  host: string;
  createdAtMs: number;
  reasons: KeepReason[];
}

export interface RetentionForget {
  id: string;
  host: string;
  createdAtMs: number;
  reason: ForgetReason;
}

/** Both lists newest first, hosts in name order. Every input backup is in exactly one list. */
export interface RetentionPlan {
  keep: RetentionKeep[];
  forget: RetentionForget[];
}

// ---------------------------------------------------------------------------------------------
// Calendar buckets in a time zone

interface LocalParts {
  year: number;
  month: number;
  day: number;
  hour: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterFor(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat('en-US', {
        timeZone: tz,
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        hourCycle: 'h23',
      });
    } catch {
      throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `unknown time zone "${tz}": want an IANA name such as UTC or Europe/Berlin`);
    }
    formatters.set(tz, f);
  }
  return f;
}

/** True when `tz` is an IANA time zone name this Node knows. */
export function isValidTimeZone(tz: string): boolean {
  try {
    formatterFor(tz);
    return true;
  } catch {
    return false;
  }
}

function localParts(ms: number, tz: string): LocalParts {
  const out: LocalParts = { year: 0, month: 0, day: 0, hour: 0 };
  for (const p of formatterFor(tz).formatToParts(new Date(ms))) {
    if (p.type === 'year' || p.type === 'month' || p.type === 'day' || p.type === 'hour') out[p.type] = Number(p.value);
  }
  return out;
}

/** ISO 8601 week ("2026-W47") of a local calendar date: weeks start on Monday, week 1 holds January 4. */
export function isoWeekKey(year: number, month: number, day: number): string {
  const d = new Date(Date.UTC(year, month - 1, day));
  const mondayBased = (d.getUTCDay() + 6) % 7;
  d.setUTCDate(d.getUTCDate() - mondayBased + 3); // the Thursday of this week decides its year
  const weekYear = d.getUTCFullYear();
  const week = 1 + Math.floor((d.getTime() - Date.UTC(weekYear, 0, 1)) / (7 * 86_400_000));
  return `${weekYear}-W${String(week).padStart(2, '0')}`;
}

const pad = (n: number): string => String(n).padStart(2, '0');

type BucketTier = 'hourly' | 'daily' | 'weekly' | 'monthly';

function bucketKey(tier: BucketTier, p: LocalParts): string {
  switch (tier) {
    case 'hourly':
      return `${p.year}-${pad(p.month)}-${pad(p.day)}T${pad(p.hour)}`;
    case 'daily':
      return `${p.year}-${pad(p.month)}-${pad(p.day)}`;
    case 'weekly':
      return isoWeekKey(p.year, p.month, p.day);
    case 'monthly':
      return `${p.year}-${pad(p.month)}`;
  }
}

// ---------------------------------------------------------------------------------------------
// The plan

const IN_PROGRESS = new Set(['Queued', 'Running']);

const newestFirst = (a: BackupForRetention, b: BackupForRetention): number =>
  b.createdAtMs - a.createdAtMs || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);

/**
 * Plan retention for every host in `backups` with one policy; `tz` is the IANA zone the
 * calendar buckets are cut in; `nowMs` the clock damaged backups age by (injected; without it
 * they never expire). Throws BOXBACK_ERR_INVALID_ARGUMENT for an unknown zone or a policy that
 * does not validate.
 */
export function planRetention(backups: readonly BackupForRetention[], policy: RetentionPolicy, tz = 'UTC', nowMs?: number): RetentionPlan {
  const parsed = retentionPolicySchema.safeParse(policy);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new BoxbackError(
      'BOXBACK_ERR_INVALID_ARGUMENT',
      `bad retention policy: ${first?.path.join('.') || 'policy'}: ${first?.message ?? 'invalid'}`,
    );
  }
  formatterFor(tz); // fail early on a bad zone, even with no backups
  const byHost = new Map<string, BackupForRetention[]>();
  for (const b of backups) {
    const list = byHost.get(b.host) ?? [];
    list.push(b);
    byHost.set(b.host, list);
  }
  const plan: RetentionPlan = { keep: [], forget: [] };
  for (const host of [...byHost.keys()].sort()) {
    const one = planHost(byHost.get(host) ?? [], parsed.data, tz, nowMs);
    plan.keep.push(...one.keep);
    plan.forget.push(...one.forget);
  }
  return plan;
}

function planHost(list: BackupForRetention[], policy: RetentionPolicy, tz: string, nowMs: number | undefined): RetentionPlan {
  const sorted = [...list].sort(newestFirst);
  const reasons = new Map<string, KeepReason[]>();
  const add = (b: BackupForRetention, r: KeepReason): void => {
    const rs = reasons.get(b.id) ?? [];
    if (!rs.includes(r)) rs.push(r);
    reasons.set(b.id, rs);
  };

  const finished = sorted.filter((b) => !IN_PROGRESS.has(b.status ?? ''));
  for (const b of sorted) if (IN_PROGRESS.has(b.status ?? '')) add(b, 'in-progress');

  const restorable = finished.filter((b) => b.restorable);
  const newest = restorable[0];
  if (newest) add(newest, 'newest-restorable');
  const forgetAs = new Map<string, ForgetReason>();
  const damagedFor = (policy.keepDamagedDays ?? DEFAULT_KEEP_DAMAGED_DAYS) * 86_400_000;
  for (const b of finished) {
    if (b.restorable) continue;
    if (b.damagedAtMs) {
      if (nowMs === undefined || nowMs - b.damagedAtMs < damagedFor) add(b, 'damaged');
      else forgetAs.set(b.id, 'damaged-expired');
    } else if (!newest || b.createdAtMs > newest.createdAtMs) add(b, 'newer-than-newest-restorable');
    else forgetAs.set(b.id, 'not-restorable');
  }
  const drilled = finished.filter((b) => (b.drillPassedAtMs ?? 0) > 0);
  if (drilled.length === 1 && drilled[0].restorable) add(drilled[0], 'only-drilled');

  applyAutomatedTiers(
    restorable.filter((b) => !b.manual),
    policy,
    tz,
    add,
  );
  const manual = restorable.filter((b) => b.manual);
  if (policy.keepManual === undefined) for (const b of manual) add(b, 'no-policy');
  else for (const b of manual.slice(0, policy.keepManual)) add(b, 'manual');
  for (const b of sorted) if (b.pinned) add(b, 'pinned');

  const plan: RetentionPlan = { keep: [], forget: [] };
  for (const b of sorted) {
    const rs = reasons.get(b.id);
    if (rs) plan.keep.push({ id: b.id, host: b.host, createdAtMs: b.createdAtMs, reasons: rs });
    else
      plan.forget.push({
        id: b.id,
        host: b.host,
        createdAtMs: b.createdAtMs,
        reason: forgetAs.get(b.id) ?? 'outside-policy',
      });
  }
  return plan;
}

/** Step 4: keepLast and the bucket tiers over automated Restorable backups, newest first. */
function applyAutomatedTiers(
  auto: BackupForRetention[],
  policy: RetentionPolicy,
  tz: string,
  add: (b: BackupForRetention, r: KeepReason) => void,
): void {
  const tiers: [BucketTier, number | undefined][] = [
    ['hourly', policy.keepHourly],
    ['daily', policy.keepDaily],
    ['weekly', policy.keepWeekly],
    ['monthly', policy.keepMonthly],
  ];
  if (policy.keepLast === undefined && tiers.every(([, n]) => n === undefined)) {
    for (const b of auto) add(b, 'no-policy');
    return;
  }
  for (const b of auto.slice(0, policy.keepLast ?? 0)) add(b, 'last');

  const parts = auto.map((b) => localParts(b.createdAtMs, tz));
  for (const [tier, n] of tiers) {
    if (!n) continue;
    let left = n;
    let lastKey: string | undefined;
    for (let i = 0; i < auto.length && left > 0; i++) {
      const key = bucketKey(tier, parts[i]);
      if (key === lastKey) continue;
      lastKey = key;
      add(auto[i], tier);
      left--;
    }
    const oldest = auto[auto.length - 1];
    if (left > 0 && oldest) add(oldest, `${tier}-oldest`);
  }
}

/** A one-line summary for logs and dry runs: "gocd1: keep 12, forget 30". */
export function summarizePlan(plan: RetentionPlan): string {
  const hosts = new Map<string, { keep: number; forget: number }>();
  for (const k of plan.keep) (hosts.get(k.host) ?? hosts.set(k.host, { keep: 0, forget: 0 }).get(k.host)!).keep++;
  for (const f of plan.forget) (hosts.get(f.host) ?? hosts.set(f.host, { keep: 0, forget: 0 }).get(f.host)!).forget++;
  return [...hosts.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([h, c]) => `${h}: keep ${c.keep}, forget ${c.forget}`)
    .join('; ');
}
