// The local backend against the BackupStore conformance suite (real temp dirs, real rsync,
// real hard links), then what only the local backend promises: the on-disk layout stays
// GoCD's (docs/design/store-layout.md), a journaled backup uses the prepared link farm, and
// the registry maps the `store:` config forms.
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, writeSync, closeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalBackupStore, compileStoreConfig, openStore, storeConfigSchema, type BackupRef } from '@boxback/common';
import { describeBackupStoreConformance } from '../helpers/store-conformance.js';

function flipByteAt(file: string, at: number): void {
  // The stored file may be a hard link shared with other backups: damage it in place, as a disk would.
  const fd = openSync(file, 'r+');
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, at);
  b[0] ^= 0xff;
  writeSync(fd, b, 0, 1, at);
  closeSync(fd);
}

describeBackupStoreConformance('local', async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'boxback-store-local-'));
  return {
    store: new LocalBackupStore(root),
    flipByte: async (ref: BackupRef, rel: string) => flipByteAt(path.join(root, ref.host, `backup_${ref.timestamp}`, rel), 100),
    cleanup: async () => rmSync(root, { recursive: true, force: true }),
  };
});

describe('local store: fetchTree checks its copy', () => {
  it('refuses a stored tree file with the same size and other bytes, naming it; a restore verify only sizes it', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'boxback-store-fetchcheck-'));
    const src = mkdtempSync(path.join(os.tmpdir(), 'boxback-store-src-'));
    try {
      execFileSync('sh', ['-c', `mkdir -p ${src}/d && echo one > ${src}/d/f && echo two > ${src}/g && ln -s g ${src}/l`]);
      const store = new LocalBackupStore(root);
      const s = await store.begin({ host: 'gocd1', startedAt: new Date('2026-04-02T00:00:00Z'), jobId: 'j', log: silent });
      const lines: string[] = [];
      await s.syncTree({ dir: 'artifacts', source: src, out: { add: (f) => void lines.push(JSON.stringify(f)) } });
      const { ref } = await s.commit(`{"format":"boxback/manifest@1","files":[\n${lines.join(',\n')}\n]}`);
      const dest = (n: string) => path.join(root, `restored-${n}`);
      await store.fetchTree(ref, 'artifacts', dest('ok'));
      flipByteAt(path.join(root, 'gocd1', `backup_${ref.timestamp}`, 'artifacts', 'd', 'f'), 1);
      const checkedOnRead = (rel: string) => rel.startsWith('artifacts/');
      expect((await store.verify(ref, { contentOnly: true, checkedOnRead })).ok).toBe(true);
      expect((await store.verify(ref, { contentOnly: true })).problems).toEqual(['artifacts/d/f: SHA-256 mismatch']);
      await expect(store.fetchTree(ref, 'artifacts', dest('bad'))).rejects.toMatchObject({
        code: 'BOXBACK_ERR_VERIFY_FAILED',
        message: expect.stringContaining('artifacts/d/f: SHA-256 mismatch'),
      });
      // A listed file gone from the stored tree: named by the check of the copy (a restore's VERIFY does not look).
      rmSync(path.join(root, 'gocd1', `backup_${ref.timestamp}`, 'artifacts', 'g'));
      await expect(store.fetchTree(ref, 'artifacts', dest('missing'))).rejects.toMatchObject({
        code: 'BOXBACK_ERR_VERIFY_FAILED',
        message: expect.stringContaining('artifacts/g: missing'),
      });
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(src, { recursive: true, force: true });
    }
  });
});

describe('local store: layout and registry', () => {
  it('keeps the GoCD layout: <host>/backup_<ts>/ with manifest.json, trees as hard links to the previous backup', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'boxback-store-layout-'));
    const src = mkdtempSync(path.join(os.tmpdir(), 'boxback-store-src-'));
    try {
      execFileSync('sh', ['-c', `mkdir -p ${src}/d && echo one > ${src}/d/f && echo two > ${src}/g`]);
      const store = new LocalBackupStore(root, { prepareFarms: true });
      const refs: BackupRef[] = [];
      for (const at of ['2026-04-01T00:00:00Z', '2026-04-01T00:00:00Z']) {
        const s = await store.begin({ host: 'gocd1', startedAt: new Date(at), jobId: 'j', log: silent });
        expect(s.dir.startsWith(path.join(root, 'gocd1', '.tmp-backup_'))).toBe(true);
        const prev = refs.at(-1);
        if (prev) store.prepareNext!('gocd1', prev, 'artifacts', 'artifacts');
        const res = await s.syncTree({
          dir: 'artifacts',
          source: src,
          previous: prev,
          changed: prev ? ['g'] : undefined,
          out: { add: () => undefined },
        });
        if (prev) expect(res.mode).toBe('journal');
        refs.push((await s.commit('{"format":"boxback/manifest@1","files":[]}')).ref);
      }
      // Two backups in the same second: the second moves on by a second.
      expect(refs.map((r) => r.timestamp)).toEqual(['20260401-000000', '20260401-000001']);
      expect(
        readdirSync(path.join(root, 'gocd1'))
          .filter((n) => !n.startsWith('.'))
          .sort(),
      ).toEqual(['backup_20260401-000000', 'backup_20260401-000001']);
      const a = lstatSync(path.join(root, 'gocd1', 'backup_20260401-000000', 'artifacts', 'd', 'f'));
      const b = lstatSync(path.join(root, 'gocd1', 'backup_20260401-000001', 'artifacts', 'd', 'f'));
      expect(b.ino).toBe(a.ino);
      expect(existsSync(path.join(root, 'gocd1', 'backup_20260401-000001', 'manifest.json'))).toBe(true);
      await store.removeInterrupted('gocd1', silent);
      expect(existsSync(path.join(root, 'gocd1', '.journal-farm'))).toBe(false);
      await store.close();
    } finally {
      rmSync(root, { recursive: true, force: true });
      rmSync(src, { recursive: true, force: true });
    }
  });

  it('maps store: forms to a backend; s3 without credentials is refused with a clear error', () => {
    const file = '/etc/boxback/agent.yaml';
    const plain = openStore(compileStoreConfig(storeConfigSchema.parse('store'), file));
    expect(plain.describe()).toEqual({ kind: 'local', location: '/etc/boxback/store' });
    const obj = openStore(compileStoreConfig(storeConfigSchema.parse({ kind: 'local', path: '/srv/s' }), file));
    expect(obj.describe()).toEqual({ kind: 'local', location: '/srv/s' });
    const s3 = compileStoreConfig(storeConfigSchema.parse({ kind: 's3', endpoint: 'http://127.0.0.1:7480', bucket: 'boxback' }), file);
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    try {
      expect(() => openStore(s3)).toThrow(/no AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
      process.env.AWS_ACCESS_KEY_ID = 'AKIAEXAMPLE';
      process.env.AWS_SECRET_ACCESS_KEY = 'example-secret';
      expect(openStore(s3).describe()).toEqual({ kind: 's3', location: 's3 http://127.0.0.1:7480/boxback/' });
    } finally {
      for (const [k, v] of [
        ['AWS_ACCESS_KEY_ID', saved.id],
        ['AWS_SECRET_ACCESS_KEY', saved.secret],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});

const silent = {
  info() {},
  warn() {},
  error() {},
  debug() {},
  child() {
    return silent;
  },
} as never;
