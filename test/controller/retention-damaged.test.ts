// A backup that fails verification is not deleted silently by retention, through the real
// controller and CLI: `backup verify` marks it DAMAGED and POSTs the "damaged" webhook;
// `backups prune` keeps it (reason "damaged", it takes no slot of the policy) while its
// keepDamagedDays run, and deletes it once they passed, with another "damaged" webhook and
// an audit line.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { craftZip } from '../helpers/craft-zip.js';
import { cli, createTokenLocal, makeCerts, startController, until, writeControllerYaml, type ControllerProc } from './helpers.js';

let dir: string;
let store: string;
let controller: ControllerProc;
let env: { controller: string; ca: string; token: string };
let hook: http.Server;
const posts: Array<Record<string, string | null>> = [];
const json = (s: string) => JSON.parse(s);

/** Import a GoCD-made backup of `host` taken at `ts`; returns its id. */
async function importGocd(host: string, ts: string): Promise<string> {
  const d = path.join(dir, 'gocd', host, `backup_${ts}`);
  mkdirSync(d, { recursive: true });
  craftZip(path.join(d, 'db.zip'), [{ name: 'cruise.h2.db', data: `db of ${host} at ${ts}` }]);
  craftZip(path.join(d, 'config-dir.zip'), [{ name: 'cruise-config.xml', data: '<cruise/>' }]);
  writeFileSync(path.join(d, 'version.txt'), '23.1.0 (16079-8f9c7a2)');
  const r = await cli(['--json', 'backup', 'import', d, '--host', host], env);
  expect(r.code, r.stderr).toBe(0);
  return json(r.stdout).id;
}

/** Overwrite a stored file with other bytes of the same size (a bit-rotted disk). */
function rot(host: string, ts: string, rel: string): void {
  const f = path.join(store, host, `backup_${ts}`, rel);
  writeFileSync(f, Buffer.alloc(statSync(f).size, 0x42));
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-damaged-'));
  const certs = await makeCerts(dir);
  store = path.join(dir, 'store');
  hook = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      posts.push(JSON.parse(body));
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`;
  const configFile = writeControllerYaml(
    dir,
    0,
    `pollSeconds: 3600
notify:
  webhooks:
    - { url: ${JSON.stringify(url)}, retries: 0 }
retention:
  hosts:
    keep1: { keepManual: 1 }
    expire1: { keepManual: 1, keepDamagedDays: 0 }
`,
  );
  const token = await createTokenLocal(configFile, 'alice', 'admin');
  controller = await startController(configFile);
  env = { controller: controller.address, ca: certs.ca, token };
  // registered, with no agent: the store is the controller's own, verify reads it there
  for (const h of ['keep1', 'expire1'])
    expect((await cli(['hosts', 'add', h, '--address', '127.0.0.1:1', '--skip-check'], env)).code).toBe(0);
});

afterAll(async () => {
  await controller?.stop();
  hook?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('damaged backups and retention', () => {
  it('verify marks a damaged backup, says so by webhook, and prune keeps it as damaged', async () => {
    const old = await importGocd('keep1', '20250101-010000');
    const mid = await importGocd('keep1', '20250102-010000');
    const newest = await importGocd('keep1', '20250103-010000');
    rot('keep1', '20250101-010000', 'db.zip');

    const v = await cli(['backup', 'verify', old], env);
    expect(v.code).toBe(5);
    const hooked = await until(() => posts.find((p) => p.event === 'damaged' && p.backupId === old), 10_000, 'damaged webhook');
    expect(hooked).toMatchObject({ host: 'keep1', status: 'Damaged' });
    expect(hooked.message).toMatch(/failed verification and is no longer Restorable; retention keeps it as damaged/);
    expect(hooked.error).toMatch(/db\.zip: SHA-256 mismatch/);

    const list = await cli(['backups', '--host', 'keep1'], env, { COLUMNS: '200' });
    expect(list.stdout).toMatch(new RegExp(`${old}.*DAMAGED`));
    const got = json((await cli(['--json', 'backup', 'get', old], env)).stdout);
    expect(got).toMatchObject({ restorable: false, damaged: true });

    const pr = await cli(['--json', 'backups', 'prune', '--host', 'keep1', '--yes'], env);
    expect(pr.code, pr.stderr).toBe(0);
    const items = new Map(json(pr.stdout).items.map((i: { id: string }) => [i.id, i]));
    expect(items.get(old)).toMatchObject({ keep: true, reasons: ['damaged'] });
    expect(items.get(newest)).toMatchObject({ keep: true }); // keepManual 1: the damaged one took no slot
    expect(items.get(mid)).toMatchObject({ keep: false, deleted: true, reasons: ['outside-policy'] });
    expect(existsSync(path.join(store, 'keep1', 'backup_20250101-010000'))).toBe(true);
  });

  it('deletes a damaged backup once its keepDamagedDays passed, with a webhook and an audit line', async () => {
    const old = await importGocd('expire1', '20250101-010000');
    await importGocd('expire1', '20250103-010000');
    rot('expire1', '20250101-010000', 'config-dir.zip');
    expect((await cli(['backup', 'verify', old], env)).code).toBe(5);

    const pr = await cli(['--json', 'backups', 'prune', '--host', 'expire1', '--yes'], env);
    expect(pr.code, pr.stderr).toBe(0);
    expect(json(pr.stdout).items.find((i: { id: string }) => i.id === old)).toMatchObject({
      keep: false,
      deleted: true,
      reasons: ['damaged-expired'],
    });
    expect(existsSync(path.join(store, 'expire1', 'backup_20250101-010000'))).toBe(false);
    const gone = await until(
      () => posts.find((p) => p.event === 'damaged' && p.backupId === old && /deleted by retention/.test(p.message ?? '')),
      10_000,
      'deleted-damaged webhook',
    );
    expect(gone.message).toMatch(/keepDamagedDays passed/);
    const audit = await cli(['--json', 'audit'], env);
    expect(audit.stdout).toMatch(/damaged-expired/);
  });
});
