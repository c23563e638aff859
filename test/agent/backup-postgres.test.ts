// A backup whose database dataset is PostgreSQL: the orchestrator runs pg_dump (the postgres
// engineer's dump.ts) into db.<database>, checksums it and records it in the manifest.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '@boxback/common';
import { runBackup } from '../../packages/agent/src/backup/backup.js';
import { makeBackupBox, req, type BackupBox } from '../helpers/backup-box.js';
import { pgBinDir, startPgCluster, writePasswordFile, type PgCluster } from '../helpers/pg-cluster.js';

const haveBinaries = !!pgBinDir();

describe.skipIf(!haveBinaries)('backup with a postgres dataset', () => {
  let pg: PgCluster;
  let b: BackupBox;
  beforeAll(async () => {
    pg = await startPgCluster();
    pg.createApp('gocd', 's3cret-pw', 'gocd');
    pg.admin(
      'create table pipelines (id serial primary key, name text); insert into pipelines (name) select md5(g::text) from generate_series(1, 500) g; alter table pipelines owner to gocd;',
      'gocd',
    );
    b = await makeBackupBox();
  });
  afterAll(async () => {
    await b?.cleanup();
    pg?.stop();
  });

  it('dumps db.<database> with pg_dump, outside the window, and records it as a postgres dataset', async () => {
    const pwFile = writePasswordFile(b.box.root, 's3cret-pw');
    b.editPlan((p) => {
      p.datasets[0] = {
        name: 'database',
        kind: 'postgres',
        archive: 'db.gocd',
        postgres: { host: '127.0.0.1', port: pg.port, database: 'gocd', user: 'gocd', passwordFile: pwFile, binDir: pg.binDir },
      };
    });
    const { ctx, events } = b.job();
    const res = await runBackup(ctx, req());
    expect(res.errorMessage).toBe('');
    expect(res.status).toBe('Completed');
    const dir = path.join(b.store, res.backupPath);
    expect(existsSync(path.join(dir, 'db.gocd'))).toBe(true);
    expect(existsSync(path.join(dir, 'db.zip'))).toBe(false);
    const m = JSON.parse(res.manifestJson) as Manifest;
    const ds = m.datasets.find((d) => d.name === 'database')!;
    expect(ds).toMatchObject({ archive: 'db.gocd', kind: 'postgres', capture: 'engine', extra: { format: 'custom', database: 'gocd' } });
    const sum = execFileSync('sha256sum', [path.join(dir, 'db.gocd')], { encoding: 'utf8' }).slice(0, 64);
    expect(m.files.find((f) => f.path === 'db.gocd')!.sha256).toBe(sum);
    const list = execFileSync(path.join(pg.binDir, 'pg_restore'), ['--list', path.join(dir, 'db.gocd')], { encoding: 'utf8' });
    expect(list).toMatch(/TABLE public pipelines/);
    expect(events.some((e) => e.phase === 'BACKUP_DATABASE' && e.state === 'done')).toBe(true);
    expect(readFileSync(path.join(dir, 'manifest.json'), 'utf8')).not.toContain('s3cret-pw');
  });
});
