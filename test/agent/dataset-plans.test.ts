// The plan's dataset union: each kind's block is checked where it is declared, and the
// errors name the bad key as datasets.N.KEY (h2, sqlite, mysql; postgres has its own file).
import { describe, expect, it } from 'vitest';
import { parseWithSchema } from '@boxback/common';
import { planSchema } from '../../packages/agent/src/plan.js';
import { DATASET_KINDS, driverOf } from '../../packages/agent/src/datasets/registry.js';

const refused = (datasets: unknown[]): string => {
  try {
    parseWithSchema(planSchema, { name: 'p', datasets }, 'plan.yaml', 'BOXBACK_ERR_PLAN_INVALID');
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected the plan to be refused');
};

describe('dataset kinds in the host plan', () => {
  it('registers one driver per kind, zip by default', () => {
    expect(DATASET_KINDS).toEqual(['zip', 'postgres', 'h2', 'sqlite', 'mysql']);
    const p = parseWithSchema(planSchema, { name: 'p', datasets: [{ name: 'db', archive: 'db.zip', path: '/var/lib/x' }] }, 'plan.yaml');
    expect(p.datasets[0].kind).toBe('zip');
    expect(driverOf(p.datasets[0]).kind).toBe('zip');
  });

  it('h2: needs the server URL and the database directory', () => {
    expect(refused([{ name: 'database', kind: 'h2', archive: 'db.zip', path: '/var/lib/go/h2db' }])).toMatch(
      /datasets\.0\.h2: a kind: h2 dataset needs a h2 block/,
    );
    expect(refused([{ name: 'database', kind: 'h2', archive: 'db.zip', h2: { url: 'jdbc:h2:tcp://127.0.0.1:9092/cruise' } }])).toMatch(
      /datasets\.0\.path: an h2 dataset needs path/,
    );
    expect(refused([{ name: 'database', kind: 'h2', archive: 'db.zip', path: '/x', h2: { url: 'jdbc:h2:file:/x/cruise' } }])).toMatch(
      /datasets\.0\.h2\.url: a jdbc:h2:tcp:\/\/HOST:PORT\/DATABASE URL/,
    );
    const ok = parseWithSchema(
      planSchema,
      {
        name: 'p',
        datasets: [{ name: 'database', kind: 'h2', archive: 'db.zip', path: '/x', h2: { url: 'jdbc:h2:tcp://127.0.0.1:9092/cruise' } }],
      },
      'plan.yaml',
    );
    expect(ok.datasets[0]).toMatchObject({ kind: 'h2', h2: { user: 'sa', quiesce: false, jar: '/usr/share/java/h2.jar' } });
  });

  it('sqlite and mysql: their blocks, no path or files, no other kind’s block', () => {
    expect(refused([{ name: 'db', kind: 'sqlite', archive: 'db.zip', sqlite: { file: 'relative.db' } }])).toMatch(
      /datasets\.0\.sqlite\.file: must be an absolute path/,
    );
    expect(refused([{ name: 'db', kind: 'sqlite', archive: 'db.zip', path: '/x', sqlite: { file: '/x/a.db' } }])).toMatch(
      /datasets\.0\.path: a sqlite dataset has no path/,
    );
    expect(refused([{ name: 'db', kind: 'mysql', archive: 'db.sql', mysql: { database: 'tc', user: 'tc', password: 'inline' } }])).toMatch(
      /datasets\.0\.mysql: .*"password"/,
    );
    expect(refused([{ name: 'db', kind: 'mysql', archive: 'db.sql', mysql: { database: 'tc', user: 'tc', probe: 'deep' } }])).toMatch(
      /datasets\.0\.mysql\.probe/,
    );
    expect(refused([{ name: 'db', archive: 'db.zip', path: '/x', sqlite: { file: '/x/a.db' } }])).toMatch(
      /datasets\.0\.sqlite: only a kind: sqlite dataset has a sqlite block/,
    );
    expect(refused([{ name: 'db', kind: 'oracle', archive: 'db.zip' }])).toMatch(/datasets\.0\.kind/);
  });
});
