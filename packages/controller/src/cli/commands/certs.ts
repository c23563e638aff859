/**
 * `boxback certs init` (the fleet CA and the controller's certificate),
 * `boxback certs issue --host NAME` (an agent's) and `boxback certs check` (what each
 * certificate may do, and those an older boxback issued that need re-issuing). Local: no
 * controller needed.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { checkCerts, initCerts, issueAgentCert } from '@boxback/common';
import { humanDate, table } from '../format.js';
import { tableOptions, type CliContext } from '../context.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function registerCertCommands(program: Command, ctx: CliContext): void {
  const certs = program.command('certs').description('the fleet CA and certificates (local files, no controller needed)');
  certs
    .command('init')
    .description("create the CA and the controller's certificate in a directory")
    .requiredOption('--dir <dir>', 'directory for ca.crt/.key and controller.crt/.key')
    .option('--name <name>', "controller certificate's name", 'controller')
    .option('--alt-name <name>', 'extra DNS name or IP for the controller (repeatable)', collect)
    .option('--force', 'replace an existing CA (cuts off every agent)')
    .action(async (o: { dir: string; name: string; altName?: string[]; force?: boolean }) => {
      const r = await initCerts(path.resolve(o.dir), { controllerName: o.name, altNames: o.altName ?? [], force: o.force });
      ctx.out(r, () =>
        [
          `CA:          ${r.ca}`,
          `CA key:      ${r.caKey} (keep it offline if you can)`,
          `controller:  ${r.cert}`,
          `key:         ${r.key}`,
        ].join('\n'),
      );
    });
  certs
    .command('issue')
    .description("issue an agent's certificate, signed by the CA in --dir")
    .requiredOption('--dir <dir>', 'directory made by `boxback certs init`')
    .requiredOption('--host <name>', "the agent's name (as in agent.yaml and `boxback hosts add`)")
    .option('--alt-name <name>', 'extra DNS name or IP for the agent (repeatable)', collect)
    .action(async (o: { dir: string; host: string; altName?: string[] }) => {
      const r = await issueAgentCert(path.resolve(o.dir), o.host, o.altName ?? []);
      ctx.out(r, () => [`CA:    ${r.ca}`, `cert:  ${r.cert}`, `key:   ${r.key}`].join('\n'));
    });
  tableOptions(certs.command('check'))
    .description('list the certificates in --dir and what needs re-issuing (exit 1 when something does)')
    .requiredOption('--dir <dir>', 'directory made by `boxback certs init`')
    .action((o: { dir: string }) => {
      const r = checkCerts(path.resolve(o.dir));
      ctx.out(r, () =>
        table(r, [
          { header: 'Role', get: (c) => c.role, priority: 20 },
          { header: 'Name', get: (c) => c.name, priority: 20 },
          { header: 'Usage', get: (c) => (c.clientAuth ? 'server+client' : 'server'), priority: 15 },
          { header: 'Expires', get: (c) => humanDate(c.notAfterMs), priority: 5 },
          { header: 'Problem', get: (c) => c.problem || 'ok', priority: 20 },
        ]),
      );
      if (r.some((c) => c.problem)) ctx.exitCode = 1;
    });
}
