// `boxback store init|key add|key list|key remove` as a person runs them: the real CLI
// process against the run's radosgw, the store named by an agent.yaml's store: key, secrets
// in 0600 files. init says that a lost key loses the backups; the second key opens the
// store; the last key is never removed; a key file others can read is refused.
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';

import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3BackupStore } from '../../packages/common/src/store/s3/s3-store.js';
import { CLI_MAIN, CONTROLLER_MAIN, run } from '../controller/helpers.js';
import { makeBucket, sharedRadosgw, type RadosgwInfo } from '../helpers/radosgw.js';
import { quiet, removeTestDirs, s3Config, testDir } from '../helpers/s3-store.js';

let rgw: RadosgwInfo;
afterAll(removeTestDirs);
beforeAll(async () => {
  rgw = await sharedRadosgw();
});

describe('boxback store (CLI)', () => {
  it('init, key add, key list, key remove', async () => {
    const dir = testDir('cli');
    const bucket = await makeBucket(rgw, 'cli');
    writeFileSync(path.join(dir, 's3.cred'), `AWS_ACCESS_KEY_ID=${rgw.accessKeyId}\nAWS_SECRET_ACCESS_KEY=${rgw.secretAccessKey}\n`, {
      mode: 0o600,
    });
    const agentYaml = path.join(dir, 'agent.yaml');
    writeFileSync(
      agentYaml,
      `name: gocd1\nstore:\n  kind: s3\n  endpoint: ${rgw.endpoint}\n  bucket: ${bucket}\n  prefix: fleet1/\n  pathStyle: true\n  credentialsFile: s3.cred\n  keyFile: store.key\n`,
    );
    const cli = (...args: string[]) => run([CLI_MAIN, ...args], { timeoutMs: 60_000 });

    const init = await cli('store', 'init', '--from', agentYaml);
    expect(init.stderr).toBe('');
    expect(init.code).toBe(0);
    expect(init.stdout).toMatch(/WARNING: .*If you lose every one of them, every backup in this store is lost/);
    expect(statSync(path.join(dir, 'store.key')).mode & 0o777).toBe(0o600);
    const again = await cli('store', 'init', '--from', agentYaml);
    expect(again).toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/^boxback: BOXBACK_ERR_ALREADY_EXISTS: .*already a boxback store/),
    });

    const add = await cli('store', 'key', 'add', '--from', agentYaml, '--new-key-file', path.join(dir, 'safe.key'), '--label', 'ops safe');
    expect(add.code).toBe(0);
    const list = await cli('--json', 'store', 'key', 'list', '--from', agentYaml);
    const keys = JSON.parse(list.stdout) as Array<{ id: string; label: string }>;
    expect(keys.map((k) => k.label)).toEqual(['first key', 'ops safe']);
    for (const f of ['store.key', 'safe.key']) expect(list.stdout).not.toContain(readFileSync(path.join(dir, f), 'utf8').trim());

    // the safe's key opens the store (as a new box would with only that file)
    const config = s3Config(rgw, bucket);
    const bySafe = new S3BackupStore(config, {
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
      secret: Buffer.from(readFileSync(path.join(dir, 'safe.key'), 'utf8').trim()),
      log: quiet,
    });
    expect(await bySafe.listHosts()).toEqual([]);
    await bySafe.close();

    expect((await cli('store', 'key', 'remove', keys[0].id, '--from', agentYaml)).code).toBe(0);
    // the removed key no longer opens the store; the safe's still does
    const byFirst = new S3BackupStore(config, {
      credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
      secret: Buffer.from(readFileSync(path.join(dir, 'store.key'), 'utf8').trim()),
      log: quiet,
    });
    await expect(byFirst.listHosts()).rejects.toMatchObject({ code: 'BOXBACK_ERR_STORE_KEY' });
    await byFirst.close();
    const listed = await cli('--json', 'store', 'key', 'list', '--from', agentYaml);
    expect((JSON.parse(listed.stdout) as Array<{ id: string }>).map((k) => k.id)).toEqual([keys[1].id]);
    const last = await cli('store', 'key', 'remove', keys[1].id, '--from', agentYaml, '--key-file', path.join(dir, 'safe.key'));
    expect(last.code).not.toBe(0);
    expect(last.stderr).toMatch(/^boxback: BOXBACK_ERR_STORE_KEY: .*last key/);

    chmodSync(path.join(dir, 'safe.key'), 0o644);
    const loose = await cli(
      'store',
      'key',
      'add',
      '--from',
      agentYaml,
      '--key-file',
      path.join(dir, 'safe.key'),
      '--new-key-file',
      path.join(dir, 'x.key'),
    );
    expect(loose).toMatchObject({ code: 2, stderr: expect.stringMatching(/readable by others \(mode 644\); chmod 600 it/) });
  });
  it('the same from the controller host: boxback-controller --config controller.yaml store ...', async () => {
    const dir = testDir('bb-s3-ctl-');
    const bucket = await makeBucket(rgw, 'ctl');
    writeFileSync(path.join(dir, 's3.cred'), `AWS_ACCESS_KEY_ID=${rgw.accessKeyId}\nAWS_SECRET_ACCESS_KEY=${rgw.secretAccessKey}\n`, {
      mode: 0o600,
    });
    const yaml = path.join(dir, 'controller.yaml');
    writeFileSync(
      yaml,
      `listen: 127.0.0.1:7443\ntls: { ca: ca.crt, cert: c.crt, key: c.key }\ncatalog: catalog.db\nstore:\n  kind: s3\n  endpoint: ${rgw.endpoint}\n  bucket: ${bucket}\n  pathStyle: true\n  credentialsFile: s3.cred\n  keyFile: store.key\n`,
    );
    const ctl = (...args: string[]) => run([CONTROLLER_MAIN, '--config', yaml, 'store', ...args], { timeoutMs: 60_000 });
    const init = await ctl('init');
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toMatch(/WARNING: .*If you lose every one of them, every backup in this store is lost/);
    const add = await ctl('key', 'add', '--new-key-file', path.join(dir, 'second.key'));
    expect(add.code, add.stderr).toBe(0);
    const list = await ctl('key', 'list');
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toContain('first key');
    expect(list.stdout).not.toContain(readFileSync(path.join(dir, 'store.key'), 'utf8').trim());
  });
});
