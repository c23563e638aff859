/**
 * The one way the agent runs a program: execa with a timeout, never a shell unless the
 * plan asks for one, and one result shape (exit code, signal, timed out, duration,
 * output tail). Output goes to a temporary file, not a pipe, so a command that leaves a
 * daemon behind (a service's start script) cannot hold us waiting on its pipe.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { BoxbackError } from '@boxback/common';

export interface CommandResult {
  ok: boolean;
  exitCode: number | undefined;
  signal: string | undefined;
  timedOut: boolean;
  cancelled: boolean;
  durationMs: number;
  /** Last lines of stdout and stderr together. */
  outputTail: string;
  /** Set when the program could not be started at all. */
  spawnError?: string;
}

export interface CommandOptions {
  timeoutMs: number;
  env?: Record<string, string>;
  cwd?: string;
  signal?: AbortSignal;
  /** How much of the output's end to keep in outputTail (default 2000 bytes). */
  tailBytes?: number;
}

const TAIL_BYTES = 2000;

export async function runCommand(argv: string[], opts: CommandOptions): Promise<CommandResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'boxback-cmd-'));
  const out = path.join(dir, 'output');
  const started = Date.now();
  try {
    const r = await execa(argv[0], argv.slice(1), {
      timeout: opts.timeoutMs,
      env: opts.env,
      extendEnv: true,
      cwd: opts.cwd,
      cancelSignal: opts.signal,
      reject: false,
      stdin: 'ignore',
      stdout: { file: out },
      stderr: { file: out, append: true },
      forceKillAfterDelay: 3000,
    });
    let tail = '';
    try {
      const text = readFileSync(out, 'utf8');
      tail = text.slice(-(opts.tailBytes ?? TAIL_BYTES)).trim();
    } catch {
      /* nothing written */
    }
    const spawnError = r.failed && r.exitCode === undefined && !r.signal && !r.timedOut && !r.isCanceled ? r.shortMessage : undefined;
    return {
      ok: !r.failed,
      exitCode: r.exitCode,
      signal: r.signal,
      timedOut: r.timedOut,
      cancelled: r.isCanceled,
      durationMs: Date.now() - started,
      outputTail: tail,
      spawnError,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One line describing why a command failed, for error messages. */
export function describeFailure(what: string, argv: string[], r: CommandResult, timeoutMs: number): string {
  const cmd = argv.join(' ');
  let why: string;
  if (r.spawnError) why = `could not start: ${r.spawnError}`;
  else if (r.timedOut) why = `timed out after ${Math.round(timeoutMs / 1000)}s`;
  else if (r.cancelled) why = 'was cancelled';
  else if (r.signal) why = `was killed by ${r.signal}`;
  else why = `exited with code ${r.exitCode}`;
  const lastLine = r.outputTail.split('\n').filter(Boolean).pop();
  return `${what} (${cmd}) ${why}${lastLine ? `: ${lastLine}` : ''}`;
}

/** Run and throw a BoxbackError on failure. */
export async function runChecked(
  what: string,
  argv: string[],
  opts: CommandOptions,
  code: ConstructorParameters<typeof BoxbackError>[0] = 'BOXBACK_ERR_INTERNAL',
): Promise<CommandResult> {
  const r = await runCommand(argv, opts);
  if (!r.ok) throw new BoxbackError(r.timedOut ? 'BOXBACK_ERR_TIMEOUT' : code, describeFailure(what, argv, r, opts.timeoutMs));
  return r;
}
