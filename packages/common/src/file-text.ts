/**
 * A file's text as a stream of strings, read through ONE reused buffer (manifests and their
 * part files, read a line at a time with readline).
 *
 * `fs.createReadStream` allocates a fresh buffer for every read: a 120k-entry manifest (~30 MB)
 * read in 256 KiB chunks leaves ~120 dead ArrayBuffers, and V8 collects dead ArrayBuffers only
 * once external memory has grown by ~64 MB since its last full GC. A backup reads the previous
 * manifest twice and its own part files once; the agent's ArrayBuffers peaked at 75-80 MB in an
 * incremental at the default file counts (docs/design/agent-memory.md). Here each chunk is
 * decoded at once (StringDecoder keeps a split UTF-8 sequence) and the buffer read into again.
 *
 * Chunks are 64 KiB: a chunk's text is one V8 string, and a string over 128 KiB goes straight
 * to V8's large-object space (old generation), where it stays until a major GC even though it
 * dies a moment later (readline's lines are slices of it). Two 33 MB manifests read at once in
 * 256 KiB chunks grew the JS heap by 23.6 MB of such strings; in 64 KiB chunks by 4.3 MB, and
 * with less CPU (0.62 s against 0.85 s), the chunks dying in the young generation
 * (docs/design/agent-memory.md).
 */
import { closeSync, openSync, promises as fsp, readSync } from 'node:fs';
import { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';

const CHUNK = 64 * 1024;

/** The text of open file `fh` from its current position; the stream closes `fh` at its end or when destroyed. */
export function fileTextStream(fh: fsp.FileHandle, chunk = CHUNK): Readable {
  const buf = Buffer.allocUnsafeSlow(chunk);
  const dec = new StringDecoder('utf8');
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= fh.close().catch(() => undefined));
  return new Readable({
    encoding: 'utf8',
    highWaterMark: chunk,
    read() {
      void (async () => {
        for (;;) {
          const { bytesRead } = await fh.read(buf, 0, buf.length, null);
          if (bytesRead === 0) {
            const rest = dec.end();
            if (rest) this.push(rest, 'utf8');
            await close();
            this.push(null);
            return;
          }
          const text = dec.write(buf.subarray(0, bytesRead));
          // Only part of a UTF-8 sequence so far: read on (a push of '' would end nothing).
          if (text) {
            this.push(text, 'utf8');
            return;
          }
        }
      })().catch((err: unknown) => this.destroy(err as Error));
    },
    destroy(err, cb) {
      void close().then(() => cb(err));
    },
  });
}

/** The text of `file` (open errors thrown here, as fsp.open throws them). */
export async function openFileText(file: string, chunk = CHUNK): Promise<Readable> {
  return fileTextStream(await fsp.open(file, 'r'), chunk);
}

/**
 * The lines of `file` (split at '\n', without it), read on the JS thread through one reused
 * buffer. For a file the caller knows is in the page cache (the previous manifest, read ahead
 * while a tree syncs): each read is microseconds here, where a read through libuv's pool waits
 * for a free thread behind an archive's 1 MiB jobs (a 1.7 MB manifest is ~27 such trips).
 * The file is closed when the iteration ends or is left.
 */
export function* fileLinesSync(file: string, chunk = CHUNK): Generator<string, void, undefined> {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafeSlow(chunk);
    const dec = new StringDecoder('utf8');
    let rest = '';
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      const text = n === 0 ? dec.end() : dec.write(buf.subarray(0, n));
      let from = 0;
      for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', from)) {
        yield rest + text.slice(from, nl);
        rest = '';
        from = nl + 1;
      }
      rest += text.slice(from);
      if (n === 0) break;
    }
    if (rest) yield rest;
  } finally {
    closeSync(fd);
  }
}
