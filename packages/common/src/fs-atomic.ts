/**
 * Durable writes: write to a temporary name beside the target, fsync the file,
 * rename over the target, fsync the directory. A reader sees the old file or the
 * new one, never half of one.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function fsyncFile(file: string): Promise<void> {
  const fh = await fsp.open(file, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

const PIECE_BUFFER = 256 * 1024;

/** `data` may be pieces (an iterable of strings) so that a large file is never one string in memory. */
export async function writeFileAtomic(
  file: string,
  data: string | Uint8Array | Iterable<string> | AsyncIterable<string>,
  mode = 0o644,
): Promise<number> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await fsp.open(tmp, 'wx', mode);
  let bytes = 0;
  try {
    if (typeof data === 'string' || data instanceof Uint8Array) {
      await fh.writeFile(data);
      bytes = typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
    } else {
      // Pieces are copied into one reused buffer and written when it is full.
      const buf = Buffer.allocUnsafe(PIECE_BUFFER);
      let used = 0;
      const flush = async (b: Buffer, n: number) => {
        for (let off = 0; off < n;) off += (await fh.write(b, off, n - off)).bytesWritten;
        bytes += n;
      };
      for await (const piece of data) {
        const len = Buffer.byteLength(piece);
        if (used + len > buf.length) {
          await flush(buf, used);
          used = 0;
        }
        if (len > buf.length) {
          const big = Buffer.from(piece, 'utf8');
          await flush(big, big.length);
        } else used += buf.write(piece, used, 'utf8');
      }
      await flush(buf, used);
    }
    await fh.chmod(mode);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  try {
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
  return bytes;
}

/** True when `child` is `parent` or lies inside it (both resolved, no symlink resolution). */
export function isInside(parent: string, child: string): boolean {
  const rel = path.relative(path.resolve(parent), path.resolve(child));
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}
