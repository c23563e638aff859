// A large HTTP body (the fleet page, 1000 hosts' status JSON: ~0.8 MB) is written in pieces with
// turns of the event loop between them (api/send-body.ts): the client gets every byte, with its
// Content-Length, and other work runs while it is written; a client that goes away ends it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BODY_PIECE, sendBody, WRITE_SLICE_MS } from '../../packages/controller/src/api/send-body.js';

let server: http.Server | undefined;
afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

/** A server answering every request with `body` through sendBody; counts the turns of the event loop while each is written. */
async function serve(body: string | Buffer, writeMs = 0): Promise<{ url: string; turns: number[] }> {
  const turns: number[] = [];
  server = http.createServer((_req, res) => {
    if (writeMs) {
      // each write as slow as a loaded core's TLS encryption of a piece
      const write = res.write.bind(res) as (c: Buffer) => boolean;
      (res as unknown as { write: (c: Buffer) => boolean }).write = (c) => {
        const until = performance.now() + writeMs;
        while (performance.now() < until);
        return write(c);
      };
    }
    let n = 0;
    let done = false;
    const tick = () => {
      if (done) return;
      n++;
      setImmediate(tick);
    };
    setImmediate(tick);
    res.on('close', () => {
      done = true;
      turns.push(n);
    });
    sendBody(res, 200, { 'content-type': 'text/html; charset=utf-8' }, body);
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server!.address() as AddressInfo).port}/`, turns };
}

describe('large response bodies', () => {
  it('arrive whole, with their length, the event loop given a turn every WRITE_SLICE_MS of writing', async () => {
    const body = Buffer.alloc(BODY_PIECE * 12 + 123);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
    const s = await serve(body, WRITE_SLICE_MS / 2);
    const res = await fetch(s.url);
    expect(res.headers.get('content-length')).toBe(String(body.length));
    expect(Buffer.from(await res.arrayBuffer()).equals(body)).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    // 12 pieces written at WRITE_SLICE_MS / 2 each: a turn after every second piece at the
    // latest (res.end of the whole body: one or two turns in all)
    expect(s.turns[0]).toBeGreaterThanOrEqual(6);
  });

  it('send a string as its UTF-8 bytes, and small bodies at once', async () => {
    const text = `<p>${'é東🚀'.repeat(30_000)}</p>`;
    const s = await serve(text);
    const res = await fetch(s.url);
    expect(res.headers.get('content-length')).toBe(String(Buffer.byteLength(text)));
    expect(await res.text()).toBe(text);
    const small = await serve('<p>ok</p>');
    const r2 = await fetch(small.url);
    expect(await r2.text()).toBe('<p>ok</p>');
  });

  it('stop when the client goes away mid-body', async () => {
    const body = Buffer.alloc(BODY_PIECE * 400, 0x61); // 25 MiB: more than the socket buffers hold
    const s = await serve(body);
    const got = await new Promise<number>((resolve) => {
      const req = http.get(s.url, (res) => {
        let n = 0;
        res.on('data', (c: Buffer) => {
          n += c.length;
          if (n > BODY_PIECE * 4) req.destroy();
        });
        res.on('close', () => resolve(n));
      });
      req.on('error', () => undefined);
    });
    expect(got).toBeLessThan(body.length);
    await new Promise((r) => setTimeout(r, 100));
    expect(s.turns).toHaveLength(1); // the response closed; no write after it threw
  });
});
