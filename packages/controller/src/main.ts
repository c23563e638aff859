#!/usr/bin/env -S node --max-semi-space-size=8 --heap-growing-percent=50
/**
 * boxback-controller --config controller.yaml            run the daemon
 * boxback-controller --config FILE --check-config        validate the config (a PostgreSQL catalog: connect and
 *                                                        report its server and schema versions) and exit
 * boxback-controller --config FILE token create --role admin --name NAME
 *                                                        make a token on the local catalog
 *                                                        (the first admin token), print it once;
 *                                                        --expires 90d makes it stop working then
 * boxback-controller --config FILE token revoke NAME|ID    revoke a token on the local catalog
 * boxback-controller --config FILE store init|key add|key list|key remove ...
 *                                                        an S3 store's keys: `boxback store ... --from FILE`
 * Errors are one line on stderr and an exit code from ExitCode (bad config: 2).
 */
import { Command, CommanderError } from 'commander';
import { BOXBACK_VERSION, BoxbackError, ExitCode, asBoxbackError, createLogger } from '@boxback/common';
import { createToken, revokeToken } from './auth.js';
import { checkCatalog, openCatalog } from './catalog/open.js';
import { loadControllerConfig, parseDuration, type ControllerConfig } from './config.js';
import { ControllerServer } from './server.js';
import { registerStoreCommands } from './cli/commands/store.js';
import { CliContext } from './cli/context.js';

function die(err: unknown): never {
  if (err instanceof CommanderError) {
    process.exit(err.exitCode === 0 ? 0 : ExitCode.USAGE);
  }
  const be = asBoxbackError(err);
  process.stderr.write(`boxback-controller: ${be.message}\n`);
  process.exit(be.exitCode);
}

function needConfig(file: string | undefined): ControllerConfig {
  if (!file) throw new BoxbackError('BOXBACK_ERR_USAGE', '--config FILE is required (see --help)');
  return loadControllerConfig(file);
}

async function runDaemon(config: ControllerConfig): Promise<void> {
  const log = createLogger('boxback-controller', undefined, { background: true });
  const server = await ControllerServer.start(config, log);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'signal received');
    server.shutdown().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function main(argv: string[]): Promise<void> {
  const program = new Command('boxback-controller')
    .description('boxback controller: catalog, jobs and the ControllerService for the boxback CLI')
    .version(BOXBACK_VERSION)
    .option('-c, --config <file>', 'controller.yaml')
    .option('--check-config', 'validate the config file and exit')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error: ') ? `boxback-controller: ${s.slice(7)}` : s) })
    .action(async (opts: { config?: string; checkConfig?: boolean }) => {
      const config = needConfig(opts.config);
      if (opts.checkConfig) {
        const catalog = await checkCatalog(config);
        process.stdout.write(`${config.file}: ok\n${catalog}\n`);
        return;
      }
      await runDaemon(config);
    });

  const token = program.command('token').description('API tokens, on the local catalog file');
  token
    .command('create')
    .description('create a token and print it once (only its hash is stored)')
    .requiredOption('--name <name>', 'who the token is for')
    .option('--role <role>', 'viewer (reads), operator (also backs up and verifies) or admin (everything)', 'viewer')
    .option('--expires <duration>', 'stop working after this long (90d, 12h, ...; default: never)')
    .action(async (opts: { name: string; role: string; expires?: string }) => {
      const config = needConfig(program.opts<{ config?: string }>().config);
      const expires = opts.expires ? parseDuration(opts.expires) : 0;
      const catalog = await openCatalog(config);
      try {
        const { token: t, row } = await createToken(catalog, opts.name, opts.role, expires);
        await catalog.appendAudit({
          atMs: Date.now(),
          who: 'local',
          action: 'token create',
          target: `${row.name} (${row.role})`,
          result: 'ok',
          detail: '',
        });
        process.stdout.write(`${t}\n`);
        process.stderr.write(
          `created ${row.role} token "${row.name}"; it is shown only once — keep it (cli.yaml \`token:\` or BOXBACK_TOKEN)\n`,
        );
      } finally {
        await catalog.close();
      }
    });
  token
    .command('revoke')
    .description('revoke a token by name or ID: every call with it fails from now on')
    .argument('<name-or-id>', 'the token, as `boxback tokens list` names it')
    .action(async (nameOrId: string) => {
      const config = needConfig(program.opts<{ config?: string }>().config);
      const catalog = await openCatalog(config);
      try {
        const row = await revokeToken(catalog, nameOrId);
        await catalog.appendAudit({
          atMs: Date.now(),
          who: 'local',
          action: 'token revoke',
          target: nameOrId,
          result: 'ok',
          detail: `revoked ${row.name} (id ${row.id})`,
        });
        process.stderr.write(`revoked token "${row.name}" (id ${row.id}); calls with it fail from now on\n`);
      } finally {
        await catalog.close();
      }
    });
  program
    .command('store')
    .description("an S3 store's keys (init, key add|list|remove): `boxback store ... --from` this config")
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[args...]')
    .action(async (args: string[]) => {
      const file = needConfig(program.opts<{ config?: string }>().config).file;
      const cli = new Command('boxback-controller').exitOverride().option('--json', 'print JSON for scripts');
      const ctx = new CliContext(cli);
      registerStoreCommands(cli, ctx);
      try {
        await cli.parseAsync(['store', ...args, ...(args.includes('--help') ? [] : ['--from', file])], { from: 'user' });
      } finally {
        ctx.close();
      }
      if (ctx.exitCode) process.exit(ctx.exitCode);
    });
  await program.parseAsync(argv);
}

main(process.argv).catch(die);
