/**
 * What every agent job (backup, restore) receives: the config, a per-job logger, a
 * cancellation signal (cancelled RPC, lost controller, SIGTERM) and a progress emitter.
 * Jobs return a JobResult; they throw only for bugs.
 */
import type { Logger, Progress } from '@boxback/common';
import type { AgentConfig } from './config.js';
import type { Journals } from './journal/index.js';

export interface ProgressUpdate {
  phase: string;
  state?: Progress['state'];
  bytesDone?: number;
  bytesTotal?: number;
  filesDone?: number;
  filesTotal?: number;
  message?: string;
}

export interface JobContext {
  readonly config: AgentConfig;
  readonly log: Logger;
  readonly jobId: string;
  /** Aborted when the caller goes away or the agent shuts down. */
  readonly signal: AbortSignal;
  /** The trees' change journals (absent in tests that run jobs without them: every tree sync is full). */
  readonly journals?: Journals;
  /** Send a progress event (rate and ETA are computed by the emitter). */
  emit(update: ProgressUpdate): void;
}

/** Turns progress updates into Progress events with rate and ETA per phase. */
export class ProgressTracker {
  private phaseStart = new Map<string, { at: number; bytes: number }>();
  last: Progress | undefined;
  constructor(
    private readonly jobId: string,
    private readonly sink: (p: Progress) => void,
  ) {}

  emit(u: ProgressUpdate): void {
    const now = Date.now();
    let start = this.phaseStart.get(u.phase);
    if (!start) {
      start = { at: now, bytes: u.bytesDone ?? 0 };
      this.phaseStart.set(u.phase, start);
    }
    const bytesDone = u.bytesDone ?? 0;
    const bytesTotal = u.bytesTotal ?? 0;
    const elapsed = (now - start.at) / 1000;
    const rate = elapsed > 0.2 ? (bytesDone - start.bytes) / elapsed : 0;
    const eta = rate > 0 && bytesTotal > 0 ? Math.max(0, (bytesTotal - bytesDone) / rate) : -1;
    const p: Progress = {
      jobId: this.jobId,
      phase: u.phase,
      state: u.state ?? 'running',
      bytesDone,
      bytesTotal,
      filesDone: u.filesDone ?? 0,
      filesTotal: u.filesTotal ?? 0,
      rateBytesPerSec: rate,
      etaSeconds: eta,
      message: u.message ?? '',
      atMs: now,
    };
    this.last = p;
    this.sink(p);
  }
}
