#!/usr/bin/env node
/**
 * The `boxback` CLI. Parses the command line (commander), runs one command against the
 * controller (or locally for `certs`), prints a table or JSON, and exits with a code from
 * ExitCode. Every error is one line, `boxback: <CODE>: <message>`, on stderr (a job
 * that ended Failed or RolledBack too: cli/context.ts failOnJobs); never a stack trace.
 */
import { Command, CommanderError } from 'commander';
import { BOXBACK_VERSION, ExitCode, asBoxbackError } from '@boxback/common';
import { registerBackupCommands } from './commands/backup.js';
import { registerCertCommands } from './commands/certs.js';
import { registerFleetCommands } from './commands/fleet.js';
import { registerJobCommands } from './commands/jobs.js';
import { registerStoreCommands } from './commands/store.js';
import { registerStoreScanCommand } from './commands/store-scan.js';
import { CliContext } from './context.js';

// grpc-js sets the TLS server name to the address; for an IP Node prints a deprecation
// warning on every run. The certificate is still checked against the IP in its SANs.
(process as { noDeprecation?: boolean }).noDeprecation = true;

const EXIT_CODES_HELP = `
Exit codes:
  0  ok
  1  unexpected failure
  2  usage error (bad arguments, bad config, confirmation needed)
  3  not found (host, backup or job)
  4  permission denied (no token, unknown token, or role too low)
  5  job failed (Failed or RolledBack; a verification found problems)
  6  controller or agent unreachable (also a job that failed because its agent did not answer)
  7  busy (the host already runs a backup or restore)
  8  not possible in this state (the backup is not Restorable, the job already ended)
  9  status --exit-code: a host is AT RISK or its agent DOWN (one stderr line per host)
  130  interrupted (Ctrl-C; a job being watched goes on)

Tables (backups, jobs, status, hosts list, schedules, drills, tokens list, audit,
backups prune, certs check, store key list): on a terminal a table fits its width and a
note on stderr names the columns left out; piped or redirected it has every column, uncut.
-o wide: every column on a terminal too; --columns a,b,c: those columns in that order;
-o json: --json.

Connection: --controller/--ca/--token, or BOXBACK_CONTROLLER/BOXBACK_CA/BOXBACK_TOKEN,
or cli.yaml (--config, BOXBACK_CONFIG, ~/.config/boxback/cli.yaml) with keys
controller, ca, token.`;

export function buildProgram(): { program: Command; ctx: CliContext } {
  const program = new Command('boxback');
  const ctx = new CliContext(program);
  program
    .description('boxback: backups and restores of CI services boxes, across a fleet')
    .version(BOXBACK_VERSION)
    .option('--config <file>', 'cli.yaml with controller, ca and token')
    .option('--controller <host:port>', 'controller address')
    .option('--ca <file>', "CA certificate that signed the controller's")
    .option('--token <token>', 'API token (prefer BOXBACK_TOKEN: flags show in ps)')
    .option('--json', 'print JSON for scripts (times in RFC 3339, null for anything unset)')
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      writeErr: (s) => process.stderr.write(s.startsWith('error: ') ? `boxback: BOXBACK_ERR_USAGE: ${s.slice(7)}` : s),
    })
    .addHelpText('after', EXIT_CODES_HELP);
  registerBackupCommands(program, ctx);
  registerFleetCommands(program, ctx);
  registerJobCommands(program, ctx);
  registerCertCommands(program, ctx);
  registerStoreCommands(program, ctx);
  registerStoreScanCommand(program, ctx);
  const withExitCodes = (cmd: Command): void => {
    for (const c of cmd.commands) {
      c.addHelpText('after', EXIT_CODES_HELP);
      withExitCodes(c);
    }
  };
  withExitCodes(program);
  return { program, ctx };
}

function oneLine(msg: string): string {
  return msg.split('\n')[0].trim();
}

export async function run(argv: string[]): Promise<number> {
  const { program, ctx } = buildProgram();
  try {
    await program.parseAsync(argv);
    if (ctx.finalError) process.stderr.write(`${ctx.finalError}\n`);
    return ctx.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander already printed its message (or the help / version)
      return err.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
    }
    const be = asBoxbackError(err);
    process.stderr.write(`boxback: ${be.code}: ${oneLine(be.message)}\n`);
    return be.exitCode;
  } finally {
    ctx.close();
  }
}

run(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`boxback: BOXBACK_ERR_INTERNAL: ${oneLine(String((err as Error)?.message ?? err))}\n`);
    process.exitCode = ExitCode.FAILURE;
  },
);
