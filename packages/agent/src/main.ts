#!/usr/bin/env -S node --max-semi-space-size=4 --expose-gc
/**
 * boxback-agent --config agent.yaml [--check-config]
 *
 * Start-up, in order: load and validate the config and plan; resume any services a
 * crashed predecessor left quiesced; prune old safety copies; start the trees' change
 * journals (watchers start in the background); serve gRPC over mutual TLS.
 * SIGTERM/SIGINT: cancel the running job (services are resumed), close the journals, exit.
 */
import { mkdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { BOXBACK_VERSION, asBoxbackError, createLogger } from '@boxback/common';
import { recoverQuiesce } from './backup/quiesce-record.js';
import { ownCertWarning } from './access.js';
import { loadAgentConfig } from './config.js';
import { createJournals } from './journal/index.js';
import { fixNativeHeap } from './memory.js';
import { agentStore } from './store.js';
import { pruneSafetyCopies } from './restore/safety-copies.js';
import { AgentServer } from './server.js';

const USAGE = `usage: boxback-agent --config FILE [--check-config]

  --config FILE     agent config (YAML); see deploy/agent.example.yaml
  --check-config    validate the config and its host plan, then exit
  --version         print the version

exit codes: 0 ok, 1 failure, 2 bad config or usage`;

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        config: { type: 'string' },
        'check-config': { type: 'boolean' },
        version: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    process.stderr.write(`boxback-agent: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (args.values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (args.values.version) {
    process.stdout.write(`boxback-agent ${BOXBACK_VERSION}\n`);
    return 0;
  }
  if (!args.values.config) {
    process.stderr.write(`boxback-agent: --config is required\n${USAGE}\n`);
    return 2;
  }
  const config = loadAgentConfig(args.values.config);
  if (args.values['check-config']) {
    process.stdout.write(
      `config ok: agent ${config.name}, plan ${config.plan.name} (${config.planFile}); serves only ${config.allowedClients.join(', ')}\n`,
    );
    const warning = ownCertWarning(config);
    if (warning) process.stderr.write(`boxback-agent: warning: ${warning}\n`);
    return 0;
  }
  const log = createLogger('boxback-agent').child({ agent: config.name });
  fixNativeHeap(log);
  const certWarning = ownCertWarning(config);
  if (certWarning) log.warn(certWarning);
  mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
  await recoverQuiesce(config, log);
  await pruneSafetyCopies(config, log).catch((err) => log.warn({ err }, 'pruning safety copies failed'));
  const journals = await createJournals(config, log);
  const server = new AgentServer(config, log, journals);
  const port = await server.listen();
  log.info(
    { listen: config.listen, port, plan: config.plan.name, version: BOXBACK_VERSION, allowedClients: config.allowedClients },
    'agent listening',
  );
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal: sig }, 'shutting down');
      // Long enough for a cancelled job to resume every service (deploy sizes TimeoutStopSec the same way).
      const plan = config.plan;
      const starts = plan.services.reduce((sum, svc) => sum + svc.startTimeoutSeconds, 0);
      const graceMs = (Math.max(starts, plan.quiesce.exit?.timeoutSeconds ?? 0) + 30) * 1000;
      void server
        .shutdown(graceMs)
        .then(() => journals.close())
        .then(() => agentStore(config).close?.())
        .catch((err: unknown) => log.warn({ err }, 'closing the change journals failed'))
        .then(resolve);
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
  log.info('agent stopped');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const be = asBoxbackError(err);
    process.stderr.write(`boxback-agent: ${be.message}\n`);
    process.exit(be.exitCode === 0 ? 1 : be.exitCode);
  },
);
