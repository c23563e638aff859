/**
 * A large HTTP body written in pieces, a turn of the event loop between them.
 *
 * The dashboard's server is HTTPS: a response's bytes are encrypted and handed to the kernel
 * inside the `write` call, on the event loop. The fleet page and the status JSON at 1000 hosts
 * are ~0.8 MB each, and `res.end(body)` of one held the event loop for 4-10 ms (an HTTPS server
 * on this machine, load 7: p50 4.0, max 9.6 ms; in a CPU profile of a fleet backup it was the
 * largest item after idle, 1.6 of 11 busy seconds, the dashboard asked ~9 times a second): a
 * status call arriving meanwhile waited for it (docs/design/fleet-scale.md). Written 64 KiB at a
 * time (~0.1-0.3 ms each), back to back for WRITE_SLICE_MS, then a turn of the event loop
 * (setImmediate: the poll phase reads the requests that arrived), and the socket's back-pressure
 * respected ('drain'). On a quiet core a page goes out in one or two turns; on a loaded one the
 * event loop is still held at most ~2 ms plus a piece at a time. A turn per piece made a page
 * wait for 7-13 turns: with each piece in TimeSlice's queue of slices (concurrency.ts sliceTurn,
 * behind the status build's and the rows' 8 ms slices) the page's p99 was 335 and 821 ms in two
 * fleet runs at a load of 6-12, with a plain turn per 128 KiB piece 311 ms at a load of 4-5,
 * against 107-302 ms in the runs of the code before alternated with them.
 * The body's length is sent in Content-Length as `res.end(body)` sent it.
 */
import type http from 'node:http';
import { nextTurn } from '../concurrency.js';

/** Bodies up to this size are written at once; larger ones in pieces of this size. */
export const BODY_PIECE = 64 * 1024;
/** Pieces are written back to back for this long, then the event loop gets a turn. */
export const WRITE_SLICE_MS = 2;

/** Write the head and `body` and end the response; a large body in pieces over several turns. */
export function sendBody(res: http.ServerResponse, status: number, headers: http.OutgoingHttpHeaders, body: string | Buffer): void {
  // a string's UTF-8 is at most 3 bytes per UTF-16 unit
  if (body.length <= (typeof body === 'string' ? BODY_PIECE / 3 : BODY_PIECE)) {
    res.writeHead(status, headers);
    res.end(body);
    return;
  }
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  res.writeHead(status, { ...headers, 'content-length': bytes.length });
  void writePieces(res, bytes);
}

async function writePieces(res: http.ServerResponse, bytes: Buffer): Promise<void> {
  let turnAt = performance.now();
  for (let at = 0; at < bytes.length; at += BODY_PIECE) {
    if (res.destroyed) return; // the caller went away: nothing more to send
    const end = Math.min(bytes.length, at + BODY_PIECE);
    if (end === bytes.length) {
      res.end(bytes.subarray(at, end));
      return;
    }
    // a write the kernel took at once ends with 'drain' in a microtask, not a later turn
    if (!res.write(bytes.subarray(at, end)) && res.writableNeedDrain) await drained(res);
    if (performance.now() - turnAt >= WRITE_SLICE_MS) {
      await nextTurn();
      turnAt = performance.now();
    }
  }
}

function drained(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}
