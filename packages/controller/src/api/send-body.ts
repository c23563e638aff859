/**
 * A large HTTP body written in pieces, a turn of the event loop between them.
 *
 * The dashboard's server is HTTPS: a response's bytes are encrypted and handed to the kernel
 * inside the `write` call, on the event loop. The fleet page and the status JSON at 1000 hosts
 * are ~0.8 MB each, and `res.end(body)` of one held the event loop for 4-10 ms (an HTTPS server
 * on this machine, load 7: p50 4.0, max 9.6 ms; in a CPU profile of a fleet backup it was the
 * largest item after idle, 1.6 of 11 busy seconds, the dashboard asked ~9 times a second): a
 * status call arriving meanwhile waited for it (docs/design/fleet-scale.md). Written 128 KiB at a
 * time, a piece per turn (setImmediate: the poll phase between two pieces reads the requests that
 * arrived), each write holds it ~0.2-0.6 ms, and the socket's back-pressure is respected
 * ('drain'). Not in TimeSlice's queue of slices (concurrency.ts sliceTurn): there each of a
 * page's 13 pieces of 64 KiB could wait behind the status build's and the rows' 8 ms slices, and
 * in the two fleet runs of that version (load 6-12) the page's p99 was 335 and 821 ms, against
 * 107-302 ms in the runs of the code before alternated with them.
 * The body's length is sent in Content-Length as `res.end(body)` sent it.
 */
import type http from 'node:http';
import { nextTurn } from '../concurrency.js';

/** Bodies up to this size are written at once; larger ones in pieces of this size. */
export const BODY_PIECE = 128 * 1024;

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
  for (let at = 0; at < bytes.length; at += BODY_PIECE) {
    if (res.destroyed) return; // the caller went away: nothing more to send
    const end = Math.min(bytes.length, at + BODY_PIECE);
    if (end === bytes.length) {
      res.end(bytes.subarray(at, end));
      return;
    }
    // a write the kernel took at once ends with 'drain' in a microtask, not a later turn: the
    // turn is taken either way (else the whole body went out in one turn, piece after piece)
    if (!res.write(bytes.subarray(at, end)) && res.writableNeedDrain) await drained(res);
    await nextTurn();
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
