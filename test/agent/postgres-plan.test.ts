// The `postgres:` block of a host plan: defaults, the allow-list of pg_dump options, and
// errors that name the bad key as datasets.N.postgres.KEY (also through the whole plan).
import { describe, expect, it } from 'vitest';
import { BoxbackError, parseWithSchema } from '@boxback/common';
import { planSchema } from '../../packages/agent/src/plan.js';
import { parsePostgresDataset } from '../../packages/agent/src/postgres/plan.js';
import { pgDumpArgv } from '../../packages/agent/src/postgres/dump.js';
import { loadArgv } from '../../packages/agent/src/postgres/restore.js';
import { versionText, majorOf } from '../../packages/agent/src/postgres/exec.js';

const base = { name: 'database', kind: 'postgres' as const, archive: 'db.gocd' };
const pgBlock = { database: 'gocd', user: 'gocd', passwordFile: '/etc/boxback/gocd.password' };

function problems(d: Record<string, unknown>, index = 3): string {
  try {
    parsePostgresDataset(d as never, index);
  } catch (err) {
    expect(err).toBeInstanceOf(BoxbackError);
    expect((err as BoxbackError).code).toBe('BOXBACK_ERR_PLAN_INVALID');
    return (err as Error).message;
  }
  throw new Error('expected the dataset to be refused');
}

describe('postgres block', () => {
  it('fills the defaults: custom format, no quiesce, owner = user, recreate', () => {
    const ds = parsePostgresDataset({ ...base, postgres: pgBlock }, 2);
    expect(ds).toMatchObject({ index: 2, name: 'database', archive: 'db.gocd' });
    expect(ds.pg).toMatchObject({
      host: 'localhost',
      port: 5432,
      format: 'custom',
      quiesce: false,
      ownerRole: 'gocd',
      emptyWith: 'recreate',
      maintenanceDatabase: 'postgres',
      extraArgs: [],
    });
  });

  it('names each bad key as datasets.N.postgres.KEY', () => {
    expect(problems({ ...base, postgres: { ...pgBlock, port: 'x' } })).toMatch(/datasets\.3\.postgres\.port: /);
    expect(problems({ ...base, postgres: { ...pgBlock, format: 'tar' } })).toMatch(/datasets\.3\.postgres\.format: .*"custom"/);
    expect(problems({ ...base, postgres: { ...pgBlock, sslmode: 'always' } })).toMatch(/datasets\.3\.postgres\.sslmode/);
    expect(problems({ ...base, postgres: { ...pgBlock, passwordFile: 'relative' } })).toMatch(
      /datasets\.3\.postgres\.passwordFile: must be an absolute path/,
    );
    expect(problems({ ...base, postgres: { ...pgBlock, database: 'a b' } })).toMatch(/datasets\.3\.postgres\.database: /);
    expect(problems({ ...base, postgres: { ...pgBlock, password: 'inline' } })).toMatch(/datasets\.3\.postgres: .*"password"/);
    expect(problems({ ...base, postgres: { user: 'gocd' } })).toMatch(/datasets\.3\.postgres\.database: /);
    expect(problems({ ...base, archive: 'db.postgres', postgres: { ...pgBlock, database: 'postgres' } })).toMatch(
      /datasets\.3\.postgres\.maintenanceDatabase: must differ/,
    );
  });

  it('allows only listed pg_dump options, one item each', () => {
    const ok = parsePostgresDataset({
      ...base,
      postgres: { ...pgBlock, extraArgs: ['--no-comments', '--exclude-table-data=public.logs', '--compress=9'] },
    });
    expect(ok.pg.extraArgs).toHaveLength(3);
    expect(problems({ ...base, postgres: { ...pgBlock, extraArgs: ['--no-comments', '--file=/etc/passwd'] } })).toMatch(
      /datasets\.3\.postgres\.extraArgs\.1: "--file=\/etc\/passwd" is not an allowed pg_dump option/,
    );
    expect(problems({ ...base, postgres: { ...pgBlock, extraArgs: ['--table', 'x'] } })).toMatch(/extraArgs\.0: .*--table=VALUE/);
    expect(problems({ ...base, postgres: { ...pgBlock, extraArgs: ['--password'] } })).toMatch(/extraArgs\.0/);
    expect(problems({ ...base, postgres: { ...pgBlock, format: 'plain', extraArgs: ['--compress=5'] } })).toMatch(
      /extraArgs: --compress applies to the custom format only/,
    );
  });

  it('wants the block, no path or files, and the archive named db.<database>', () => {
    expect(problems({ ...base })).toMatch(/datasets\.3\.postgres: a kind: postgres dataset needs a postgres block/);
    expect(problems({ ...base, path: '/var/lib/x', postgres: pgBlock })).toMatch(/datasets\.3\.path: a postgres dataset has no path/);
    expect(problems({ ...base, archive: 'db.zip', postgres: pgBlock })).toMatch(/datasets\.3\.archive: must be db\.gocd/);
    expect(problems({ ...base, kind: 'zip', path: '/x', postgres: pgBlock })).toMatch(/datasets\.3\.kind: .*not postgres/);
  });

  it('through the whole host plan (its member of the dataset union)', () => {
    const schema = planSchema;
    const raw = {
      name: 'gocd-pg',
      datasets: [
        { name: 'config', archive: 'config-dir.zip', path: '/etc/go' },
        { name: 'database', kind: 'postgres', archive: 'db.gocd', postgres: { ...pgBlock, port: 70000, extraArgs: ['-f', 'x'] } },
        { name: 'plugins', archive: 'plugins.zip', path: '/var/lib/go-server/plugins', postgres: { database: 'x' } },
      ],
    };
    let msg = '';
    try {
      parseWithSchema(schema, raw, 'plan.yaml', 'BOXBACK_ERR_PLAN_INVALID');
    } catch (err) {
      msg = (err as Error).message;
    }
    expect(msg).toMatch(/datasets\.1\.postgres\.port: /);
    expect(msg).toMatch(/datasets\.1\.postgres\.extraArgs\.0: /);
    expect(msg).toMatch(/datasets\.2\.postgres: only a kind: postgres dataset has a postgres block/);
    const good = parseWithSchema(schema, { ...raw, datasets: [raw.datasets[0], { ...raw.datasets[1], postgres: pgBlock }] }, 'plan.yaml');
    expect(good.datasets[1].kind).toBe('postgres');
  });
});

describe('command lines', () => {
  const ds = parsePostgresDataset({
    ...base,
    postgres: { ...pgBlock, host: '/run/postgresql', binDir: '/usr/lib/postgresql/15/bin', extraArgs: ['--no-comments'] },
  });
  const conn = { ds, env: {}, redact: (t: string) => t };

  it('pg_dump: connection, format, file and the extra options; never a password', () => {
    expect(pgDumpArgv(ds, conn, '/store/.db.gocd.tmp')).toEqual([
      '/usr/lib/postgresql/15/bin/pg_dump',
      '--host=/run/postgresql',
      '--port=5432',
      '--username=gocd',
      '--dbname=gocd',
      '--no-password',
      '--format=custom',
      '--file=/store/.db.gocd.tmp',
      '--no-comments',
    ]);
    const plain = parsePostgresDataset({ ...base, postgres: { ...pgBlock, format: 'plain' } });
    expect(pgDumpArgv(plain, { ...conn, ds: plain }, '/f')).toEqual(
      expect.arrayContaining(['--format=plain', '--no-owner', '--clean', '--if-exists']),
    );
  });

  it('restore: pg_restore or psql by format, as the owner role, in one transaction', () => {
    const owned = parsePostgresDataset({ ...base, postgres: { ...pgBlock, ownerRole: 'go_owner', binDir: '/b' } });
    const c = { ...conn, ds: owned };
    expect(loadArgv(c, '/b/db.gocd', 'custom', false).slice(6)).toEqual([
      '--no-owner',
      '--role=go_owner',
      '--exit-on-error',
      '--single-transaction',
      '/b/db.gocd',
    ]);
    expect(loadArgv(c, '/b/db.gocd', 'custom', true)).toEqual(expect.arrayContaining(['--clean', '--if-exists']));
    expect(loadArgv(c, '/b/db.gocd', 'plain', false).slice(0, 1)).toEqual(['/b/psql']);
    expect(loadArgv(c, '/b/db.gocd', 'plain', false).slice(6)).toEqual([
      '-X',
      '-q',
      '-v',
      'ON_ERROR_STOP=1',
      '--single-transaction',
      '-c',
      'SET ROLE "go_owner"',
      '-f',
      '/b/db.gocd',
    ]);
  });

  it('versions: display form and major', () => {
    expect(versionText(150018)).toBe('15.18');
    expect(versionText(90624)).toBe('9.6.24');
    expect(majorOf(170002)).toBeGreaterThan(majorOf(150018));
    expect(majorOf(150018)).toBe(majorOf(150002));
    expect(majorOf(100001)).toBeGreaterThan(majorOf(90624));
  });
});
