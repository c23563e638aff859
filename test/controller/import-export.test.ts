// Import and export through the real controller and CLI: a GoCD-made backup directory
// becomes a Restorable boxback backup with a built manifest; export streams a tar that
// imports again under another host; verify catches a changed file; an archive with an
// entry escaping its directory is refused; delete removes it from store and catalog.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { craftZip } from '../helpers/craft-zip.js';
import {
  CLI_MAIN,
  cli,
  cliEnv,
  createTokenLocal,
  makeCerts,
  startController,
  writeControllerYaml,
  type ControllerProc,
} from './helpers.js';

let dir: string;
let store: string;
let controller: ControllerProc;
let env: { controller: string; ca: string; token: string };
const json = (s: string) => JSON.parse(s);

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-import-'));
  const certs = await makeCerts(dir);
  store = path.join(dir, 'store');
  const configFile = writeControllerYaml(dir, 0, 'pollSeconds: 3600\n');
  const token = await createTokenLocal(configFile, 'alice', 'admin');
  controller = await startController(configFile);
  env = { controller: controller.address, ca: certs.ca, token };
});

afterAll(async () => {
  await controller?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function gocdBackupDir(): string {
  const d = path.join(dir, 'gocd-backups', 'backup_20250101-101010');
  mkdirSync(d, { recursive: true });
  // real zips: import opens each one and CRC-checks every entry
  craftZip(path.join(d, 'db.zip'), [{ name: 'cruise.h2.db', data: Buffer.alloc(4096, 1) }]);
  craftZip(path.join(d, 'config-dir.zip'), [{ name: 'cruise-config.xml', data: 'config' }]);
  craftZip(path.join(d, 'config-repo.zip'), [{ name: 'HEAD', data: 'repo' }]);
  craftZip(path.join(d, 'wrapper-config-dir.zip'), [{ name: 'wrapper.conf', data: 'wrapper' }]);
  writeFileSync(path.join(d, 'version.txt'), '23.1.0 (16079-8f9c7a2)');
  return d;
}

describe('import and export', () => {
  it('imports a GoCD-made directory under a host, with a manifest built for it', async () => {
    const src = gocdBackupDir();
    const noHost = await cli(['backup', 'import', src], env);
    expect(noHost.code).toBe(2);
    expect(noHost.stderr).toMatch(/GoCD backup, which names no host: pass --host NAME/);

    const r = await cli(['--json', 'backup', 'import', src, '--host', 'gocd1'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r.stdout)).toMatchObject({
      id: 'gocd1@20250101-101010',
      origin: 'gocd-import',
      restorable: true,
      consistency: 'quiesced',
      productVersion: '23.1.0 (16079-8f9c7a2)',
    });
    const manifest = json(readFileSync(path.join(store, 'gocd1/backup_20250101-101010/manifest.json'), 'utf8'));
    expect(manifest.datasets.map((d: { name: string }) => d.name).sort()).toEqual(['config', 'config-repo', 'database', 'wrapper-config']);
    expect(manifest.files).toHaveLength(5);
    const sizes = readdirSync(src).map((n) => statSync(path.join(src, n)).size);
    expect(manifest.totals.bytes).toBe(sizes.reduce((a, b) => a + b, 0));

    const again = await cli(['backup', 'import', src, '--host', 'gocd1'], env);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already exists/);
    expect(existsSync(src)).toBe(true); // the source is left as it was
  });

  it('exports a tar and imports it again under another host; verify says ok', async () => {
    const tarFile = path.join(dir, 'gocd1.tar');
    const e = await cli(['backup', 'export', 'gocd1@20250101-101010', '-o', tarFile], env);
    expect(e.code, e.stderr).toBe(0);
    const listing = execFileSync('tar', ['-tf', tarFile], { encoding: 'utf8' });
    expect(listing).toContain('backup_20250101-101010/manifest.json');
    const i = await cli(['--json', 'backup', 'import', tarFile, '--host', 'gocd2'], env);
    expect(i.code, i.stderr).toBe(0);
    expect(json(i.stdout)).toMatchObject({ id: 'gocd2@20250101-101010', restorable: true, origin: 'boxback-import' });
    const v = await cli(['backup', 'verify', 'gocd2@20250101-101010'], env);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/ok, 5 files/);
  });

  it('exports to stdout with -o -: only the tar on stdout, piped into the real tar, bytes as in the store', async () => {
    const out = path.join(dir, 'piped');
    mkdirSync(out);
    // a real shell pipeline: boxback ... -o - | tar -x; pipefail makes either side's failure count
    const pipe = spawnSync(
      'bash',
      ['-o', 'pipefail', '-c', `"${process.execPath}" "${CLI_MAIN}" backup export gocd1@20250101-101010 -o - | tar -x -C "${out}"`],
      { env: cliEnv(env), encoding: 'utf8' },
    );
    expect(pipe.status, pipe.stderr).toBe(0);
    expect(pipe.stderr).toMatch(/^wrote [\d.]+ KiB of tar to stdout\n$/);
    const stored = path.join(store, 'gocd1/backup_20250101-101010');
    const names = readdirSync(stored).sort();
    expect(readdirSync(path.join(out, 'backup_20250101-101010')).sort()).toEqual(names);
    for (const n of names)
      expect(readFileSync(path.join(out, 'backup_20250101-101010', n)).equals(readFileSync(path.join(stored, n))), n).toBe(true);

    // stdout is nothing but the tar: `tar -t` reads all of it, with --json too
    const raw = spawnSync(process.execPath, [CLI_MAIN, '--json', 'backup', 'export', 'gocd1@20250101-101010', '-o', '-'], {
      env: cliEnv(env),
    });
    expect(raw.status, raw.stderr.toString()).toBe(0);
    expect(raw.stderr.toString()).toBe('');
    const listing = spawnSync('tar', ['-t'], { input: raw.stdout, encoding: 'utf8' });
    expect(listing.status, listing.stderr).toBe(0);
    expect(
      listing.stdout
        .split('\n')
        .filter((l) => l && !l.endsWith('/'))
        .sort(),
    ).toEqual(names.map((n) => `backup_20250101-101010/${n}`));
    expect(raw.stdout.length % 512).toBe(0); // whole tar blocks, no text after the archive
  });

  it('verify catches a changed file: exit 5, and the backup is no longer Restorable', async () => {
    const zip = path.join(store, 'gocd2/backup_20250101-101010/config-dir.zip');
    writeFileSync(zip, Buffer.alloc(statSync(zip).size, 0x43)); // same size, other bytes
    const v = await cli(['backup', 'verify', 'gocd2@20250101-101010'], env);
    expect(v.code).toBe(5);
    expect(v.stdout).toMatch(/config-dir\.zip: SHA-256 mismatch/);
    const b = json((await cli(['--json', 'backup', 'get', 'gocd2@20250101-101010'], env)).stdout);
    expect(b.restorable).toBe(false);
    const restore = await cli(['backup', 'restore', 'gocd2@20250101-101010', '--yes'], env);
    expect(restore.code).toBe(8);
    expect(restore.stderr).toMatch(/BOXBACK_ERR_NOT_RESTORABLE|is not Restorable \(its last verification failed: 1 problem/);
  });

  it('refuses a tar whose entries escape their directory', async () => {
    const d = path.join(dir, 'evil', 'inner');
    mkdirSync(d, { recursive: true });
    writeFileSync(path.join(dir, 'evil', 'payload'), 'x');
    const evil = path.join(dir, 'evil.tar');
    execFileSync('tar', ['-C', d, '-cPf', evil, '../payload']);
    const r = await cli(['backup', 'import', evil, '--host', 'gocd3'], env);
    expect(r.code).not.toBe(0);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/^boxback: .*an entry would land outside the backup directory/);
    expect(existsSync(path.join(store, 'payload'))).toBe(false);
    expect(existsSync(path.join(store, 'gocd3'))).toBe(false);
  });

  it('deletes a backup from the store and the catalog', async () => {
    const r = await cli(['backup', 'delete', 'gocd1@20250101-101010', '--yes'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(path.join(store, 'gocd1/backup_20250101-101010'))).toBe(false);
    expect((await cli(['backup', 'get', 'gocd1@20250101-101010'], env)).code).toBe(3);
  });
});
