#!/usr/bin/env node
// What one controller->agent channel costs: N scripted agents in a child process (the fleet
// bench's --serve-agents, a certificate per agent), then in THIS process N AgentClients (the
// controller's own class, at most --max-open channels open), two rounds of one GetInfo each,
// and the RSS / heap / CPU before and after; then the channels closed again.
//   npm run build && node --expose-gc bench/channel-rss-probe.mjs [--hosts 500] [--max-open 256]
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initCerts, mapLimit } from '@boxback/common';
import { issueBenchAgentCerts } from './lib/agent-certs.mjs';
import { benchArgs } from './lib/cli-args.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { AgentClients } = await import(path.join(here, '../packages/controller/dist/agent-client.js'));
const { values: args } = benchArgs(import.meta.url, {
  options: { hosts: { type: 'string', default: '500' }, 'max-open': { type: 'string', default: '100000' } },
});
const N = Number(args.hosts);

const rssMb = () => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m[1]) / 1024;
};
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    globalThis.gc?.();
    await new Promise((r) => setTimeout(r, 300));
  }
};

const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-chan-'));
const certs = path.join(dir, 'certs');
const store = path.join(dir, 'store');
mkdirSync(store);
try {
  await initCerts(certs, { controllerName: 'controller' });
  const names = Array.from({ length: N }, (_, i) => `box${String(i + 1).padStart(4, '0')}`);
  issueBenchAgentCerts(certs, names);
  const proc = spawn(
    process.execPath,
    [path.join(here, 'fleet-bench.mjs'), '--serve-agents', JSON.stringify({ names, certsDir: certs, store })],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const agents = await new Promise((resolve) => {
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
    });
  });
  const clients = new AgentClients(
    {
      ca: path.join(certs, 'ca.crt'),
      cert: path.join(certs, 'controller.crt'),
      key: path.join(certs, 'controller.key'),
    },
    Number(args['max-open']),
  );
  await settle();
  const before = { rss: rssMb(), heap: process.memoryUsage().heapUsed / 2 ** 20, ext: process.memoryUsage().external / 2 ** 20 };
  const t = performance.now();
  const cpu0 = process.cpuUsage();
  await mapLimit(agents, 32, (a) => clients.get(a).getInfo(10_000));
  const openS = (performance.now() - t) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const cpuMsPerChannel = (cpu.user + cpu.system) / 1000 / N;
  const t2 = performance.now();
  await mapLimit(agents, 32, (a) => clients.get(a).getInfo(10_000));
  const againMs = (performance.now() - t2) / N;
  await settle();
  const openChannels = clients.openChannels;
  const open = { rss: rssMb(), heap: process.memoryUsage().heapUsed / 2 ** 20, ext: process.memoryUsage().external / 2 ** 20 };
  clients.closeAll();
  await settle();
  const closed = { rss: rssMb(), heap: process.memoryUsage().heapUsed / 2 ** 20 };
  const kb = (a, b) => Math.round(((a - b) * 1024) / N);
  process.stdout.write(
    `${JSON.stringify({
      hosts: N,
      max_open: Number(args['max-open']),
      open_channels: openChannels,
      opened: clients.counts.opened,
      open_s: Math.round(openS * 10) / 10,
      cpu_ms_per_open: Math.round(cpuMsPerChannel * 100) / 100,
      getinfo_open_channel_ms_each: Math.round(againMs * 100) / 100,
      rss_mb_before: Math.round(before.rss),
      rss_mb_open: Math.round(open.rss),
      rss_mb_closed: Math.round(closed.rss),
      rss_kb_per_channel: kb(open.rss, before.rss),
      heap_kb_per_channel: kb(open.heap, before.heap),
      external_kb_per_channel: kb(open.ext, before.ext),
    })}\n`,
  );
  proc.stdin.end();
  await new Promise((r) => proc.once('exit', r));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
