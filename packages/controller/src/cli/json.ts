/**
 * The one JSON serializer of the CLI: every `--json` output (a document, or a line of
 * `status --watch` and `job logs --follow`) goes through toJson. The controller's messages
 * carry times as milliseconds since the epoch and "unset" as 0, '' or -1 (proto3 defaults);
 * a script should not have to know which. The rules, applied at every depth:
 *   1. A time (a key like createdAtMs, lastSeenMs, nextRunMs, atMs: see TIME_KEY) loses its
 *      "Ms" and becomes an RFC 3339 string in UTC (createdAt: "2026-11-21T20:10:00.000Z"),
 *      or null when unset (0).
 *   2. An empty string is null.
 *   3. A number that stands for "none" is null: lastGoodAgeSeconds and etaSeconds of -1, the
 *      duration of a drill that never ran or a quiesce window that never opened (0).
 *   4. rpoSeconds: the host's own RPO in seconds, null when it has none of its own (the
 *      controller's default applies), "none" for a drill-only spare (`--rpo none`).
 * Durations stay numbers of milliseconds (durationMs), counts and sizes stay numbers (0 is 0).
 */

/** Keys holding a point in time in ms since the epoch (the rest ending in Ms are durations). */
const TIME_KEY = /^(?:at|since|slot|mtime)Ms$|(?:At|Seen|Run|Used|Slot|After|Deadline)Ms$/;

/** Numbers that stand for "none" when they have this value. */
const NONE_WHEN: Record<string, number> = {
  lastGoodAgeSeconds: -1,
  etaSeconds: -1,
  drillDurationMs: 0,
  lastDrillDurationMs: 0,
  quiesceWindowMs: 0,
};

export function isTimeKey(key: string): boolean {
  return TIME_KEY.test(key);
}

function rfc3339(ms: unknown): string | null {
  const n = typeof ms === 'string' ? Number(ms) : ms;
  if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) return null;
  return new Date(n).toISOString();
}

function field(key: string, v: unknown): [string, unknown] {
  if (isTimeKey(key)) return [key.slice(0, -2), rfc3339(v)];
  if (key === 'rpoSeconds' && typeof v === 'number') return [key, v < 0 ? 'none' : v === 0 ? null : v];
  if (key in NONE_WHEN && (v === NONE_WHEN[key] || (typeof v === 'number' && v < 0))) return [key, null];
  return [key, plain(v)];
}

/** The value with the rules above applied (a new object; the input is not changed). */
export function plain(v: unknown): unknown {
  if (v === '' || v === undefined) return v === '' ? null : undefined;
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(plain);
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return Buffer.from(v).toString('base64');
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    const [key, value] = field(k, x);
    if (value !== undefined) out[key] = value;
  }
  return out;
}

/** `--json` text: pretty (a document) or one line (a stream of events). */
export function toJson(v: unknown, oneLine = false): string {
  return oneLine ? JSON.stringify(plain(v)) : JSON.stringify(plain(v), null, 2);
}
