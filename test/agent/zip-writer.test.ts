// The archive writer on its own: what Info-ZIP unzip and Python's zipfile read back from it,
// block reuse from a previous archive (and what happens when that archive is damaged), and
// zip64 for a file larger than 4 GiB.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  ftruncateSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
  promises as fsp,
} from 'node:fs';
import os from 'node:os';
import zlib from 'node:zlib';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalBackupStore } from '@boxback/common';
import { BLOCK_SIZE, crc32Combine, readBlockIndex, writeBlockIndex } from '../../packages/agent/src/backup/zip-blocks.js';
import { sharedKeptBytes } from '../../packages/agent/src/backup/hash-thread.js';
import { readBack, writeZip } from '../../packages/agent/src/backup/zip-writer.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'boxback-zip-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const unzipTo = (zip: string, dir: string) => {
  mkdirSync(dir, { recursive: true });
  execFileSync('unzip', ['-q', zip, '-d', dir]);
};
/** Text-like bytes (compress) mixed with random ones (do not). */
function dbBytes(mib: number, seed: number): Buffer {
  const out = Buffer.alloc(mib * BLOCK_SIZE);
  for (let i = 0; i < mib; i++) {
    const block = out.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
    block.fill(`row ${seed}-${i} pipeline=build-${i % 7} status=Passed\n`);
    randomBytes(BLOCK_SIZE / 4).copy(block, BLOCK_SIZE / 2);
  }
  return out;
}

describe('zip writer', () => {
  it('combines CRC-32s of consecutive blocks into the CRC-32 of the whole', () => {
    for (const [a, b] of [
      [randomBytes(1000), randomBytes(BLOCK_SIZE)],
      [Buffer.from('x'), Buffer.from('yz')],
      [randomBytes(BLOCK_SIZE), randomBytes(3)],
    ]) {
      expect(crc32Combine(zlib.crc32(a), zlib.crc32(b), b.length)).toBe(zlib.crc32(Buffer.concat([a, b])));
    }
  });

  it('writes what unzip -t and Python zipfile accept: bytes, modes, mtimes, symlinks, empty dirs, UTF-8 names', () => {
    return (async () => {
      const src = path.join(root, 'src1');
      mkdirSync(path.join(src, 'sub', 'empty'), { recursive: true });
      const big = dbBytes(9, 1);
      writeFileSync(path.join(src, 'cruise.mv.db'), big, { mode: 0o640 });
      writeFileSync(path.join(src, 'sub', 'naïve.txt'), 'é\n');
      writeFileSync(path.join(src, 'sub', 'empty.bin'), '');
      writeFileSync(path.join(src, 'plugin.jar'), randomBytes(300_000));
      symlinkSync('../cruise.mv.db', path.join(src, 'sub', 'link'));
      utimesSync(path.join(src, 'cruise.mv.db'), 1_700_000_000, 1_700_000_000);
      const zip = path.join(root, 'one.zip');
      const res = await writeZip({ dir: src }, zip);
      expect(res.sha256).toBe(sha(readFileSync(zip)));
      expect(res.size).toBe(readFileSync(zip).length);
      expect(res.entries).toBe(7);
      expect(Object.keys(res.blocks)).toEqual(['cruise.mv.db']);
      expect(res.blocks['cruise.mv.db']).toHaveLength(9);
      expect(execFileSync('unzip', ['-tq', zip], { encoding: 'utf8' })).toMatch(/No errors detected/);
      const out = path.join(root, 'out1');
      unzipTo(zip, out);
      execFileSync('diff', ['-r', '--no-dereference', src, out]);
      const listing = (dir: string) =>
        execFileSync('find', [dir, '-mindepth', '1', '-printf', '%P %y %m %l\\n'], { encoding: 'utf8' }).split('\n').sort().join('\n');
      expect(listing(out)).toBe(listing(src));
      expect(execFileSync('stat', ['-c', '%Y', path.join(out, 'cruise.mv.db')], { encoding: 'utf8' }).trim()).toBe('1700000000');
      const py = execFileSync(
        'python3',
        [
          '-c',
          'import zipfile,sys,hashlib; z=zipfile.ZipFile(sys.argv[1]); print(z.testzip()); print(hashlib.sha256(z.read("cruise.mv.db")).hexdigest())',
          zip,
        ],
        { encoding: 'utf8' },
      ).split('\n');
      expect(py[0]).toBe('None');
      expect(py[1]).toBe(sha(big));
    })();
  });

  it('reuses the compressed blocks whose content did not change, and deflates the rest; a damaged block is deflated again', async () => {
    // The previous backup is in a local store: its archive is read through the store.
    const store = new LocalBackupStore(path.join(root, 'store'));
    const prev = { host: 'h', timestamp: '20260101-000000' };
    const dir1 = path.join(root, 'store', 'h', 'backup_20260101-000000');
    const dir2 = path.join(root, 'b2');
    const src = path.join(root, 'src2');
    mkdirSync(dir1, { recursive: true });
    mkdirSync(dir2);
    mkdirSync(src);
    const v1 = dbBytes(12, 2);
    writeFileSync(path.join(src, 'cruise.mv.db'), v1);
    const first = await writeZip({ dir: src }, path.join(dir1, 'db.zip'));
    expect(first.reusedBytes).toBe(0);
    // Its shared buffers (write, read-back and raw blocks) are kept: the next archives below
    // are written through the same memory, and must still extract to their own bytes.
    expect(sharedKeptBytes()).toBeGreaterThanOrEqual(BLOCK_SIZE);
    const idx = await writeBlockIndex(dir1, { 'db.zip': first.blocks });
    // A day later: one block rewritten in place, 2.5 MiB appended.
    const v2 = Buffer.concat([v1, dbBytes(3, 3).subarray(0, 2.5 * BLOCK_SIZE)]);
    v2.fill('changed page\n', 5 * BLOCK_SIZE, 6 * BLOCK_SIZE);
    writeFileSync(path.join(src, 'cruise.mv.db'), v2);

    expect((await readBlockIndex(store, prev, 'not-the-sha')).size).toBe(0);
    const reuse = (await readBlockIndex(store, prev, idx!.sha256)).get('db.zip');
    expect(reuse?.bySha.size).toBe(12);
    const second = await writeZip({ dir: src }, path.join(dir2, 'db.zip'), { reuse });
    expect(second.reusedBytes).toBe(11 * BLOCK_SIZE);
    unzipTo(path.join(dir2, 'db.zip'), path.join(root, 'out2'));
    expect(sha(readFileSync(path.join(root, 'out2', 'cruise.mv.db')))).toBe(sha(v2));
    // Without the addon's block I/O (reads, writes, read-backs and hashes in separate trips):
    // the same archive, byte for byte, and the same block index.
    process.env.BOXBACK_NATIVE_BLOCK_IO = 'off';
    try {
      const plain = await writeZip({ dir: src }, path.join(root, 'plain.zip'), { reuse });
      expect(plain.reusedBytes).toBe(11 * BLOCK_SIZE);
      expect(plain.blocks).toEqual(second.blocks);
      expect(plain.sha256).toBe(second.sha256);
      expect(sha(readFileSync(path.join(root, 'plain.zip')))).toBe(sha(readFileSync(path.join(dir2, 'db.zip'))));
    } finally {
      delete process.env.BOXBACK_NATIVE_BLOCK_IO;
    }

    // Bit rot in the previous archive, inside block 3: that block is deflated again, not copied.
    const b3 = first.blocks['cruise.mv.db'][3];
    const fd = openSync(path.join(dir1, 'db.zip'), 'r+');
    writeSync(fd, Buffer.from([0xff, 0x00, 0xff]), 0, 3, b3[2] + 100);
    closeSync(fd);
    const third = await writeZip({ dir: src }, path.join(root, 'third.zip'), { reuse });
    expect(third.reusedBytes).toBe(10 * BLOCK_SIZE);
    expect(execFileSync('unzip', ['-tq', path.join(root, 'third.zip')], { encoding: 'utf8' })).toMatch(/No errors detected/);
  });

  it('reads every write back: the SHA-256 is of the file as it reads back; bytes that read back different or short fail with VERIFY_FAILED', async () => {
    const src = path.join(root, 'src-rb');
    mkdirSync(src);
    writeFileSync(path.join(src, 'cruise.mv.db'), dbBytes(5, 7));
    const res = await writeZip({ dir: src }, path.join(root, 'rb.zip'));
    const onDisk = readFileSync(path.join(root, 'rb.zip'));
    expect(res.size).toBe(onDisk.length);
    expect(res.sha256).toBe(sha(onDisk));

    // The check itself, against a real file whose bytes on disk are not the ones handed to write.
    const file = path.join(root, 'rb.bin');
    const written = randomBytes(3 * 1024 * 1024 + 17);
    writeFileSync(file, written);
    const scratch = Buffer.alloc(1024 * 1024);
    const fh = await fsp.open(file, 'r+');
    try {
      await readBack(fh, written, 0, scratch, 'rb.bin'); // the same bytes: passes
      await readBack(fh, written.subarray(100), 100, scratch, 'rb.bin');
      const flipped = Buffer.from([written[2 * 1024 * 1024 + 5] ^ 1]);
      await fh.write(flipped, 0, 1, 2 * 1024 * 1024 + 5);
      await expect(readBack(fh, written, 0, scratch, 'rb.bin')).rejects.toMatchObject({
        code: 'BOXBACK_ERR_VERIFY_FAILED',
        message: expect.stringMatching(/rb\.bin reads back different bytes at offset 2097152 .*disk may be failing/),
      });
      await fh.truncate(1000);
      await expect(readBack(fh, written.subarray(0, 2000), 0, scratch, 'rb.bin')).rejects.toMatchObject({
        code: 'BOXBACK_ERR_VERIFY_FAILED',
      });
    } finally {
      await fh.close();
    }
  });

  it('zip64: a file larger than 4 GiB, and an entry after it', async () => {
    const src = path.join(root, 'src3');
    mkdirSync(src);
    // Sparse: costs no disk, and its zeros deflate to a few MiB.
    const size = 2 ** 32 + 3 * BLOCK_SIZE + 123;
    const fd = openSync(path.join(src, 'a-big.db'), 'w');
    ftruncateSync(fd, size);
    writeSync(fd, Buffer.from('end'), 0, 3, size - 3);
    closeSync(fd);
    writeFileSync(path.join(src, 'b-after.txt'), 'after the 4 GiB mark\n');
    const zip = path.join(root, 'big.zip');
    try {
      const res = await writeZip({ dir: src }, zip);
      expect(res.bytes).toBe(size + 21);
      expect(execFileSync('unzip', ['-tq', zip], { encoding: 'utf8' })).toMatch(/No errors detected/);
      const py = execFileSync(
        'python3',
        [
          '-c',
          'import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); [print(i.filename, i.file_size, i.header_offset) for i in z.infolist()]; print(z.read("b-after.txt").decode(), end="")',
          zip,
        ],
        { encoding: 'utf8' },
      ).split('\n');
      expect(py[0]).toBe(`a-big.db ${size} 0`);
      expect(py[1]).toMatch(/^b-after\.txt 21 \d+$/);
      expect(py[2]).toBe('after the 4 GiB mark');
    } finally {
      rmSync(zip, { force: true });
    }
  }, 240_000);
});
