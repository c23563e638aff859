#!/usr/bin/env node
// A stand-in for a CI server process (GoCD's go-server): it holds its "database" file open,
// appends a committed record every 20 ms, and answers GET /health on 127.0.0.1:PORT with
// 200 once its database is readable and its config file is present. SIGTERM: finish the
// current write, remove the pid file, exit 0.
//
// usage: standin-server.mjs --root DIR --db FILE --config FILE --pid FILE --port N
import { appendFileSync, closeSync, existsSync, fstatSync, fsyncSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    root: { type: 'string' },
    db: { type: 'string' },
    config: { type: 'string' },
    pid: { type: 'string' },
    port: { type: 'string' },
  },
});
const { db, config, pid } = values;
const port = Number(values.port);
writeFileSync(pid, `${process.pid}\n`);

let seq = 0;
try {
  // The last record from the file's tail (a bench's database is tens of MB: reading it all
  // as text held up every start, past the plan's start and health timeouts on a loaded box).
  const fd = openSync(db, 'r');
  const size = fstatSync(fd).size;
  const buf = Buffer.alloc(Math.min(size, 64 * 1024));
  readSync(fd, buf, 0, buf.length, size - buf.length);
  closeSync(fd);
  const tail = buf.toString('latin1').trimEnd().split('\n').pop() ?? '';
  const m = /^record (\d+)/.exec(tail);
  if (m) seq = Number(m[1]);
} catch {
  /* fresh database */
}

const timer = setInterval(() => {
  seq++;
  appendFileSync(db, `record ${seq} at ${new Date().toISOString()}\n`);
  if (seq % 10 === 0) {
    const fd = openSync(db, 'r+');
    fsyncSync(fd);
    closeSync(fd);
  }
}, 20);

const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    const ok = existsSync(db) && existsSync(config);
    res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ok, seq, pid: process.pid }));
    return;
  }
  res.writeHead(404);
  res.end();
});
server.listen(port, '127.0.0.1');

function stop() {
  clearInterval(timer);
  server.close();
  try {
    rmSync(pid, { force: true });
  } catch {
    /* already gone */
  }
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
