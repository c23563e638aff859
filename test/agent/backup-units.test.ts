// Small pure pieces of the backup engine: excludes, rsync progress lines, GoCD hook variables,
// the manifest text, phase names.
import { describe, expect, it } from 'vitest';
import { datasetPhase, treePhase } from '../../packages/agent/src/backup/backup.js';
import { gocdEnv } from '../../packages/agent/src/backup/hooks.js';
import { buildManifest, manifestToJson } from '@boxback/common';
import { parseProgress2, rsyncArgs } from '@boxback/common';
import { excludeMatcher } from '@boxback/common';

describe('backup engine pieces', () => {
  it('excludes follow rsync rules', () => {
    const m = excludeMatcher(['*.log', '/tmp', 'cache/', 'a/**/z']);
    expect(m('x/y/build.log', false)).toBe(true);
    expect(m('build.log.gz', false)).toBe(false);
    expect(m('tmp', true)).toBe(true);
    expect(m('x/tmp', true)).toBe(false);
    expect(m('x/cache', true)).toBe(true);
    expect(m('x/cache', false)).toBe(false);
    expect(m('a/b/c/z', false)).toBe(true);
    expect(excludeMatcher([])('anything', false)).toBe(false);
  });

  it('parses rsync --info=progress2 lines', () => {
    expect(parseProgress2('    104,857,600  50%   98.20MB/s    0:00:01 (xfr#12, to-chk=30/100)')).toEqual({
      bytesDone: 104_857_600,
      bytesTotal: 209_715_200,
      filesDone: 70,
      filesTotal: 100,
    });
    expect(parseProgress2('          1,024   0%    0.00kB/s    0:00:00')).toEqual({
      bytesDone: 1024,
      bytesTotal: 0,
      filesDone: 0,
      filesTotal: 0,
    });
    expect(parseProgress2('sending incremental file list')).toBeUndefined();
    const args = rsyncArgs({ source: '/src/', dest: '/dst', linkDest: '/prev/artifacts', excludes: ['*.tmp'] }, true);
    expect(args).toEqual([
      '-a',
      '--delete',
      '--numeric-ids',
      '--modify-window=-1',
      '--no-inc-recursive',
      '--info=progress2',
      '--stats',
      '--link-dest=/prev/artifacts',
      '--exclude=*.tmp',
      '/src/',
      '/dst/',
    ]);
    expect(rsyncArgs({ source: '/s', dest: '/d', linkDest: '/p' }, false)).not.toContain('--link-dest=/p');
  });

  it('gives post-backup hooks the variables GoCD gives its post-backup script', () => {
    const at = new Date('2018-08-29T14:00:35.123Z');
    const base = { at, baseDir: '/store/h', backupId: 'h@20180829-140035', host: 'h', jobId: 'j', initiatedBy: 'bob' };
    expect(gocdEnv({ ...base, success: true, backupPath: '/store/h/backup_20180829-140035', initiatedVia: 'schedule' })).toMatchObject({
      GOCD_BACKUP_TIMESTAMP: '2018-08-29T14:00:35Z',
      GOCD_BACKUP_STATUS: 'success',
      GOCD_BACKUP_BASE_DIR: '/store/h',
      GOCD_BACKUP_PATH: '/store/h/backup_20180829-140035',
      GOCD_BACKUP_INITIATED_VIA: 'TIMER',
    });
    const failed = gocdEnv({ ...base, success: false, initiatedVia: 'cli', error: 'disk full' });
    expect(failed).toMatchObject({
      GOCD_BACKUP_STATUS: 'failure',
      GOCD_BACKUP_INITIATED_BY_USER: 'bob',
      BOXBACK_BACKUP_ERROR: 'disk full',
    });
    expect(failed.GOCD_BACKUP_PATH).toBeUndefined();
    expect(failed.GOCD_BACKUP_INITIATED_VIA).toBeUndefined();
  });

  it('writes manifest.json as valid JSON with one line per file, totals from its files', () => {
    const m = buildManifest({
      id: 'h@20260101-000000',
      host: 'h',
      timestamp: '20260101-000000',
      createdAt: 'a',
      completedAt: 'b',
      origin: 'boxback',
      plan: { name: 'p', product: 'gocd' },
      product: { name: 'gocd', version: '1' },
      source: { hostname: 'h', addresses: [] },
      consistency: 'quiesced',
      quiesce: { mode: 'stop', windowMs: 5 },
      phases: [],
      datasets: [],
      trees: [],
      warnings: [],
      files: [
        { path: 'db.zip', type: 'file', size: 10, sha256: 'ab', mode: 0o644, uid: 0, gid: 0, mtimeMs: 1 },
        { path: 'artifacts', type: 'dir', size: 0, mode: 0o755, uid: 0, gid: 0, mtimeMs: 1 },
        { path: 'artifacts/$&.log', type: 'file', size: 5, sha256: 'cd', mode: 0o644, uid: 0, gid: 0, mtimeMs: 1 },
      ],
    });
    const text = manifestToJson(m);
    expect(JSON.parse(text)).toEqual(m);
    expect(text.split('\n').filter((l) => l.includes('"sha256"'))).toHaveLength(2);
    expect(m.totals).toEqual({ files: 2, bytes: 15 });
    expect(JSON.parse(manifestToJson({ ...m, files: [] })).files).toEqual([]);
  });

  it('names phases as GoCD does where it has a name', () => {
    expect(['database', 'config', 'wrapper-config', 'config-repo', 'env-files'].map(datasetPhase)).toEqual([
      'BACKUP_DATABASE',
      'BACKUP_CONFIG',
      'BACKUP_WRAPPER_CONFIG',
      'BACKUP_CONFIG_REPO',
      'BACKUP_ENV_FILES',
    ]);
    expect(treePhase({ name: 'test-reports', source: '/x', excludes: [] })).toBe('SYNC_TEST_REPORTS');
    expect(treePhase({ name: 'artifacts', source: '/x', excludes: [], phase: 'SYNC_ARTIFACTS' })).toBe('SYNC_ARTIFACTS');
  });
});
