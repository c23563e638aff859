// controller.yaml validation through the real built daemon: a bad config prints one line
// naming the bad key, exits 2, and never shows a stack trace.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadControllerConfig, parseDuration } from '../../packages/controller/src/config.js';
import { CONTROLLER_MAIN, run } from './helpers.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-ctlconfig-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const GOOD = `listen: 127.0.0.1:7443
tls: { ca: certs/ca.crt, cert: certs/controller.crt, key: certs/controller.key }
catalog: state/catalog.db
store: /srv/boxback/store
`;

function write(name: string, text: string): string {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
}

async function check(file: string) {
  return run([CONTROLLER_MAIN, '--config', file, '--check-config']);
}

function expectOneLineNoStack(stderr: string) {
  expect(stderr.trim().split('\n')).toHaveLength(1);
  expect(stderr).not.toMatch(/\n\s+at /);
  expect(stderr).toMatch(/^boxback-controller: /);
}

describe('controller.yaml', () => {
  it('accepts a good config, with defaults and paths resolved from the file', async () => {
    const f = write('good.yaml', GOOD);
    const r = await check(f);
    expect(r.code, r.stderr).toBe(0);
    const c = loadControllerConfig(f);
    expect(c).toMatchObject({ concurrency: 4, defaultRpoSeconds: 86_400, store: '/srv/boxback/store' });
    expect(c.catalog).toBe(path.join(dir, 'state/catalog.db'));
    expect(c.tls.ca).toBe(path.join(dir, 'certs/ca.crt'));
  });

  it.each([
    ['a bad concurrency', `${GOOD}concurrency: 0\n`, /concurrency/],
    ['an unknown key', `${GOOD}concurency: 3\n`, /concurency/],
    ['a missing tls key', GOOD.replace(', key: certs/controller.key', ''), /tls\.key/],
    ['a bad listen address', GOOD.replace('127.0.0.1:7443', 'localhost'), /listen: want host:port/],
    ['a bad RPO', `${GOOD}defaultRpoSeconds: soon\n`, /defaultRpoSeconds/],
    ['a PostgreSQL catalog', GOOD.replace('state/catalog.db', 'postgres://db/boxback'), /catalog: PostgreSQL/],
    ['bad YAML', 'listen: [\n', /not valid YAML/],
  ])('rejects %s: exit 2, one line naming it', async (_what, text, re) => {
    const r = await check(write(`bad-${Math.random().toString(36).slice(2)}.yaml`, text));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(re);
    expectOneLineNoStack(r.stderr);
  });

  it('reports a missing file and a missing --config the same way', async () => {
    const missing = await check(path.join(dir, 'nope.yaml'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/nope\.yaml: no such file/);
    expectOneLineNoStack(missing.stderr);
    const none = await run([CONTROLLER_MAIN]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--config FILE is required/);
  });

  it('parses durations', () => {
    expect(parseDuration('24h')).toBe(86_400);
    expect(parseDuration('15m')).toBe(900);
    expect(parseDuration(90)).toBe(90);
    expect(() => parseDuration('soon')).toThrow(/bad duration/);
  });
});
