import { describe, expect, it } from 'vitest';
import { BoxbackError } from '@boxback/common';
import {
  isoWeekKey,
  planRetention,
  retentionPolicySchema,
  summarizePlan,
  type BackupForRetention,
  type RetentionPlan,
} from '../../packages/controller/src/policy/index.js';

const H = 3_600_000;
const D = 24 * H;
const iso = (s: string): number => Date.parse(s);
const idAt = (ms: number, prefix = 'a'): string => `${prefix}-${new Date(ms).toISOString().slice(0, 16)}`;

/**
 * 90 days of history for gocd1: a schedule every 6 hours at 05:30, 11:30, 17:30 and 23:30 UTC
 * (in Berlin 23:30Z is already the next day), from 2026-08-22 to 2026-11-20 17:30Z; one of them
 * Failed; five manual backups; a Failed and a Running backup newer than the newest Restorable.
 */
function history(): BackupForRetention[] {
  const out: BackupForRetention[] = [];
  for (let t = iso('2026-08-22T05:30:00Z'); t <= iso('2026-11-20T17:30:00Z'); t += 6 * H) {
    out.push({ id: idAt(t), host: 'gocd1', createdAtMs: t, restorable: true, manual: false, status: 'Completed' });
  }
  const failed = out.find((b) => b.createdAtMs === iso('2026-10-10T11:30:00Z'))!;
  failed.restorable = false;
  failed.status = 'Failed';
  for (const m of ['2026-09-05T09:00Z', '2026-10-01T09:00Z', '2026-11-02T09:00Z', '2026-11-18T09:00Z', '2026-11-19T09:00Z']) {
    out.push({ id: idAt(iso(m), 'm'), host: 'gocd1', createdAtMs: iso(m), restorable: true, manual: true, status: 'Completed' });
  }
  out.push({
    id: 'late-failed',
    host: 'gocd1',
    createdAtMs: iso('2026-11-20T20:00:00Z'),
    restorable: false,
    manual: false,
    status: 'Failed',
  });
  out.push({ id: 'running', host: 'gocd1', createdAtMs: iso('2026-11-20T21:00:00Z'), restorable: false, manual: false, status: 'Running' });
  return out;
}

const keptIds = (p: RetentionPlan): string[] => p.keep.map((k) => k.id);
const keptAutomated = (p: RetentionPlan): string[] => keptIds(p).filter((id) => id.startsWith('a-'));
const reasonsOf = (p: RetentionPlan, id: string): string[] | undefined => p.keep.find((k) => k.id === id)?.reasons;
const a = (s: string): string => idAt(iso(s));

function expectPartition(input: BackupForRetention[], plan: RetentionPlan): void {
  const all = [...keptIds(plan), ...plan.forget.map((f) => f.id)];
  expect(all.length).toBe(input.length);
  expect(new Set(all)).toEqual(new Set(input.map((b) => b.id)));
}

describe('retention on 90 days of history', () => {
  const input = history();

  it('has a realistic history', () => {
    expect(input.length).toBe(363 + 5 + 2); // 90.5 days x 4 a day, 5 manual, 2 unfinished or failed
  });

  it('keepDaily 7 in Europe/Berlin keeps the newest backup of each of the last 7 local days', () => {
    const plan = planRetention(input, { keepDaily: 7, keepManual: 2 }, 'Europe/Berlin');
    expectPartition(input, plan);
    // 23:30Z is 00:30 the next day in Berlin (CET), so each local day's newest is its 17:30Z backup.
    expect(keptAutomated(plan)).toEqual(['20', '19', '18', '17', '16', '15', '14'].map((d) => a(`2026-11-${d}T17:30:00Z`)));
    expect(reasonsOf(plan, a('2026-11-20T17:30:00Z'))).toEqual(['newest-restorable', 'daily']);
    expect(reasonsOf(plan, a('2026-11-14T17:30:00Z'))).toEqual(['daily']);
    expect(reasonsOf(plan, 'running')).toEqual(['in-progress']);
    expect(reasonsOf(plan, 'late-failed')).toEqual(['newer-than-newest-restorable']);
    expect(reasonsOf(plan, 'm-2026-11-19T09:00')).toEqual(['manual']);
    expect(reasonsOf(plan, 'm-2026-11-18T09:00')).toEqual(['manual']);
    expect(plan.keep.length).toBe(7 + 2 + 2);
    expect(plan.forget.find((f) => f.id === a('2026-10-10T11:30:00Z'))?.reason).toBe('not-restorable');
    expect(plan.forget.find((f) => f.id === a('2026-11-20T11:30:00Z'))?.reason).toBe('outside-policy');
    expect(plan.forget.find((f) => f.id === 'm-2026-11-02T09:00')?.reason).toBe('outside-policy');
    expect(summarizePlan(plan)).toBe(`gocd1: keep 11, forget ${input.length - 11}`);
  });

  it('cuts days in the policy time zone: the same policy in UTC keeps the 23:30Z backups', () => {
    const plan = planRetention(input, { keepDaily: 7, keepManual: 0 }, 'UTC');
    expect(keptAutomated(plan)).toEqual([
      a('2026-11-20T17:30:00Z'),
      ...['19', '18', '17', '16', '15', '14'].map((d) => a(`2026-11-${d}T23:30:00Z`)),
    ]);
    expect(keptIds(plan).filter((id) => id.startsWith('m-'))).toEqual([]);
  });

  it('keepWeekly 4 keeps the newest backup of each ISO week (Monday to Sunday, local time)', () => {
    expect(isoWeekKey(2026, 11, 20)).toBe('2026-W47');
    expect(isoWeekKey(2027, 1, 1)).toBe('2026-W53');
    expect(isoWeekKey(2024, 12, 30)).toBe('2025-W01');
    const berlin = planRetention(input, { keepWeekly: 4 }, 'Europe/Berlin');
    // Sunday 23:30Z is already Monday in Berlin, so the week's newest is Sunday 17:30Z.
    expect(keptAutomated(berlin)).toEqual(['20', '15', '08', '01'].map((d) => a(`2026-11-${d}T17:30:00Z`)));
    const utc = planRetention(input, { keepWeekly: 4 }, 'UTC');
    expect(keptAutomated(utc)).toEqual([a('2026-11-20T17:30:00Z'), ...['15', '08', '01'].map((d) => a(`2026-11-${d}T23:30:00Z`))]);
    // keepManual unset: manual backups are not pruned at all.
    expect(keptIds(berlin).filter((id) => id.startsWith('m-')).length).toBe(5);
    expect(reasonsOf(berlin, 'm-2026-09-05T09:00')).toEqual(['no-policy']);
  });

  it('keepMonthly 6 with 4 months of history keeps each month and the oldest backup too (like restic)', () => {
    const plan = planRetention(input, { keepMonthly: 6 }, 'Europe/Berlin');
    expect(keptAutomated(plan)).toEqual([
      a('2026-11-20T17:30:00Z'),
      a('2026-10-31T17:30:00Z'), // 23:30Z on Oct 31 is Nov 1 in Berlin
      a('2026-09-30T17:30:00Z'), // 23:30Z on Sep 30 is Oct 1, 01:30 CEST
      a('2026-08-31T17:30:00Z'),
      a('2026-08-22T05:30:00Z'),
    ]);
    expect(reasonsOf(plan, a('2026-08-22T05:30:00Z'))).toEqual(['monthly-oldest']);
  });

  it('combines tiers like restic: keepLast 3, keepHourly 2, keepDaily 3, and lists every reason', () => {
    const plan = planRetention(input, { keepLast: 3, keepHourly: 2, keepDaily: 3 }, 'UTC');
    expect(keptAutomated(plan)).toEqual([
      a('2026-11-20T17:30:00Z'),
      a('2026-11-20T11:30:00Z'),
      a('2026-11-20T05:30:00Z'),
      a('2026-11-19T23:30:00Z'),
      a('2026-11-18T23:30:00Z'),
    ]);
    expect(reasonsOf(plan, a('2026-11-20T17:30:00Z'))).toEqual(['newest-restorable', 'last', 'hourly', 'daily']);
    expect(reasonsOf(plan, a('2026-11-20T11:30:00Z'))).toEqual(['last', 'hourly']);
    expect(reasonsOf(plan, a('2026-11-20T05:30:00Z'))).toEqual(['last']);
    expect(reasonsOf(plan, a('2026-11-19T23:30:00Z'))).toEqual(['daily']);
  });

  it('an all-zero policy forgets everything but the newest Restorable backup and unfinished work', () => {
    const zero = { keepLast: 0, keepHourly: 0, keepDaily: 0, keepWeekly: 0, keepMonthly: 0, keepManual: 0 };
    const plan = planRetention(input, zero, 'Europe/Berlin');
    expectPartition(input, plan);
    expect(keptIds(plan)).toEqual(['running', 'late-failed', a('2026-11-20T17:30:00Z')]);
    expect(plan.forget.length).toBe(input.length - 3);
  });

  it('never forgets the newest Restorable backup even when it is manual, or when it is the only good one', () => {
    const b = (id: string, t: string, restorable: boolean, manual = false): BackupForRetention => ({
      id,
      host: 'h',
      createdAtMs: iso(t),
      restorable,
      manual,
      status: restorable ? 'Completed' : 'Failed',
    });
    const zero = { keepLast: 0, keepManual: 0 };
    const manualNewest = [b('old', '2026-01-01T00:00Z', true), b('man', '2026-01-02T00:00Z', true, true)];
    expect(keptIds(planRetention(manualNewest, zero))).toEqual(['man']);
    const onlyGood = [b('f3', '2026-01-04T00:00Z', false), b('good', '2026-01-03T00:00Z', true), b('f1', '2026-01-01T00:00Z', false)];
    const p = planRetention(onlyGood, zero);
    expect(keptIds(p)).toEqual(['f3', 'good']);
    expect(p.forget).toEqual([{ id: 'f1', host: 'h', createdAtMs: iso('2026-01-01T00:00Z'), reason: 'not-restorable' }]);
    // No Restorable backup at all: nothing to compare against, so failed ones stay for diagnosis.
    expect(keptIds(planRetention([b('f1', '2026-01-01T00:00Z', false)], zero))).toEqual(['f1']);
  });

  it('an empty policy deletes nothing restorable', () => {
    const plan = planRetention(input, {}, 'UTC');
    expect(plan.forget.map((f) => f.id)).toEqual([a('2026-10-10T11:30:00Z')]);
  });

  it('plans each host on its own', () => {
    const other: BackupForRetention[] = [0, 1, 2].map((i) => ({
      id: `c${i}`,
      host: 'circle1',
      createdAtMs: iso('2026-11-01T00:00Z') + i * D,
      restorable: true,
      manual: false,
    }));
    const plan = planRetention([...input, ...other], { keepLast: 1, keepManual: 0 }, 'UTC');
    expect(plan.keep.filter((k) => k.host === 'circle1').map((k) => k.id)).toEqual(['c2']);
    expect(plan.keep.filter((k) => k.host === 'gocd1').map((k) => k.id)).toEqual(['running', 'late-failed', a('2026-11-20T17:30:00Z')]);
    expect(plan.forget.filter((f) => f.host === 'circle1').map((f) => f.id)).toEqual(['c1', 'c0']);
  });

  it('rejects a bad zone or policy with a clear error', () => {
    expect(() => planRetention(input, { keepDaily: 7 }, 'Mars/Olympus')).toThrow(BoxbackError);
    expect(() => planRetention(input, { keepDaily: 7 }, 'Mars/Olympus')).toThrow(/unknown time zone "Mars\/Olympus"/);
    expect(() => planRetention(input, { keepDaily: -1 })).toThrow(/keepDaily/);
    expect(retentionPolicySchema.safeParse({ keepDaily: 1.5 }).success).toBe(false);
    expect(retentionPolicySchema.safeParse({ keepYearly: 1 }).success).toBe(false);
    expect(retentionPolicySchema.parse({ keepDaily: 7, keepManual: 3 })).toEqual({ keepDaily: 7, keepManual: 3 });
  });
});

describe('damaged backups and drill evidence', () => {
  const now = iso('2026-11-20T12:00:00Z');
  const b = (id: string, daysAgo: number, over: Partial<BackupForRetention> = {}): BackupForRetention => ({
    id,
    host: 'gocd1',
    createdAtMs: now - daysAgo * D,
    restorable: true,
    manual: false,
    status: 'Completed',
    ...over,
  });

  it('keeps a damaged backup (older than the newest good one) until keepDamagedDays pass, and never counts it', () => {
    const list = [b('new', 1), b('mid', 5), b('bad', 10, { restorable: false, damagedAtMs: now - 3 * D })];
    const plan = planRetention(list, { keepLast: 1 }, 'UTC', now);
    expectPartition(list, plan);
    expect(reasonsOf(plan, 'bad')).toEqual(['damaged']);
    expect(reasonsOf(plan, 'new')).toEqual(['newest-restorable', 'last']); // the damaged one took no slot
    expect(plan.forget.map((f) => [f.id, f.reason])).toEqual([['mid', 'outside-policy']]);

    // default 30 days since it was found damaged; then it goes, as "damaged-expired"
    const later = planRetention(list, { keepLast: 1 }, 'UTC', now + 28 * D);
    expect(later.forget.find((f) => f.id === 'bad')?.reason).toBe('damaged-expired');
    const short = planRetention(list, { keepLast: 1, keepDamagedDays: 2 }, 'UTC', now);
    expect(short.forget.find((f) => f.id === 'bad')?.reason).toBe('damaged-expired');
    // no clock: a damaged backup never expires
    expect(reasonsOf(planRetention(list, { keepLast: 1, keepDamagedDays: 0 }), 'bad')).toEqual(['damaged']);
  });

  it('a Failed backup older than the newest good one is still forgotten as not-restorable', () => {
    const list = [b('new', 1), b('failed', 3, { restorable: false, status: 'Failed' })];
    expect(planRetention(list, { keepLast: 1 }, 'UTC', now).forget).toMatchObject([{ id: 'failed', reason: 'not-restorable' }]);
  });

  it("keeps the host's only drilled backup, and thins it once another drill passed", () => {
    const list = [b('new', 1), b('mid', 5), b('drilled', 20, { drillPassedAtMs: now - 19 * D })];
    const plan = planRetention(list, { keepLast: 1 }, 'UTC', now);
    expect(reasonsOf(plan, 'drilled')).toEqual(['only-drilled']);
    expect(plan.forget.map((f) => f.id)).toEqual(['mid']);

    const two = planRetention(
      [...list.slice(0, 2), { ...list[2] }, b('drilled2', 2, { drillPassedAtMs: now - D })],
      { keepLast: 1 },
      'UTC',
      now,
    );
    expect(two.forget.map((f) => f.id).sort()).toEqual(['drilled', 'drilled2', 'mid']);
  });
});

describe('pinned backups', () => {
  it('keeps a pinned backup whatever the policy says: outside every tier, or not Restorable', () => {
    const input = history();
    const oldest = input[0];
    const failed = input.find((b) => b.status === 'Failed' && b.id !== 'late-failed')!;
    oldest.pinned = true;
    failed.pinned = true;
    const policy = retentionPolicySchema.parse({ keepLast: 1, keepManual: 0 });
    const plan = planRetention(input, policy, 'UTC');
    expectPartition(input, plan);
    expect(reasonsOf(plan, oldest.id)).toEqual(['pinned']);
    expect(reasonsOf(plan, failed.id)).toEqual(['pinned']);
    // unpinned, the same policy forgets both
    oldest.pinned = false;
    failed.pinned = false;
    const again = planRetention(input, policy, 'UTC');
    expect(again.forget.map((f) => f.id)).toEqual(expect.arrayContaining([oldest.id, failed.id]));
  });
});
