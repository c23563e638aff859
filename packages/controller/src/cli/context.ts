/**
 * What every CLI command gets: the global options, a lazily opened controller client,
 * JSON or human output, and confirmations (asked on a TTY; without a TTY a command that
 * needs one refuses with a usage error unless --yes).
 */
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { BoxbackError, ERROR_CODES, ExitCode, isErrorCode, type ErrorCode, type JobResult } from '@boxback/common';
import { ControllerClient, resolveConnection, type GlobalOptions } from './connection.js';
import { defaultTableView, setTableView } from './format.js';
import { toJson } from './json.js';

export class CliContext {
  private clientInst?: ControllerClient;
  /** Exit code the command asks for once it has printed its output. */
  exitCode = 0;

  constructor(private readonly program: Command) {}

  get globals(): GlobalOptions {
    return this.program.opts<GlobalOptions>();
  }

  get json(): boolean {
    return Boolean(this.globals.json);
  }

  get tty(): boolean {
    return Boolean(process.stdout.isTTY);
  }

  client(): ControllerClient {
    this.clientInst ??= new ControllerClient(resolveConnection(this.globals));
    return this.clientInst;
  }

  close(): void {
    this.clientInst?.close();
  }

  /** Print `data` as JSON with --json (cli/json.ts: RFC 3339 times, null for unset), else the human text. */
  out(data: unknown, human: () => string): void {
    process.stdout.write(this.json ? `${toJson(data)}\n` : `${human()}\n`);
  }

  info(line: string): void {
    if (!this.json) process.stderr.write(`${line}\n`);
  }

  /** Ask yes/no on the terminal; refuse without a TTY unless --yes. */
  async confirm(question: string, yes: boolean | undefined): Promise<void> {
    if (yes) return;
    if (!process.stdin.isTTY || !process.stderr.isTTY) {
      throw new BoxbackError(
        'BOXBACK_ERR_USAGE',
        `${question.replace(/\?$/, '')}: needs confirmation and there is no terminal to ask on; pass --yes`,
      );
    }
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    try {
      const answer = (await rl.question(`${question} [y/N] `)).trim().toLowerCase();
      if (answer !== 'y' && answer !== 'yes') throw new BoxbackError('BOXBACK_ERR_USAGE', 'not confirmed; nothing was done');
    } finally {
      rl.close();
    }
  }

  /** The last line on stderr once the command's output is written (main.ts prints it). */
  finalError = '';

  /**
   * When any job ended Failed or RolledBack: exit with jobExitCode (5, or 6 when its agent did
   * not answer...), and end with one `boxback: CODE: message` line (one job: its code, step
   * and message; several: BOXBACK_ERR_JOB_FAILED naming each, and the exit code they share, else 5).
   */
  failOnJobs(results: JobResult[]): void {
    const failed = results.filter((r) => r.status === 'Failed' || r.status === 'RolledBack');
    if (!failed.length) return;
    const codeOf = (r: JobResult): ErrorCode => (isErrorCode(r.errorCode) ? r.errorCode : 'BOXBACK_ERR_JOB_FAILED');
    if (failed.length === 1) {
      const r = failed[0];
      const code = codeOf(r);
      const why = (r.errorMessage || 'see `boxback job logs`').split('\n')[0];
      this.finalError = `boxback: ${code}: job ${r.jobId} ended ${r.status}${r.failedStep ? ` at ${r.failedStep}` : ''}: ${why}`;
      this.exitCode = jobExitCode(code);
      return;
    }
    const list = failed.map((r) => `${r.jobId} (${r.status}, ${codeOf(r)})`).join(', ');
    this.finalError = `boxback: BOXBACK_ERR_JOB_FAILED: ${failed.length} of ${results.length} jobs did not complete: ${list}`;
    const exits = new Set(failed.map((r) => jobExitCode(r.errorCode)));
    this.exitCode = exits.size === 1 ? [...exits][0] : ExitCode.JOB_FAILED;
  }
}

const OUTPUTS = ['table', 'wide', 'json'] as const;
type Output = (typeof OUTPUTS)[number];

/**
 * The options of every command that prints a table: `-o table|wide|json` and `--columns
 * a,b,c`. Before the action runs they set the table view (format.ts): `-o wide` or a pipe
 * shows every column; `--columns` picks them; `-o json` is `--json`.
 */
export function tableOptions(cmd: Command): Command {
  return cmd
    .option(
      '-o, --output <format>',
      'table (fit a terminal, naming what is left out), wide (every column) or json',
      (v: string): Output => {
        if (!(OUTPUTS as readonly string[]).includes(v))
          throw new BoxbackError('BOXBACK_ERR_USAGE', `-o wants table, wide or json, not "${v}"`);
        return v as Output;
      },
    )
    .option('--columns <list>', 'only these columns, in this order, e.g. host,status,age (any -o)', (v: string) =>
      v
        .split(',')
        .map((c) => c.trim())
        .filter(Boolean),
    )
    .hook('preAction', (_self, action) => {
      const o = action.optsWithGlobals<{ output?: Output; columns?: string[] }>();
      if (o.output === 'json') setJson(action);
      const view = defaultTableView();
      setTableView({ ...view, fit: view.fit && o.output !== 'wide' && !o.columns?.length, columns: o.columns });
    });
}

/** `-o json`: turn on the program's --json (the root command holds it). */
function setJson(cmd: Command): void {
  let root = cmd;
  while (root.parent) root = root.parent;
  root.setOptionValueWithSource('json', true, 'cli');
}

/** Exit codes a failed job keeps from its error; every other failure of a job exits JOB_FAILED (5). */
const JOB_EXITS_OF_THEIR_OWN = new Set<ExitCode>([ExitCode.UNREACHABLE, ExitCode.BUSY, ExitCode.PERMISSION_DENIED, ExitCode.NOT_FOUND]);

/**
 * The exit code for a job that ended Failed or RolledBack with `errorCode`: 6 when its agent
 * (or the controller) did not answer, 7 busy, 4 refused, 3 gone, as the error table says;
 * 5 (job failed) for everything else, including an unknown or empty code.
 */
export function jobExitCode(errorCode: string): ExitCode {
  if (!isErrorCode(errorCode)) return ExitCode.JOB_FAILED;
  const e = ERROR_CODES[errorCode].exit;
  return JOB_EXITS_OF_THEIR_OWN.has(e) ? e : ExitCode.JOB_FAILED;
}

/** Parse a positive integer option. */
export function positiveInt(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new BoxbackError('BOXBACK_ERR_USAGE', `${name} wants a whole number of 1 or more, not "${v}"`);
    return n;
  };
}
