/**
 * Syncing an artifact or test-report tree with the real rsync, outside the quiesce window.
 *
 *   rsync -a --delete --numeric-ids --modify-window=-1 --no-inc-recursive --info=progress2
 *         [--link-dest=<previous backup>/<dir>] [--exclude=PAT...] <source>/ <dest>/
 *   or, to copy a listed set of entries only (restore):
 *   rsync -a --numeric-ids --modify-window=-1 --from0 --files-from=- --info=progress2
 *         [--exclude=/NAME...] <source>/ <dest>/
 *
 * With --link-dest every backup is a complete tree and an unchanged file costs one hard
 * link. --no-inc-recursive makes rsync count every file first, so progress2's totals are
 * real. Its progress lines ("  1,234,567  45%  12.3MB/s  0:00:10 (xfr#12, to-chk=34/100)",
 * separated by \r) become progress events.
 *
 * rsync runs through execa directly (not run-command.ts) because its output is read as a
 * stream. Exit code 24 (files vanished while syncing a live tree) is a warning; "No space
 * left on device" is BOXBACK_ERR_DISK_FULL; anything else BOXBACK_ERR_SYNC_FAILED.
 */
import { promises as fsp } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
// execa is imported where it runs (`await import('execa')`), not at load: @boxback/common's index loads
// this module into every process, the `boxback` CLI too, and execa's ~100 files were ~a quarter of
// each CLI run's start-up CPU (test suite, session 19).
import { BoxbackError } from '../../errors.js';

export interface SyncProgress {
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesTotal: number;
}

export interface SyncOptions {
  source: string;
  dest: string;
  /** The same tree in the previous backup (hard-link unchanged files against it). */
  linkDest?: string;
  excludes?: string[];
  signal?: AbortSignal;
  onProgress?: (p: SyncProgress) => void;
  /** rsync binary (tests, unusual installs). */
  rsync?: string;
  /**
   * Copy exactly these entries (paths relative to `source`, '.' for the root itself, which
   * brings the root's own entries too unless `excludes` names them; every directory listed)
   * and nothing else: `--files-from` (a restore copies only what the manifest lists). No
   * --delete (the destination is a fresh directory) and no --link-dest.
   */
  filesFrom?: Iterable<string> | AsyncIterable<string>;
}

export interface SyncResult {
  exitCode: number;
  warnings: string[];
  durationMs: number;
  /** Bytes rsync reported as transferred (new or changed files). */
  bytesTransferred: number;
}

const PROGRESS_RE = /^\s*([\d,]+)\s+(\d+)%\s+\S+\s+\S+(?:\s+\(xfr#(\d+),\s*(?:ir|to)-chk=(\d+)\/(\d+)\))?/;

/** Parse one progress2 line (exported for tests). */
export function parseProgress2(line: string): SyncProgress | undefined {
  const m = PROGRESS_RE.exec(line);
  if (!m) return undefined;
  const bytesDone = Number(m[1].replace(/,/g, ''));
  const pct = Number(m[2]);
  const filesTotal = m[5] ? Number(m[5]) : 0;
  const filesDone = m[5] ? filesTotal - Number(m[4]) : 0;
  const bytesTotal = pct > 0 ? Math.round((bytesDone * 100) / pct) : 0;
  return { bytesDone, bytesTotal, filesDone, filesTotal };
}

export function rsyncArgs(o: SyncOptions, linkDestExists: boolean): string[] {
  if (o.filesFrom) {
    // -a does not imply -r with --files-from: only the listed entries (and, for a listed '.', the
    // root's own entries: `excludes` names those to leave out). Mtimes compared to the nanosecond,
    // so a directory whose mtime falls in the same second as now still gets it set.
    const x = (o.excludes ?? []).map((e) => `--exclude=${e}`);
    const ends = [`${o.source.replace(/\/+$/, '')}/`, `${o.dest.replace(/\/+$/, '')}/`];
    return ['-a', '--numeric-ids', '--modify-window=-1', '--from0', '--files-from=-', '--info=progress2', '--stats', ...x, ...ends];
  }
  // --modify-window=-1: compare mtimes to the nanosecond. With rsync's default, mtimes in the
  // same second count as equal, and --link-dest links a same-size file rewritten within the
  // second of the previous backup (stale bytes in the new backup).
  const args = ['-a', '--delete', '--numeric-ids', '--modify-window=-1', '--no-inc-recursive', '--info=progress2', '--stats'];
  if (o.linkDest && linkDestExists) args.push(`--link-dest=${o.linkDest}`);
  for (const x of o.excludes ?? []) args.push(`--exclude=${x}`);
  args.push(`${o.source.replace(/\/+$/, '')}/`, `${o.dest.replace(/\/+$/, '')}/`);
  return args;
}

/** Entries as NUL-terminated text (--from0), about 64 KiB a chunk. */
async function* nulBatches(entries: Iterable<string> | AsyncIterable<string>): AsyncGenerator<string> {
  let buf = '';
  for await (const e of entries) {
    buf += `${e}\0`;
    if (buf.length >= 65_536) {
      yield buf;
      buf = '';
    }
  }
  if (buf) yield buf;
}

export async function syncTree(o: SyncOptions): Promise<SyncResult> {
  const started = Date.now();
  try {
    const st = await fsp.stat(o.source);
    if (!st.isDirectory()) throw new Error('not a directory');
  } catch {
    throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', `tree source ${o.source} is missing or not a directory`);
  }
  const linkDestExists =
    !!o.linkDest &&
    (await fsp
      .stat(o.linkDest)
      .then((s) => s.isDirectory())
      .catch(() => false));
  await fsp.mkdir(o.dest, { recursive: true });
  const argv = rsyncArgs(o, linkDestExists);
  const { execa } = await import('execa');
  const sub = execa(o.rsync ?? 'rsync', argv, {
    reject: false,
    buffer: false,
    ...(o.filesFrom ? { stdin: 'pipe' as const } : { stdin: 'ignore' as const }),
    cancelSignal: o.signal,
    forceKillAfterDelay: 3000,
    env: { LC_ALL: 'C' },
  });
  // The list goes to rsync's stdin as it is read (a restore's: from the manifest, a line at a time).
  const feeding = o.filesFrom && sub.stdin ? pipeline(Readable.from(nulBatches(o.filesFrom)), sub.stdin).catch(() => undefined) : undefined;
  let pending = '';
  let stderrTail = '';
  let bytesTransferred = 0;
  let last = 0;
  sub.stdout?.setEncoding('utf8');
  sub.stdout?.on('data', (chunk: string) => {
    pending += chunk;
    const parts = pending.split(/[\r\n]/);
    pending = parts.pop() ?? '';
    for (const line of parts) {
      const m = /^Total transferred file size: ([\d,]+)/.exec(line);
      if (m) bytesTransferred = Number(m[1].replace(/,/g, ''));
      const p = parseProgress2(line);
      const now = Date.now();
      if (p && o.onProgress && now - last >= 250) {
        last = now;
        o.onProgress(p);
      }
    }
  });
  sub.stderr?.setEncoding('utf8');
  sub.stderr?.on('data', (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-4000);
  });
  const r = await sub;
  await feeding;
  const warnings: string[] = [];
  const lastLine = stderrTail.trim().split('\n').filter(Boolean).pop() ?? '';
  if (r.isCanceled) {
    o.signal?.throwIfAborted();
    throw new BoxbackError('BOXBACK_ERR_CANCELLED', `rsync of ${o.source} was cancelled`);
  }
  if (r.exitCode === 24) {
    warnings.push(`some files of ${o.source} vanished while it was synced (rsync exit 24)`);
  } else if (r.exitCode !== 0) {
    const why = r.signal ? `was killed by ${r.signal}` : `exited with code ${r.exitCode}`;
    const msg = `rsync of ${o.source} ${why}${lastLine ? `: ${lastLine}` : ''}`;
    if (/No space left on device|Disk quota exceeded/i.test(stderrTail)) throw new BoxbackError('BOXBACK_ERR_DISK_FULL', msg);
    if (r.exitCode === undefined && !r.signal) throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', `could not run rsync: ${r.shortMessage}`);
    throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', msg);
  }
  return { exitCode: r.exitCode ?? 0, warnings, durationMs: Date.now() - started, bytesTransferred };
}
