// The boxback CLI's contract: exit codes (0 ok, 2 usage, 3 not found, 4 permission,
// 6 unreachable), errors as one `boxback: ...` line without a stack trace, exit codes
// listed in --help, local `certs` commands, tables and --json.
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { humanAge, humanBytes, humanDuration, table } from '../../packages/controller/src/cli/format.js';
import { CLI_MAIN, cli, createTokenLocal, makeCerts, run, startController, writeControllerYaml, type ControllerProc } from './helpers.js';

let dir: string;
let controller: ControllerProc;
let admin: { controller: string; ca: string; token: string };
let viewer: { controller: string; ca: string; token: string };

function oneLine(stderr: string) {
  expect(stderr.trim().split('\n')).toHaveLength(1);
  expect(stderr).toMatch(/^boxback: BOXBACK_ERR_[A-Z_]+: /);
  expect(stderr).not.toMatch(/\n\s+at /);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-cli-'));
  const certs = await makeCerts(dir);
  const configFile = writeControllerYaml(dir, 0, 'pollSeconds: 3600\n');
  const adminToken = await createTokenLocal(configFile, 'alice', 'admin');
  const viewerToken = await createTokenLocal(configFile, 'ci-bot', 'viewer');
  controller = await startController(configFile);
  admin = { controller: controller.address, ca: certs.ca, token: adminToken };
  viewer = { ...admin, token: viewerToken };
});

afterAll(async () => {
  await controller?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('boxback CLI exit codes', () => {
  it('lists the exit codes in --help and exits 0', async () => {
    const r = await run([CLI_MAIN, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      /Exit codes:[\s\S]*2\s+usage error[\s\S]*3\s+not found[\s\S]*4\s+permission denied[\s\S]*5\s+job failed[\s\S]*6\s+controller or agent unreachable/,
    );
    const sub = await run([CLI_MAIN, 'backup', 'restore', '--help']);
    expect(sub.code).toBe(0);
    expect(sub.stdout).toMatch(/--target[\s\S]*Exit codes:/);
  });

  it('exits 2 on usage errors', async () => {
    for (const args of [
      ['--bogus'],
      ['frobnicate'],
      ['backup', 'create'],
      ['backup', 'create', '--host', 'a', '--all'],
      ['backup', 'create', '--all', '--concurrency', 'x'],
    ]) {
      const r = await cli(args, admin);
      expect(r.code, args.join(' ')).toBe(2);
      oneLine(r.stderr);
    }
    const noController = await run([CLI_MAIN, 'backups'], {
      env: { BOXBACK_CONTROLLER: '', BOXBACK_CA: '', BOXBACK_CONFIG: '', HOME: dir },
    });
    expect(noController.code).toBe(2);
    expect(noController.stderr).toMatch(/no controller address/);
  });

  it('exits 3 for an unknown backup, job or host', async () => {
    for (const args of [
      ['backup', 'get', 'nope@20260101-000000'],
      ['job', 'watch', 'backup-x'],
      ['hosts', 'remove', 'nope'],
      ['backup', 'create', '--host', 'nope'],
    ]) {
      const r = await cli(args, admin);
      expect(r.code, args.join(' ')).toBe(3);
      oneLine(r.stderr);
    }
  });

  it('exits 4 for a viewer mutating, and for a bad token', async () => {
    const r = await cli(['hosts', 'add', 'x', '--address', '127.0.0.1:2', '--skip-check'], viewer);
    expect(r.code).toBe(4);
    expect(r.stderr.trim()).toBe('boxback: BOXBACK_ERR_PERMISSION_DENIED: role viewer may not add hosts; ask an admin for an admin token');
    const bad = await cli(['backups'], { ...admin, token: 'bbx_wrong' });
    expect(bad.code).toBe(4);
    oneLine(bad.stderr);
  });

  it('exits 6 when the controller does not answer', async () => {
    const r = await cli(['backups'], { ...admin, controller: '127.0.0.1:1' });
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/^boxback: BOXBACK_ERR_UNREACHABLE: the controller at 127\.0\.0\.1:1 did not answer: connection refused/);
    oneLine(r.stderr);
  });

  it('reads controller, ca and token from cli.yaml, relative to the file', async () => {
    const yaml = path.join(dir, 'cli.yaml');
    writeFileSync(yaml, `controller: ${admin.controller}\nca: certs/ca.crt\ntoken: ${admin.token}\n`);
    const r = await run([CLI_MAIN, '--config', yaml, '--json', 'hosts', 'list'], {
      env: { BOXBACK_CONTROLLER: '', BOXBACK_CA: '', BOXBACK_TOKEN: '' },
    });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
    const badYaml = path.join(dir, 'bad-cli.yaml');
    writeFileSync(badYaml, 'controler: x:1\n');
    const bad = await run([CLI_MAIN, '--config', badYaml, 'backups']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/controler/);
  });
});

describe('boxback certs', () => {
  it('creates a CA and issues agent certificates locally, keys mode 0600', async () => {
    const d = path.join(dir, 'newcerts');
    const init = await run([CLI_MAIN, 'certs', 'init', '--dir', d, '--alt-name', 'ctl.example.com']);
    expect(init.code, init.stderr).toBe(0);
    expect(statSync(path.join(d, 'ca.key')).mode & 0o777).toBe(0o600);
    const again = await run([CLI_MAIN, 'certs', 'init', '--dir', d]);
    expect(again.code).not.toBe(0);
    oneLine(again.stderr);
    const issue = await run([CLI_MAIN, '--json', 'certs', 'issue', '--dir', d, '--host', 'gocd1']);
    expect(issue.code, issue.stderr).toBe(0);
    expect(existsSync(JSON.parse(issue.stdout).cert)).toBe(true);
    const bad = await run([CLI_MAIN, 'certs', 'issue', '--dir', d, '--host', '../evil']);
    expect(bad.code).toBe(2);
    oneLine(bad.stderr);
  });
});

describe('human output', () => {
  it('formats sizes, durations and ages', () => {
    expect(humanBytes(0)).toBe('0 B');
    expect(humanBytes(1536)).toBe('1.5 KiB');
    expect(humanBytes(5 * 1024 ** 3)).toBe('5.0 GiB');
    expect(humanDuration(65_000)).toBe('1m05s');
    expect(humanAge(Date.now() - 3 * 3600_000)).toBe('3h ago');
    expect(humanAge(0)).toBe('never');
  });

  it('fits a table to a terminal by dropping low-priority columns (and says which), then cutting; never when piped', () => {
    const rows = [{ a: 'gocd1@20261121-201000', b: 'quiesced', c: 'x'.repeat(40) }];
    const cols = [
      { header: 'Backup ID', get: (r: (typeof rows)[0]) => r.a, priority: 20 },
      { header: 'Consistency', get: (r: (typeof rows)[0]) => r.b, priority: 15 },
      { header: 'Note', get: (r: (typeof rows)[0]) => r.c, priority: 1 },
    ];
    const told: string[][] = [];
    const tty = (width: number, columns?: string[]) => ({ fit: true, width, columns, onDropped: (h: string[]) => told.push(h) });
    const wide = table(rows, cols, tty(200));
    expect(wide).toContain('Note');
    expect(told).toEqual([]);
    const narrow = table(rows, cols, tty(40));
    expect(narrow).not.toContain('Note');
    expect(told).toEqual([['Note']]);
    for (const line of narrow.split('\n')) expect(line.length).toBeLessThanOrEqual(40);
    const tiny = table(rows, cols, tty(25));
    for (const line of tiny.split('\n')) expect(line.length).toBeLessThanOrEqual(25);
    // piped (fit: false): every column, nothing cut, whatever the width
    const piped = table(rows, cols, { fit: false, width: 25 });
    expect(piped.split('\n')[0].split(/\s{2,}/)).toEqual(['Backup ID', 'Consistency', 'Note']);
    expect(piped).toContain('x'.repeat(40));
    expect(piped).not.toContain('…');
    // --columns: those, in that order, matched without case or punctuation; never dropped
    expect(table(rows, cols, tty(20, ['note', 'backup-id'])).split('\n')[0]).toMatch(/^Note\s+Backup ID$/);
    expect(() => table(rows, cols, tty(80, ['size']))).toThrow(/--columns: no column "size" here; there are backup-id, consistency, note/);
  });
});
