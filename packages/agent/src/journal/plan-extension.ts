/**
 * The host plan's `journal` key (optional; issue 7), part of planSchema in plan.ts.
 * `journalSettings(plan)` also accepts a raw plan object (tests build partial configs).
 *
 *   journal:
 *     enabled: true            # watch the trees and sync only what changed
 *     fullPassEvery:
 *       backups: 30            # every 30th backup of a tree is a full rsync pass...
 *       hours: 168             # ...and so is the first one more than a week after the last
 */
import { z } from 'zod';

export const journalPlanSchema = z
  .object({
    enabled: z.boolean().default(true),
    fullPassEvery: z
      .object({
        backups: z.number().int().positive().max(100_000).default(30),
        hours: z
          .number()
          .positive()
          .max(24 * 365)
          .default(168),
      })
      .strict()
      .default({ backups: 30, hours: 168 }),
  })
  .strict();

export type JournalPlan = z.output<typeof journalPlanSchema>;
export const JOURNAL_PLAN_DEFAULTS: JournalPlan = Object.freeze({ enabled: true, fullPassEvery: { backups: 30, hours: 168 } });

/** The plan's journal settings (defaults when the plan has no `journal` key). */
export function journalSettings(plan: object): JournalPlan {
  const raw = (plan as { journal?: unknown }).journal;
  if (raw === undefined) return JOURNAL_PLAN_DEFAULTS;
  return journalPlanSchema.parse(raw);
}
