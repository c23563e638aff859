/**
 * Following jobs from the CLI: one WatchJob stream per job, all at once.
 * On a TTY, an overall bar (percent of bytes, smoothed rate and ETA across every job:
 * overall.ts) over one cli-progress bar per host (phase, its count in its own unit: steps,
 * services, files..., bytes); otherwise one plain line per host when its phase or state
 * changes (and at most every 5 s while running), and the overall line at most every 10 s.
 * With --json nothing is printed while following. Returns every job's final result.
 * Ctrl-C (SIGINT) while following: the bars stop, the terminal gets its cursor and line
 * wrap back, each unfinished job is named ("job X goes on; `boxback job watch X`") and the
 * CLI exits 130. The jobs are not cancelled (that is `boxback job cancel`).
 */
import cliProgress from 'cli-progress';
import { ExitCode, emptyResult, type JobResult, type Progress } from '@boxback/common';
import type { ControllerClient } from './connection.js';
import { humanBytes, humanDuration } from './format.js';
import { Overall, countUnit, overallLine } from './overall.js';

export interface WatchedJob {
  id: string;
  host: string;
  kind: string;
  /** The backup a restore or drill restores (its size is what the job moves). */
  backupId?: string;
}

export interface FollowOptions {
  json: boolean;
  tty: boolean;
  /** Write a line (plain mode); defaults to stdout. */
  print?: (line: string) => void;
  /** Called with every progress event (after the bars or lines are updated). */
  onProgress?: (p: Progress, job: WatchedJob) => void;
}

/** Show the cursor and turn line wrap back on, on whichever stream is a terminal. */
export function restoreTerminal(): void {
  for (const s of [process.stderr, process.stdout]) if (s.isTTY) s.write('\x1b[?25h\x1b[?7h');
}

/** While following: Ctrl-C leaves the jobs running, says how to follow them again, exits 130. */
function onInterrupt(pending: Set<string>, stopBars: () => void): () => void {
  const handler = () => {
    stopBars();
    restoreTerminal();
    const lines = [...pending].map((id) => `job ${id} goes on; \`boxback job watch ${id}\``);
    process.stderr.write(`\n${lines.join('\n')}\n`);
    process.exit(ExitCode.INTERRUPTED);
  };
  process.on('SIGINT', handler);
  return () => process.off('SIGINT', handler);
}

function counts(p: Progress): { files: string; bytes: string; eta: string } {
  const unit = countUnit(p.phase);
  const files = p.filesTotal ? `${p.filesDone}/${p.filesTotal} ${unit}` : p.filesDone ? `${p.filesDone} ${unit}` : '';
  const bytes = p.bytesTotal ? `${humanBytes(p.bytesDone)}/${humanBytes(p.bytesTotal)}` : p.bytesDone ? humanBytes(p.bytesDone) : '';
  const eta = p.etaSeconds >= 0 ? `ETA ${humanDuration(p.etaSeconds * 1000)}` : '';
  return { files, bytes, eta };
}

export function progressLine(host: string, p: Progress, hostWidth = 12): string {
  const c = counts(p);
  return [host.padEnd(hostWidth), p.phase.padEnd(22), p.state.padEnd(8), c.files, c.bytes, c.eta, p.message]
    .filter((s) => s !== '')
    .join('  ')
    .trimEnd();
}

/**
 * What each job is expected to move, asked in the background (a handful of jobs only): a
 * restore or drill, the size of its backup; a backup, that of the host's last Restorable one.
 */
function expectSizes(client: ControllerClient, jobs: WatchedJob[], overall: Overall): void {
  if (jobs.length > 20) return;
  for (const j of jobs) {
    const size = j.backupId
      ? client.call('GetBackup', { id: j.backupId }).then((b) => b.sizeBytes)
      : j.kind === 'backup'
        ? client
            .call('ListBackups', { host: j.host, label: '', status: 'restorable', sinceMs: 0, limit: 1 })
            .then((r) => r.backups[0]?.sizeBytes ?? 0)
        : Promise.resolve(0);
    size.then(
      (n) => overall.expect(j.id, Number(n)),
      () => undefined, // only an estimate
    );
  }
}

export async function followJobs(client: ControllerClient, jobs: WatchedJob[], o: FollowOptions): Promise<JobResult[]> {
  const print = o.print ?? ((l: string) => process.stdout.write(`${l}\n`));
  const hostWidth = Math.max(4, ...jobs.map((j) => j.host.length), 'overall'.length);
  const overall = new Overall(jobs.map((j) => j.id));
  if (!o.json) expectSizes(client, jobs, overall);
  let lastOverallPrint = Date.now();
  const bars =
    !o.json && o.tty
      ? new cliProgress.MultiBar(
          {
            format: `{host} |{bar}| {percentage}% {phase} {files} {bytes} {etaText}`,
            barsize: 24,
            hideCursor: true,
            clearOnComplete: false,
            stopOnComplete: false,
            forceRedraw: true,
          },
          cliProgress.Presets.shades_classic,
        )
      : undefined;

  const overallBar = bars?.create(100, 0, {}, { format: '{line}' });
  const drawOverall = () => {
    const line = overallLine(overall.view(), 'overall'.padEnd(hostWidth));
    if (overallBar) overallBar.update(overall.view().percent ?? 0, { line });
    else if (!o.json && Date.now() - lastOverallPrint >= 10_000 && overall.view().done > 0) {
      lastOverallPrint = Date.now();
      print(line);
    }
  };
  drawOverall();
  const pending = new Set(jobs.map((j) => j.id));
  const offInterrupt = onInterrupt(pending, () => bars?.stop());
  const one = async (job: WatchedJob): Promise<JobResult> => {
    const bar = bars?.create(1, 0, { host: job.host.padEnd(hostWidth), phase: 'queued', files: '', bytes: '', etaText: '' });
    let lastKey = '';
    let lastPrint = 0;
    let result: JobResult | undefined;
    try {
      for await (const ev of client.stream('WatchJob', { id: job.id })) {
        if (ev.result) {
          result = ev.result;
          break;
        }
        const p = ev.progress;
        if (!p) continue;
        overall.feed(job.id, p, Date.now());
        if (bar) {
          const c = counts(p);
          const total = p.bytesTotal || p.filesTotal || 1;
          const done = p.bytesTotal ? p.bytesDone : p.filesTotal ? p.filesDone : p.state === 'done' ? 1 : 0;
          bar.setTotal(total);
          bar.update(Math.min(done, total), { phase: `${p.phase} ${p.state}`, files: c.files, bytes: c.bytes, etaText: c.eta });
        } else if (!o.json) {
          const key = `${p.phase}/${p.state}`;
          const now = Date.now();
          if (key !== lastKey || now - lastPrint >= 5_000) {
            lastKey = key;
            lastPrint = now;
            print(progressLine(job.host, p, hostWidth));
          }
        }
        drawOverall();
        o.onProgress?.(p, job);
      }
    } catch (err) {
      result = {
        ...emptyResult(job.id),
        status: 'Failed',
        errorCode: (err as { code?: string }).code ?? '',
        errorMessage: `lost the job stream: ${(err as Error).message}`,
      };
    }
    result ??= { ...emptyResult(job.id), status: 'Failed', errorMessage: 'the controller ended the job stream without a result' };
    pending.delete(job.id);
    overall.end(job.id, Date.now());
    drawOverall();
    if (bar) {
      bar.setTotal(1);
      bar.update(1, { phase: result.status, files: '', bytes: result.sizeBytes ? humanBytes(result.sizeBytes) : '', etaText: '' });
    }
    return result;
  };

  try {
    return await Promise.all(jobs.map(one));
  } finally {
    offInterrupt();
    bars?.stop();
  }
}

/** One summary line per finished job. */
export function resultLine(job: WatchedJob, r: JobResult, hostWidth = 12): string {
  const parts = [job.host.padEnd(hostWidth), r.status.padEnd(15), r.backupId || job.id];
  if (r.sizeBytes) parts.push(humanBytes(r.sizeBytes));
  if (r.durationMs) parts.push(humanDuration(r.durationMs));
  if (r.warnings?.length) parts.push(`${r.warnings.length} warning(s): ${r.warnings[0]}`);
  if (r.errorMessage) parts.push(`${r.failedStep ? `${r.failedStep}: ` : ''}${r.errorMessage}`);
  return parts.join('  ');
}
