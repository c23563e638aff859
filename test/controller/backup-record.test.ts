// A backup whose manifest is larger than the agent sends back (JobResult.manifestJson empty
// above MANIFEST_SEND_LIMIT) is recorded from <store>/<backupPath>/manifest.json, exactly as
// if it had been sent; and the agent's streamed manifest.json and its compact reading of the
// previous one agree with manifestToJson.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalBackupStore, backupId, backupRelPath, emptyResult, type JobResult, type ManifestFile } from '@boxback/common';
import { MANIFEST_SEND_LIMIT } from '../../packages/agent/src/backup/backup.js';
import { buildManifest, manifestChunks, manifestToJson, readPrevIndex } from '@boxback/common';
import { publish } from '@boxback/common';
import { rowFromResult, rowFromResultInStore } from '../../packages/controller/src/backup-record.js';

let dir: string;
let store: string;
const host = 'bigbox';
const ts = '20260101-120000';

function bigManifest(n: number) {
  const files: ManifestFile[] = [{ path: 'artifacts', type: 'dir', size: 0, mode: 0o755, uid: 0, gid: 0, mtimeMs: 1 }];
  for (let i = 0; i < n; i++) {
    files.push({
      path: `artifacts/pipelines/p${i % 7}/${i}/console.log`,
      type: 'file',
      size: 100 + i,
      mode: 0o644,
      uid: 0,
      gid: 0,
      mtimeMs: 1_700_000_000_000 + i,
      sha256: i.toString(16).padStart(64, '0'),
      ino: 1000 + i,
    });
  }
  files.push({ path: 'artifacts/old.log', type: 'file', size: 5, mode: 0o644, uid: 0, gid: 0, mtimeMs: 7, sha256: 'f'.repeat(64) });
  return buildManifest({
    id: backupId(host, ts),
    host,
    timestamp: ts,
    createdAt: '2026-01-01T12:00:00.000Z',
    completedAt: '2026-01-01T12:05:00.000Z',
    origin: 'boxback',
    plan: { name: 'gocd', product: 'gocd' },
    product: { name: 'gocd', version: '24.1.0' },
    source: { hostname: host, addresses: ['10.0.0.9'] },
    consistency: 'quiesced',
    quiesce: { mode: 'stop', windowMs: 1234, copyMs: 1000 },
    phases: [
      {
        name: 'QUIESCE',
        state: 'done',
        startedAt: '2026-01-01T12:00:00.000Z',
        endedAt: '2026-01-01T12:00:01.234Z',
        durationMs: 1234,
        bytes: 0,
        files: 0,
      },
    ],
    datasets: [],
    trees: [
      {
        name: 'artifacts',
        dir: 'artifacts',
        source: '/var/lib/go-server/artifacts',
        files: n + 1,
        bytes: 0,
        linkedFiles: 0,
        syncMode: 'full',
        syncReason: 'first backup',
      },
    ],
    files,
    warnings: ['one warning'],
  });
}

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-record-'));
  store = path.join(dir, 'store');
  mkdirSync(store, { recursive: true });
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a manifest too large to send', () => {
  it('is written in pieces, byte-equal to manifestToJson, and read back compactly', async () => {
    const m = bigManifest(12_000);
    const tmp = path.join(store, host, `.tmp-backup_${ts}`);
    mkdirSync(tmp, { recursive: true });
    const out = await publish(tmp, ts, manifestChunks(m));
    const text = readFileSync(path.join(out.dir, 'manifest.json'), 'utf8');
    expect(text).toBe(manifestToJson(m));
    expect(out.manifestBytes).toBe(Buffer.byteLength(text));
    expect(out.manifestBytes).toBeGreaterThan(MANIFEST_SEND_LIMIT);
    const index = await readPrevIndex(out.dir);
    expect(index.byIno.size).toBe(12_000);
    expect(index.byIno.get(1000 + 42)).toEqual({ size: 142, mtimeMs: 1_700_000_000_042, sha256: (42).toString(16).padStart(64, '0') });
    expect([...index.byPath.keys()]).toEqual(['artifacts/old.log']);
  });

  it('is recorded from the store exactly as if the agent had sent it', async () => {
    const rel = backupRelPath(host, ts);
    const json = readFileSync(path.join(store, rel, 'manifest.json'), 'utf8');
    const result: JobResult = {
      ...emptyResult('job-1'),
      status: 'Completed',
      backupId: backupId(host, ts),
      backupPath: rel,
      sizeBytes: 123,
      manifestJson: '',
    };
    const fromStore = await rowFromResultInStore(new LocalBackupStore(store), host, 'job-1', result);
    const sent = rowFromResult(host, 'job-1', { ...result, manifestJson: json });
    expect(fromStore).toEqual(sent);
    expect(fromStore!.manifestJson).toBe(json);
    expect(fromStore!.fileCount).toBe(12_001);
    expect(fromStore!.consistency).toBe('quiesced');
    expect(fromStore!.quiesceWindowMs).toBe(1234);
    expect(fromStore!.productVersion).toBe('24.1.0');
    expect(fromStore!.status).toBe('Completed');
  });

  it('a missing manifest, a failed job or a path outside the store leaves the row without one', async () => {
    const base: JobResult = {
      ...emptyResult('job-2'),
      status: 'Completed',
      backupId: backupId(host, '20260101-130000'),
      backupPath: backupRelPath(host, '20260101-130000'),
      manifestJson: '',
    };
    const missing = await rowFromResultInStore(new LocalBackupStore(store), host, 'job-2', base);
    expect(missing).toEqual(rowFromResult(host, 'job-2', base));
    expect(missing!.manifestJson).toBe('');
    const failed = await rowFromResultInStore(new LocalBackupStore(store), host, 'job-2', {
      ...base,
      status: 'Failed',
      backupPath: backupRelPath(host, ts),
    });
    expect(failed!.manifestJson).toBe('');
    const outside = await rowFromResultInStore(new LocalBackupStore(store), host, 'job-2', {
      ...base,
      backupPath: `../${backupRelPath(host, ts)}`,
    });
    expect(outside!.manifestJson).toBe('');
  });
});
