/**
 * The overall line above the per-phase lines while the CLI follows jobs: percent of bytes,
 * rate and ETA across every job followed.
 *
 *   feed(job, progress) for every event -> each (job, phase) keeps its newest bytesDone and
 *   bytesTotal -> done = the sum of bytesDone over the phases that move the backup's data (not
 *   MANIFEST and VERIFY, which read it again) -> total = the larger of the job's expected
 *   size (the backup being restored; for a backup, the host's last Restorable one) and the sum
 *   of those phases' totals -> the rate is an exponentially weighted mean of done's growth
 *   (time constant RATE_TAU_S) -> the ETA is (total - done) / rate, itself smoothed
 *   (ETA_TAU_S) so that it does not jump with each burst of a phase.
 * Pure: the clock is passed in; watch.ts draws it.
 */
import { humanBytes, humanDuration } from './format.js';

/** Phases that re-read what earlier phases wrote: their bytes are not new progress. */
const REREAD = new Set(['MANIFEST', 'VERIFY']);
const RATE_TAU_S = 5;
const ETA_TAU_S = 10;

export interface ByteProgress {
  phase: string;
  bytesDone: number;
  bytesTotal: number;
}

export interface OverallView {
  done: number;
  total: number;
  /** 0-100, or null while no total is known. */
  percent: number | null;
  /** Bytes per second, smoothed (null until two samples a second apart). */
  rate: number | null;
  /** Seconds left, smoothed (null while the rate or total is unknown). */
  etaSeconds: number | null;
  jobs: number;
  ended: number;
}

export class Overall {
  private readonly phases = new Map<string, { done: number; total: number }>();
  private readonly expected = new Map<string, number>();
  private readonly ended = new Set<string>();
  private last?: { at: number; done: number };
  private rate?: number;
  private eta?: number;

  constructor(private readonly jobIds: string[]) {}

  /** The size a job is expected to move (the backup restored; the host's last backup). */
  expect(jobId: string, bytes: number): void {
    if (bytes > 0) this.expected.set(jobId, bytes);
  }

  feed(jobId: string, p: ByteProgress, nowMs: number): void {
    if (!REREAD.has(p.phase) && (p.bytesDone || p.bytesTotal)) {
      const key = `${jobId}\u0000${p.phase}`;
      const prev = this.phases.get(key);
      this.phases.set(key, { done: Math.max(prev?.done ?? 0, p.bytesDone), total: Math.max(prev?.total ?? 0, p.bytesTotal) });
    }
    this.sample(nowMs);
  }

  end(jobId: string, nowMs: number): void {
    this.ended.add(jobId);
    this.sample(nowMs);
  }

  private sums(): { done: number; total: number } {
    let done = 0;
    let total = 0;
    for (const id of this.jobIds) {
      let d = 0;
      let t = 0;
      for (const [k, v] of this.phases) {
        if (!k.startsWith(`${id}\u0000`)) continue;
        d += v.done;
        t += v.total;
      }
      // an ended job is complete, whatever its estimate said
      const tt = this.ended.has(id) ? d : Math.max(t, this.expected.get(id) ?? 0, d);
      done += d;
      total += tt;
    }
    return { done, total };
  }

  private sample(nowMs: number): void {
    const { done } = this.sums();
    if (!this.last) {
      this.last = { at: nowMs, done };
      return;
    }
    const dt = (nowMs - this.last.at) / 1000;
    if (dt < 1) return; // at most one rate sample a second
    const inst = Math.max(0, done - this.last.done) / dt;
    const a = 1 - Math.exp(-dt / RATE_TAU_S);
    this.rate = this.rate === undefined ? inst : this.rate + a * (inst - this.rate);
    this.last = { at: nowMs, done };
    const { total } = this.sums();
    if (this.rate > 0 && total > 0) {
      const raw = Math.max(0, total - done) / this.rate;
      const b = 1 - Math.exp(-dt / ETA_TAU_S);
      this.eta = this.eta === undefined ? raw : this.eta + b * (raw - this.eta);
    }
  }

  view(): OverallView {
    const { done, total } = this.sums();
    const allEnded = this.ended.size === this.jobIds.length;
    return {
      done,
      total,
      percent: total > 0 ? Math.min(100, Math.floor((100 * done) / total)) : allEnded ? 100 : null,
      rate: this.rate ?? null,
      etaSeconds: allEnded ? 0 : this.rate && this.eta !== undefined ? this.eta : null,
      jobs: this.jobIds.length,
      ended: this.ended.size,
    };
  }
}

/** "overall  42%  1.2 GiB of 2.9 GiB  85 MiB/s  ETA 2m10s  1 of 3 jobs ended". */
export function overallLine(v: OverallView, label = 'overall'): string {
  const parts = [label, v.percent === null ? '--%' : `${v.percent}%`];
  if (v.total) parts.push(`${humanBytes(v.done)} of ${humanBytes(v.total)}`);
  else if (v.done) parts.push(humanBytes(v.done));
  if (v.rate !== null) parts.push(`${humanBytes(Math.round(v.rate))}/s`);
  if (v.etaSeconds !== null && v.ended < v.jobs) parts.push(`ETA ${humanDuration(v.etaSeconds * 1000)}`);
  if (v.jobs > 1) parts.push(`${v.ended} of ${v.jobs} jobs ended`);
  return parts.join('  ');
}

/** What a phase's count counts: files for the phases that copy files, else its steps, services, tries... */
const UNITS: Record<string, string> = {
  PRE_BACKUP_SCRIPT: 'steps',
  POST_BACKUP_SCRIPT: 'steps',
  CLEANUP: 'steps',
  QUIESCE: 'datasets',
  STOP: 'services',
  START: 'services',
  RESUME: 'services',
  HEALTH_CHECK: 'tries',
  SWAP: 'targets',
  ROLLBACK: 'targets',
  CHOWN: 'paths',
  RESTORE_DATABASE: 'databases',
  EXTRACT: 'entries',
};

export function countUnit(phase: string): string {
  if (UNITS[phase]) return UNITS[phase];
  return /^(BACKUP_|SYNC_|MANIFEST|VERIFY|HOST_FILES|PUBLISH)/.test(phase) ? 'files' : 'items';
}
