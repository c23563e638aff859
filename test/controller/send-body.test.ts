// A large HTTP body (the fleet page, 1000 hosts' status JSON: ~0.8 MB) is written in pieces with
// turns of the event loop between them (api/send-body.ts): the client gets every byte, with its
// Content-Length, and other work runs while it is written; a client that goes away ends it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BODY_PIECE, sendBody } from '../../packages/controller/src/api/send-body.js';

let server: http.Server | undefined;
afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

/** A server answering every request with `body` through sendBody; counts the turns of the event loop while each is written. */
async function serve(body: string | Buffer): Promise<{ url: string; turns: number[] }> {
  const turns: number[] = [];
  server = http.createServer((_req, res) => {
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
  it('arrive whole, with their length, written over many turns of the event loop', async () => {
    const body = Buffer.alloc(BODY_PIECE * 6 + 123);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
    const s = await serve(body);
    const res = await fetch(s.url);
    expect(res.headers.get('content-length')).toBe(String(body.length));
    expect(Buffer.from(await res.arrayBuffer()).equals(body)).toBe(true);
    await new Promise((r) => setTimeout(r, 20));
    // 7 pieces: at least one turn between each two (res.end of the whole body: one or two in all)
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
    const body = Buffer.alloc(BODY_PIECE * 200, 0x61); // 25 MiB: more than the socket buffers hold
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
