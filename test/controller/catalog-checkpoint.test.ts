// The SQLite catalog checkpoints its WAL in the background (catalog/sqlite-checkpoint.ts): a
// commit never copies the WAL into the database file on the event loop, yet within a second or
// so the database file alone holds every committed row, and the WAL starts again from its
// beginning instead of growing with every write.
import { copyFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteCatalog } from '../../packages/controller/src/catalog/sqlite.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-checkpoint-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MANIFEST = JSON.stringify({ format: 'boxback/manifest@1', pad: 'm'.repeat(20_000) });

async function writeBackups(c: SqliteCatalog, from: number, n: number): Promise<void> {
  const at = Date.now();
  await Promise.all(
    Array.from({ length: n }, (_, k) => {
      const i = from + k;
      return c.putBackup({
        id: `cp@${i}`,
        host: 'cp',
        createdAtMs: at + i,
        sizeBytes: 1,
        consistency: 'quiesced',
        status: 'Completed',
        verifiedAtMs: 0,
        verifyFailed: false,
        path: `cp/backup_${i}`,
        productVersion: '1',
        jobId: `backup-${i}`,
        origin: 'boxback',
        manifestJson: MANIFEST,
        quiesceWindowMs: 1,
        fileCount: 1,
        warningCount: 0,
        errorCount: 0,
        errorMessage: '',
      });
    }),
  );
}

/** Rows in a copy of the database file alone (no -wal beside it): what a checkpoint put there. */
function rowsInFileAlone(file: string, name: string): number {
  const copy = path.join(dir, `${name}.db`);
  copyFileSync(file, copy);
  const db = new Database(copy, { readonly: true });
  try {
    const table = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'backups'").get();
    return table ? (db.prepare('SELECT count(*) AS n FROM backups').get() as { n: number }).n : 0;
  } finally {
    db.close();
  }
}

async function checkpointed(c: SqliteCatalog, done: number): Promise<void> {
  for (let i = 0; i < 200 && c.checkpointer!.counts.done < done; i++) await new Promise((r) => setTimeout(r, 50));
  expect(c.checkpointer!.counts).toEqual({ done, failed: 0, onLoop: 0 });
}

describe('WAL checkpoints off the event loop', () => {
  it('leaves the commits in the WAL, then puts every row in the database file and starts the WAL again', async () => {
    const file = path.join(dir, 'catalog.db');
    const c = SqliteCatalog.open(file);
    await c.addHost({
      name: 'cp',
      address: '127.0.0.1:1',
      group: '',
      rpoSeconds: 0,
      planName: '',
      product: '',
      productVersion: '',
      agentVersion: '',
      lastSeenMs: 0,
      createdAtMs: 0,
    });
    await writeBackups(c, 0, 300); // ~6 MB: SQLite's own checkpoint would have run inside a commit past 4 MB
    const wal = statSync(`${file}-wal`).size;
    expect(wal).toBeGreaterThan(6_000_000);
    expect(rowsInFileAlone(file, 'before')).toBe(0);
    await checkpointed(c, 1);
    expect(rowsInFileAlone(file, 'after')).toBe(300);
    // the next writes start the WAL again from its beginning: it does not grow past the first ~6 MB
    await writeBackups(c, 300, 300);
    await checkpointed(c, 2);
    expect(rowsInFileAlone(file, 'again')).toBe(600);
    expect(statSync(`${file}-wal`).size).toBeLessThanOrEqual(wal + 200_000);
    await c.close();
    const reopened = SqliteCatalog.open(file);
    expect((await reopened.listBackups('cp')).length).toBe(600);
    await reopened.close();
  });
});
