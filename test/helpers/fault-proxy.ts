// A loopback HTTP proxy in front of radosgw for fault tests: it forwards every request as is
// (S3 signatures stay valid: the Host header is kept) unless told to fail the next ones:
//   failNext(n, 500|503)  answer n requests with that status and an S3-style XML error body
//   cutNext(n)            destroy the client connection of n requests after reading their headers
//   cutAll(true)          cut every request until cutAll(false) (a network that is down)
// counts() tells how many requests were seen, failed and cut, so a test can assert the retries.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FaultProxy {
  endpoint: string;
  failNext(n: number, status?: number): void;
  cutNext(n: number): void;
  cutAll(on: boolean): void;
  counts(): { requests: number; failed: number; cut: number };
  close(): Promise<void>;
}

export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const to = new URL(target);
  let fail = 0;
  let failStatus = 503;
  let cut = 0;
  let cutEvery = false;
  const seen = { requests: 0, failed: 0, cut: 0 };
  const server = http.createServer((req, res) => {
    seen.requests++;
    if (cutEvery || cut > 0) {
      if (!cutEvery) cut--;
      seen.cut++;
      req.socket.destroy();
      return;
    }
    if (fail > 0) {
      fail--;
      seen.failed++;
      req.resume();
      const code = failStatus === 503 ? 'SlowDown' : 'InternalError';
      res.writeHead(failStatus, { 'content-type': 'application/xml' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected by the fault proxy</Message></Error>`);
      return;
    }
    const up = http.request(
      { host: to.hostname, port: Number(to.port), method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => req.socket.destroy());
    req.pipe(up);
  });
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    failNext(n, status = 503) {
      fail = n;
      failStatus = status;
    },
    cutNext(n) {
      cut = n;
    },
    cutAll(on) {
      cutEvery = on;
    },
    counts: () => ({ ...seen }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
