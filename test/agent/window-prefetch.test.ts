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
import { prefetchWindow, readBesideStop, recordWindowTimes, resetWindowTimes } from '../../packages/agent/src/backup/prefetch.js';

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

  it("reads beside the stop only when the last backup's read took at most 80% of its stop", () => {
    resetWindowTimes();
    expect(readBesideStop()).toBe(false); // the first backup of the process reads first
    recordWindowTimes(60, 120);
    expect(readBesideStop()).toBe(true);
    recordWindowTimes(100, 120);
    expect(readBesideStop()).toBe(false);
    recordWindowTimes(10, 120);
    process.env.BOXBACK_READ_BESIDE_STOP = 'off';
    try {
      expect(readBesideStop()).toBe(false);
    } finally {
      delete process.env.BOXBACK_READ_BESIDE_STOP;
      resetWindowTimes();
    }
  });
});
