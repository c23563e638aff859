// Token revocation, expiry and last use, and the audit of refused calls, with the real
// controller daemon and the real `boxback` / `boxback-controller` commands over TLS:
//  - a revoked token (by the CLI, by name; on the controller's box, by ID) and an expired one
//    fail at once with UNAUTHENTICATED, exit 4 and a message saying which and when;
//  - `tokens list` shows ID, state, last use and expiry;
//  - every refused call is in the audit log: no token and an unknown, revoked or expired one as
//    "(unauthenticated)" with the peer address, and a refused read (ListTokens, ListAudit).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CONTROLLER_MAIN,
  cli,
  createTokenLocal,
  makeCerts,
  run,
  sleep,
  startController,
  writeControllerYaml,
  type ControllerProc,
} from './helpers.js';

let dir: string;
let configFile: string;
let ctl: ControllerProc;
let ca: string;
let admin: string;

const as = (token: string | undefined, args: string[]) => cli(args, { controller: ctl.address, ca, token });

interface Audit {
  who: string;
  action: string;
  target: string;
  result: string;
  detail: string;
}
interface TokenInfo {
  id: number;
  name: string;
  /** RFC 3339, or null: never (the CLI's --json) */
  lastUsed: string | null;
  expiresAt: string | null;
  revokedAt: string | null;
}

async function created(args: string[]): Promise<string> {
  const r = await as(admin, ['tokens', 'create', ...args]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

async function audit(): Promise<Audit[]> {
  const r = await as(admin, ['--json', 'audit', '--limit', '200']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Audit[];
}

async function tokens(): Promise<TokenInfo[]> {
  const r = await as(admin, ['--json', 'tokens', 'list']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as TokenInfo[];
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-tokens-'));
  ca = (await makeCerts(dir)).ca;
  configFile = writeControllerYaml(dir, 0);
  admin = await createTokenLocal(configFile, 'ops', 'admin');
  ctl = await startController(configFile);
});

afterAll(async () => {
  await ctl?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('token revocation and expiry', () => {
  it('a revoked token fails at once, says so, and exits 4', async () => {
    const ci = await created(['--name', 'ci', '--role', 'viewer']);
    expect((await as(ci, ['status'])).code).toBe(0);
    const rev = await as(admin, ['tokens', 'revoke', 'ci']);
    expect(rev.code, rev.stderr).toBe(0);
    expect(rev.stdout).toMatch(/^revoked token "ci" \(id \d+\); calls with it fail from now on$/m);
    const r = await as(ci, ['status']);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(
      /^boxback: BOXBACK_ERR_UNAUTHENTICATED: token "ci" was revoked at \d{4}-\d\d-\d\d \d\d:\d\dZ; ask an admin for a new one/,
    );
    const again = await as(admin, ['tokens', 'revoke', 'nobody']);
    expect(again.code).toBe(3);
    expect(again.stderr).toMatch(/BOXBACK_ERR_NOT_FOUND: no token named or numbered "nobody"/);
  });

  it('an expired token fails with the time it expired; list shows last use, expiry and state', async () => {
    const short = await created(['--name', 'short', '--expires', '15s']); // room for the call below on a loaded machine (6 s ran out at load 25)
    const early = await as(short, ['status']);
    expect(early.code, early.stderr).toBe(0);
    const expiresAt = Date.parse((await tokens()).find((t) => t.name === 'short')!.expiresAt!);
    await sleep(Math.max(0, expiresAt - Date.now() + 200));
    const r = await as(short, ['status']);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/^boxback: BOXBACK_ERR_UNAUTHENTICATED: token "short" expired at .*Z; ask an admin for a new one/);
    const list = await tokens();
    const byName = new Map(list.map((t) => [t.name, t]));
    expect(byName.get('short')!.expiresAt).toMatch(/^\d{4}-\d\d-\d\dT.*Z$/);
    expect(byName.get('short')!.lastUsed).toMatch(/^\d{4}-\d\d-\d\dT.*Z$/); // the call before it expired
    expect(byName.get('ci')!.revokedAt).toMatch(/^\d{4}-\d\d-\d\dT.*Z$/);
    expect(byName.get('ops')!.expiresAt).toBeNull();
    const human = await as(admin, ['tokens', 'list']);
    expect(human.stdout).toMatch(/^\s*\d+\s+short\s+viewer\s+expired .* ago/m);
    expect(human.stdout).toMatch(/^\s*\d+\s+ci\s+viewer\s+revoked .* ago/m);
    expect(human.stdout).toMatch(/^\s*\d+\s+ops\s+admin\s+active\s.*never$/m);
  });

  it("the controller's own command revokes by ID, and --expires takes 90d", async () => {
    const long = await created(['--name', 'long', '--expires', '90d']);
    const t = (await tokens()).find((x) => x.name === 'long')!;
    expect(Date.parse(t.expiresAt!) - Date.now()).toBeGreaterThan(89 * 86_400_000);
    const r = await run([CONTROLLER_MAIN, '--config', configFile, 'token', 'revoke', String(t.id)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/revoked token "long" \(id \d+\)/);
    expect((await as(long, ['status'])).stderr).toMatch(/token "long" was revoked/);
    const bad = await as(admin, ['tokens', 'create', '--name', 'x', '--expires', 'soon']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/bad duration "soon"/);
  });
});

describe('the audit log records every refused call', () => {
  it('no token, an unknown, revoked or expired token, and refused reads', async () => {
    expect((await as('', ['status'])).code).toBe(4);
    expect((await as('bbx_not-a-real-token', ['hosts', 'list'])).code).toBe(4);
    const viewer = await created(['--name', 'dora', '--role', 'viewer']);
    expect((await as(viewer, ['tokens', 'list'])).code).toBe(4);
    expect((await as(viewer, ['audit'])).code).toBe(4);
    const entries = await audit();
    const unauth = entries.filter((e) => e.who === '(unauthenticated)');
    expect(unauth).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          action: 'GetStatus',
          result: 'BOXBACK_ERR_UNAUTHENTICATED',
          detail: expect.stringMatching(/^from .*127\.0\.0\.1.*: no token given/),
        }),
        expect.objectContaining({
          action: 'ListHosts',
          result: 'BOXBACK_ERR_UNAUTHENTICATED',
          detail: expect.stringMatching(/not known to this controller/),
        }),
        expect.objectContaining({ action: 'GetStatus', detail: expect.stringMatching(/token "ci" was revoked/) }),
        expect.objectContaining({ action: 'GetStatus', detail: expect.stringMatching(/token "short" expired/) }),
      ]),
    );
    expect(entries).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ who: 'dora', action: 'ListTokens', result: 'BOXBACK_ERR_PERMISSION_DENIED' }),
        expect.objectContaining({ who: 'dora', action: 'ListAudit', result: 'BOXBACK_ERR_PERMISSION_DENIED' }),
        expect.objectContaining({ who: 'ops', action: 'RevokeToken', target: 'ci', result: 'ok' }),
        expect.objectContaining({ who: 'local', action: 'token revoke', result: 'ok' }),
      ]),
    );
  });
});
