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
    expect(c).toMatchObject({ concurrency: 4, defaultRpoSeconds: 86_400, store: { kind: 'local', path: '/srv/boxback/store' } });
    expect(c.catalog).toBe(path.join(dir, 'state/catalog.db'));
    expect(c.tls.ca).toBe(path.join(dir, 'certs/ca.crt'));
  });

  it.each([
    ['a bad concurrency', `${GOOD}concurrency: 0\n`, /concurrency/],
    ['an unknown key', `${GOOD}concurency: 3\n`, /concurency/],
    ['a missing tls key', GOOD.replace(', key: certs/controller.key', ''), /tls\.key/],
    ['a bad listen address', GOOD.replace('127.0.0.1:7443', 'localhost'), /listen: want host:port/],
    ['a bad RPO', `${GOOD}defaultRpoSeconds: soon\n`, /defaultRpoSeconds/],
    [
      'a PostgreSQL catalog URL with a password in it',
      GOOD.replace('state/catalog.db', 'postgres://bb:s3cret@db/boxback'),
      /catalog: the URL must not hold a password; put it in catalogPasswordFile/,
    ],
    [
      'a PostgreSQL catalog URL without a database',
      GOOD.replace('state/catalog.db', 'postgres://bb@db'),
      /catalog: want postgres:\/\/user@host:port\/db/,
    ],
    ['a password file for a SQLite catalog', `${GOOD}catalogPasswordFile: pg.pw\n`, /catalogPasswordFile: only a postgres/],
    ['bad YAML', 'listen: [\n', /not valid YAML/],
    ['a bad cron', `${GOOD}schedules:\n  - { name: nightly, cron: "61 * * * *" }\n`, /schedules\.0\.cron: bad cron expression/],
    [
      'a drill schedule without a drill host',
      `${GOOD}schedules:\n  - { name: d, cron: "0 3 * * 0", kind: drill }\n`,
      /schedules\.0\.drillHost/,
    ],
    [
      'two schedules of one name',
      `${GOOD}schedules:\n  - { name: a, cron: "0 * * * *" }\n  - { name: a, cron: "5 * * * *" }\n`,
      /schedules\.1\.name: two schedules/,
    ],
    ['an unknown retention key', `${GOOD}retention:\n  default: { keepForever: 3 }\n`, /retention\.default/],
    ['a bad group policy', `${GOOD}retention:\n  groups: { gocd: { keepDaily: -1 } }\n`, /retention\.groups\.gocd\.keepDaily/],
    ['a bad webhook URL', `${GOOD}notify:\n  webhooks:\n    - url: ftp://x/y\n`, /notify\.webhooks\.0\.url/],
  ])('rejects %s: exit 2, one line naming it', async (_what, text, re) => {
    const r = await check(write(`bad-${Math.random().toString(36).slice(2)}.yaml`, text));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(re);
    expectOneLineNoStack(r.stderr);
  });

  it('takes schedules, retention per default/group/host and webhooks', async () => {
    const f = write(
      'policies.yaml',
      `${GOOD}schedules:
  - { name: nightly, cron: "0 2 * * *", timezone: Europe/Berlin, group: gocd, jitterSeconds: 600 }
  - { name: weekly-drill, cron: "0 4 * * 0", kind: drill, hosts: [gocd1], drillHost: spare1 }
retention:
  default: { keepLast: 3, keepDaily: 7, keepManual: 5 }
  groups: { gocd: { keepDaily: 14, keepWeekly: 8 } }
  hosts: { gocd1: { keepMonthly: 12 } }
notify:
  webhooks:
    - { url: "https://hooks.example.com/boxback", events: [failure, at-risk, success] }
`,
    );
    const r = await check(f);
    expect(r.code, r.stderr).toBe(0);
    const c = loadControllerConfig(f);
    expect(c.schedules.map((s) => [s.name, s.kind, s.retry.attempts])).toEqual([
      ['nightly', 'backup', 2],
      ['weekly-drill', 'drill', 2],
    ]);
    expect(c.retention).toMatchObject({ timezone: 'UTC', groups: { gocd: { keepDaily: 14 } }, hosts: { gocd1: { keepMonthly: 12 } } });
    expect(c.webhooks[0]).toMatchObject({ events: ['failure', 'at-risk', 'success'], retries: 3 });
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
