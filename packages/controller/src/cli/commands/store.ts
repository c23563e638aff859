/**
 * `boxback store init|key add|key list|key remove`: the keys of an S3 store. Local: they talk
 * to the object store named by the `store:` key of an agent.yaml or controller.yaml (--from),
 * not to the controller. Secrets only from 0600 files: the config's keyFile (or --key-file)
 * opens the store; a new key file is created 0600 with 32 random bytes when it does not exist.
 *
 *   init        a new data key, wrapped by the key file; says plainly that a lost key loses
 *               every backup, and how to keep a copy
 *   key add     the data key wrapped again by another key file (a second person, a safe)
 *   key list    id, label, created (nothing secret)
 *   key remove  one key; never the last one
 */
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import {
  BoxbackError,
  addStoreKey,
  compileStoreConfig,
  initS3Store,
  listStoreKeys,
  loadYamlFile,
  readSecretFile,
  removeStoreKey,
  storeConfigSchema,
  type S3StoreConfig,
} from '@boxback/common';
import { humanDate, table } from '../format.js';
import { tableOptions, type CliContext } from '../context.js';

const withStore = z.looseObject({ store: storeConfigSchema });

/** The S3 store of a daemon's config file. */
function s3From(file: string): S3StoreConfig {
  const raw = loadYamlFile(withStore, file);
  const c = compileStoreConfig(raw.store, path.resolve(file));
  if (c.kind !== 's3') throw new BoxbackError('BOXBACK_ERR_USAGE', `${file}: store: is a ${c.kind} store; store keys are for kind: s3`);
  return c;
}

/** The secret in `file` (0600), made first (32 random bytes, hex) when `create` and it is missing. */
function keySecret(file: string | undefined, what: string, create = false): Buffer {
  if (!file) throw new BoxbackError('BOXBACK_ERR_USAGE', `no ${what}: set keyFile in the store config or pass --key-file`);
  if (create && !existsSync(file)) writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  return readSecretFile(file, what);
}

interface FromOpts {
  from: string;
  keyFile?: string;
}

const fromOption = (c: Command) =>
  c
    .requiredOption('--from <file>', 'agent.yaml or controller.yaml whose store: is the S3 store')
    .option('--key-file <file>', "0600 key file that opens the store (default: the config's keyFile)");

export function registerStoreCommands(program: Command, ctx: CliContext): void {
  const store = program
    .command('store')
    .description(
      "the backup store: init and key (an S3 store's keys; local, talk to the object store) and scan (the controller rebuilds its catalog)",
    );
  fromOption(store.command('init'))
    .description('initialise an empty S3 store with its first key (creates the key file, 0600, when missing)')
    .option('--label <text>', "the key's label", 'first key')
    .action(async (o: FromOpts & { label: string }) => {
      const config = s3From(o.from);
      const file = o.keyFile ?? config.keyFile;
      const r = await initS3Store(config, keySecret(file, 'store key file', true), { label: o.label });
      ctx.out({ ...r, keyFile: file }, () =>
        [
          `store:     s3 ${config.endpoint}/${config.bucket}/${config.prefix}`,
          `key:       ${r.keyId} (${file})`,
          '',
          `WARNING: ${r.warning}`,
        ].join('\n'),
      );
    });
  const key = store.command('key').description("the store's keys");
  fromOption(key.command('add'))
    .description('let another key file open the store (created, 0600, when missing)')
    .requiredOption('--new-key-file <file>', 'the new key file')
    .option('--label <text>', "the new key's label", 'added key')
    .action(async (o: FromOpts & { newKeyFile: string; label: string }) => {
      const config = s3From(o.from);
      const secret = keySecret(o.keyFile ?? config.keyFile, 'store key file');
      const id = await addStoreKey(config, secret, keySecret(o.newKeyFile, 'new key file', true), { label: o.label });
      ctx.out({ id, keyFile: o.newKeyFile }, () => `added key ${id} (${o.newKeyFile}); keep a copy away from the boxes and the bucket`);
    });
  tableOptions(fromOption(key.command('list')))
    .description('the keys that open the store (nothing secret)')
    .action(async (o: FromOpts) => {
      const keys = await listStoreKeys(s3From(o.from));
      ctx.out(keys, () =>
        table(keys, [
          { header: 'ID', get: (k) => k.id, priority: 20 },
          { header: 'Label', get: (k) => k.label, priority: 15 },
          { header: 'Created', get: (k) => humanDate(Date.parse(k.createdAt)), priority: 10 },
        ]),
      );
    });
  fromOption(key.command('remove'))
    .description('remove a key (never the last one: that would lose every backup)')
    .argument('<id>', 'key id (store key list)')
    .action(async (id: string, o: FromOpts) => {
      const config = s3From(o.from);
      await removeStoreKey(config, keySecret(o.keyFile ?? config.keyFile, 'store key file'), id);
      ctx.out({ removed: id }, () => `removed key ${id}`);
    });
}
