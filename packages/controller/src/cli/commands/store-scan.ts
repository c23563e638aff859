/**
 * `boxback store scan`: the controller rebuilds its catalog from the store (store-scan.ts on
 * the controller): hosts it does not know are registered with no agent address, backups it
 * lacks are added from their manifests. Admin; audited. The controller does the same by itself
 * at start-up when its catalog has no backups and the store has some.
 */
import type { Command } from 'commander';
import type { CliContext } from '../context.js';

/** The `store` command group: made here unless another file made it first. */
function storeGroup(program: Command): Command {
  return (
    program.commands.find((c) => c.name() === 'store') ??
    program.command('store').description('the backup store (scan: rebuild the catalog from it)')
  );
}

export function registerStoreScanCommand(program: Command, ctx: CliContext): void {
  storeGroup(program)
    .command('scan')
    .description(
      'rebuild the catalog from the store: register the hosts it holds backups of (with no address) and add the backups the catalog lacks',
    )
    .action(async () => {
      const r = await ctx.client().call('ScanStore', {}, 3600_000);
      ctx.out(r, () =>
        [
          `scanned ${r.location}: ${r.hostsInStore} host(s) with backups`,
          `added ${r.adopted} backup(s) to the catalog${r.marked ? `, marked ${r.marked} missing from the store` : ''}`,
          ...(r.hostsAdded.length
            ? [
                `registered ${r.hostsAdded.length} host(s) with no agent address: ${r.hostsAdded.join(', ')}`,
                "set each one's address: boxback hosts set NAME --address HOST:PORT",
              ]
            : []),
        ].join('\n'),
      );
    });
}
