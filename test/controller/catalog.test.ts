// The SQLite catalog on a real file: migrations, reopening, derived Restorable, the
// append-only audit log, and refusing a catalog from a newer controller.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { MIGRATIONS } from '../../packages/controller/src/catalog/migrations.js';
import { SqliteCatalog } from '../../packages/controller/src/catalog/sqlite.js';
import { createToken, hashToken } from '../../packages/controller/src/auth.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-catalog-'));
const file = path.join(dir, 'sub', 'catalog.db');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const backup = (id: string, over: Record<string, unknown> = {}) => ({
  id,
  host: 'gocd1',
  createdAtMs: Date.parse('2026-11-21T20:10:00Z'),
  sizeBytes: 1234,
  consistency: 'quiesced',
  status: 'Completed' as const,
  verifiedAtMs: 0,
  verifyFailed: false,
  path: `gocd1/backup_${id.split('@')[1]}`,
  productVersion: '23.1.0',
  jobId: 'backup-1',
  origin: 'boxback',
  manifestJson: '{"format":"boxback/manifest@1"}',
  quiesceWindowMs: 1500,
  fileCount: 7,
  warningCount: 0,
  errorCount: 0,
  errorMessage: '',
  ...over,
});

describe('SqliteCatalog', () => {
  it('creates the file with WAL and migrates to the newest schema', async () => {
    const c = SqliteCatalog.open(file);
    expect(c.schemaVersion).toBe(MIGRATIONS.length);
    await c.close();
    const db = new Database(file, { readonly: true });
    expect(db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type='table'").all() as { name: string }[]).map((t) => t.name);
    expect(tables).toEqual(expect.arrayContaining(['hosts', 'backups', 'jobs', 'tokens', 'audit']));
    db.close();
  });

  it('keeps hosts, backups, jobs, tokens and the audit log across a reopen', async () => {
    let c = SqliteCatalog.open(file);
    await c.addHost({
      name: 'gocd1',
      address: '10.0.0.5:7444',
      group: 'ci',
      rpoSeconds: 3600,
      planName: '',
      product: '',
      productVersion: '',
      agentVersion: '',
      lastSeenMs: 0,
      createdAtMs: 1,
    });
    await expect(
      c.addHost({
        name: 'gocd1',
        address: 'x:1',
        group: '',
        rpoSeconds: 0,
        planName: '',
        product: '',
        productVersion: '',
        agentVersion: '',
        lastSeenMs: 0,
        createdAtMs: 1,
      }),
    ).rejects.toMatchObject({
      code: 'BOXBACK_ERR_ALREADY_EXISTS',
    });
    await c.putBackup(backup('gocd1@20261121-201000'));
    await c.putBackup(
      backup('gocd1@20261121-211000', { createdAtMs: Date.parse('2026-11-21T21:10:00Z'), status: 'Failed', manifestJson: '' }),
    );
    await c.createJob({
      id: 'backup-1',
      kind: 'backup',
      host: 'gocd1',
      state: 'Running',
      phase: 'BACKUP_DATABASE',
      progressJson: '',
      requestedBy: 'alice',
      createdAtMs: 1,
      startedAtMs: 2,
      endedAtMs: 0,
      errorCode: '',
      errorMessage: '',
      backupId: '',
      warningCount: 0,
      dryRunReport: '',
      paramsJson: '{}',
      resultJson: '',
    });
    const { token } = await createToken(c, 'ci-bot', 'viewer');
    await c.appendAudit({ atMs: 5, who: 'alice', action: 'AddHost', target: 'gocd1', result: 'ok', detail: '' });
    await c.close();

    c = SqliteCatalog.open(file);
    expect((await c.getHost('gocd1'))?.group).toBe('ci');
    expect((await c.listHosts('ci')).map((h) => h.name)).toEqual(['gocd1']);
    const list = await c.listBackups('gocd1');
    expect(list.map((b) => b.id)).toEqual(['gocd1@20261121-211000', 'gocd1@20261121-201000']); // newest first
    expect(list.map((b) => b.restorable)).toEqual([false, true]);
    expect(list[0].manifestJson).toBe(''); // listings leave the manifest out
    expect((await c.getBackup('gocd1@20261121-201000'))?.manifestJson).toContain('boxback/manifest@1');
    expect((await c.lastRestorable('gocd1'))?.id).toBe('gocd1@20261121-201000');
    expect((await c.listJobs({ states: ['Running'] })).map((j) => j.id)).toEqual(['backup-1']);
    const t = await c.findTokenByHash(hashToken(token));
    expect(t).toMatchObject({ name: 'ci-bot', role: 'viewer' });
    expect(JSON.stringify(await c.listTokens())).not.toContain(token); // only the hash is stored
    expect(await c.listAudit()).toEqual([expect.objectContaining({ who: 'alice', action: 'AddHost', target: 'gocd1', result: 'ok' })]);
    await c.close();
  });

  it('derives Restorable: Completed with a manifest and no failed verification', async () => {
    const c = SqliteCatalog.open(file);
    await c.putBackup(backup('gocd1@20261121-221000', { manifestJson: '' }));
    expect((await c.getBackup('gocd1@20261121-221000'))?.restorable).toBe(false);
    await c.putBackup(backup('gocd1@20261121-231000', { status: 'PartiallyFailed' }));
    expect((await c.getBackup('gocd1@20261121-231000'))?.restorable).toBe(false);
    await c.updateBackup('gocd1@20261121-201000', { verifiedAtMs: 9, verifyFailed: true, errorMessage: 'db.zip: SHA-256 mismatch' });
    const b = await c.getBackup('gocd1@20261121-201000');
    expect(b).toMatchObject({ restorable: false, verifiedAtMs: 9, verifyFailed: true });
    expect(await c.lastRestorable('gocd1')).toBeUndefined();
    await c.close();
  });

  it('refuses to change or delete audit entries', async () => {
    await SqliteCatalog.open(file).close();
    const db = new Database(file);
    expect(() => db.prepare("UPDATE audit SET who = 'mallory'").run()).toThrow(/append-only/);
    expect(() => db.prepare('DELETE FROM audit').run()).toThrow(/append-only/);
    db.close();
  });

  it('refuses a catalog written by a newer controller, naming the file', async () => {
    const newer = path.join(dir, 'newer.db');
    const db = new Database(newer);
    db.pragma(`user_version = ${MIGRATIONS.length + 5}`);
    db.close();
    expect(() => SqliteCatalog.open(newer)).toThrow(/newer\.db has schema version \d+, newer than this controller knows/);
  });
});
