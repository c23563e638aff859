// Before the window (backup/prefetch.ts): the window's datasets are read once so that the copy
// taken while the services are stopped finds them in the page cache. What an operator would
// check: a database file that had left the page cache is resident again afterwards (util-linux
// `fincore`), every file of a directory and a file dataset is read, datasets larger than the
// budget are left alone, and a cancelled job stops reading.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { besideStopMs, prefetchWindow, recordStopTime, resetStopTime } from '../../packages/agent/src/backup/prefetch.js';

let dir: string;
const MiB = 1 << 20;

/** Bytes of `file` in the page cache, by fincore. */
const resident = (file: string) =>
  Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' }).trim());
/** Drop `file`'s pages from the page cache (POSIX_FADV_DONTNEED through dd's nocache flag). */
const evict = (file: string) => execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'boxback-prefetch-'));
  mkdirSync(path.join(dir, 'config', 'sub'), { recursive: true });
  writeFileSync(path.join(dir, 'config', 'a.xml'), '<a/>');
  writeFileSync(path.join(dir, 'config', 'sub', 'b.bin'), randomBytes(3 * MiB + 17));
  mkdirSync(path.join(dir, 'db'));
  writeFileSync(path.join(dir, 'db', 'cruise.mv.db'), randomBytes(24 * MiB));
  execFileSync('sync');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('prefetchWindow', () => {
  it("reads every file of the window's datasets, and a file that had left the page cache is resident again", async () => {
    const db = path.join(dir, 'db', 'cruise.mv.db');
    evict(db);
    expect(resident(db)).toBeLessThan(4 * MiB);
    const r = await prefetchWindow([{ path: path.join(dir, 'config') }, { files: [db] }], new AbortController().signal);
    expect(r).toEqual({ files: 3, bytes: 4 + 3 * MiB + 17 + 24 * MiB, skipped: false });
    expect(resident(db)).toBe(24 * MiB);
  });

  it('leaves datasets larger than its budget alone', async () => {
    const db = path.join(dir, 'db', 'cruise.mv.db');
    evict(db);
    const r = await prefetchWindow([{ files: [db] }], new AbortController().signal, 8 * MiB);
    expect(r).toEqual({ files: 0, bytes: 0, skipped: true });
    expect(resident(db)).toBeLessThan(4 * MiB);
  });

  it('a missing dataset is not its error (the window copy reports it) and the next is still read; a cancelled job stops it', async () => {
    const gone = await prefetchWindow([{ path: path.join(dir, 'nope') }, { path: path.join(dir, 'config') }], new AbortController().signal);
    expect(gone).toEqual({ files: 2, bytes: 4 + 3 * MiB + 17, skipped: false });
    const ac = new AbortController();
    ac.abort(new Error('cancelled by the operator'));
    await expect(prefetchWindow([{ path: path.join(dir, 'config') }], ac.signal)).rejects.toThrow('cancelled by the operator');
  });

  it("lets the stop start once the rest of the read fits in 80% of the last stop, at the read's own rate", async () => {
    resetStopTime();
    expect(besideStopMs()).toBe(0); // the first backup of the process reads first
    recordStopTime(120);
    expect(besideStopMs()).toBe(96);
    process.env.BOXBACK_READ_BESIDE_STOP = 'off';
    expect(besideStopMs()).toBe(0);
    delete process.env.BOXBACK_READ_BESIDE_STOP;
    resetStopTime();
    const db = path.join(dir, 'db', 'cruise.mv.db');
    // Little time to spare: the stop waits for the whole read (ready once, when all of it is resident).
    evict(db);
    const at: number[] = [];
    const r = await prefetchWindow([{ files: [db] }], new AbortController().signal, undefined, {
      ms: 0.5, // not 0: decided once, after the first quarter (6 MiB), and not looked at again
      onReady: () => at.push(resident(db)),
    });
    expect(r.bytes).toBe(24 * MiB);
    expect(at).toEqual([24 * MiB]);
    // Ample time: the stop may start after the first quarter, long before the read ends.
    evict(db);
    at.length = 0;
    await prefetchWindow([{ files: [db] }], new AbortController().signal, undefined, { ms: 60_000, onReady: () => at.push(resident(db)) });
    expect(at.length).toBe(1);
    expect(at[0]).toBeLessThan(24 * MiB);
    expect(resident(db)).toBe(24 * MiB);
  });
});
