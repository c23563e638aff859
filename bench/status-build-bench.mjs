#!/usr/bin/env node
// The controller's status build at N hosts during a simulated fleet backup, in one process: the
// CPU and the heap allocated per answer (and per fleet-page render of it), the numbers a shared
// 2-core machine cannot blur the way it blurs the fleet bench's wall-clock p99.
//
//   node bench/status-build-bench.mjs [--hosts 1000] [--rounds 60] [--dist packages/controller/dist]
//
// Steps:
//   1. a SQLite catalog in a temp dir with N hosts, each with one Completed backup
//   2. a HostMonitor (the controller's status.ts from --dist: compare two builds of the code
//      by pointing it at another checkout's dist) whose agents answer GetInfo in memory and whose
//      job runner holds one active job per host (a fleet backup's queue: 50 Running, the rest Queued)
//   3. per round (one second of a fleet backup): the 50 running jobs report progress, 16 of them
//      end (a backup row written, their hosts' last-seen updated, the next 16 queued jobs start),
//      then one answer is built (the answer status gives while jobs run) and encoded (protobuf
//      and JSON, as a gRPC and an HTTP caller get it)
//   4. CPU ms and MB allocated per answer (median over the rounds: a full GC before each, and a
//      64 MiB young generation so that none runs within it), and the live heap after a full GC
//      (node --expose-gc: the bench re-executes itself with it)
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import { benchArgs } from './lib/cli-args.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: args } = benchArgs(import.meta.url, {
  options: {
    hosts: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '60' },
    dist: { type: 'string', default: path.join(here, '../packages/controller/dist') },
  },
});
if (typeof globalThis.gc !== 'function') {
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(
    process.execPath,
    [...process.execArgv, '--expose-gc', '--max-semi-space-size=64', fileURLToPath(import.meta.url), ...process.argv.slice(2)],
    {
      stdio: 'inherit',
    },
  );
  process.exit(r.status ?? 1);
}
const N = Number(args.hosts);
const ROUNDS = Number(args.rounds);
const dist = path.resolve(args.dist);
const { SqliteCatalog } = await import(path.join(dist, 'catalog/sqlite.js'));
const { HostMonitor } = await import(path.join(dist, 'status.js'));
const { answerJson, answerProto } = await import(path.join(dist, 'status-encoding.js'));
const { loadServices, createLogger } = await import('@boxback/common');
const serialize = loadServices().ControllerService.service.GetStatus.responseSerialize;

const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-status-build-'));
const catalog = SqliteCatalog.open(path.join(dir, 'catalog.db'));
const name = (i) => `box${String(i).padStart(4, '0')}`;
const t0 = Date.now() - 3_600_000;
for (let i = 0; i < N; i++) {
  const h = name(i);
  await catalog.addHost({
    name: h,
    address: `127.0.0.1:${10_000 + i}`,
    group: i % 3 ? 'ci' : '',
    rpoSeconds: 86_400,
    planName: 'gocd',
    product: 'gocd',
    productVersion: '24.1',
    agentVersion: '0.1.0',
    lastSeenMs: t0,
    createdAtMs: t0,
  });
}
let seq = 0;
async function putBackup(h, at) {
  const stamp = `${at}-${seq++}`;
  await catalog.putBackup({
    id: `${h}@${stamp}`,
    host: h,
    createdAtMs: at,
    sizeBytes: 123_456,
    consistency: 'quiesced',
    status: 'Completed',
    verifiedAtMs: 0,
    verifyFailed: false,
    path: `${h}/backup_${stamp}`,
    productVersion: '24.1',
    jobId: `backup-${stamp}`,
    origin: 'boxback',
    manifestJson: '{"format":"boxback/manifest@1"}',
    quiesceWindowMs: 1500,
    fileCount: 7,
    warningCount: 0,
    errorCount: 0,
    errorMessage: '',
  });
}
for (let i = 0; i < N; i++) await putBackup(name(i), t0);

const info = (h) => ({
  name: h,
  agentVersion: '0.1.0',
  hostname: h,
  addresses: [],
  planName: 'gocd',
  product: 'gocd',
  productVersion: '24.1',
  runningJobId: '',
  runningProgress: null,
  safetyCopies: [],
  quiesced: false,
  quiesceDeadlineMs: 0,
  runningJobKind: '',
  unsentResults: 0,
});
const agents = { isOpen: () => true, get: (h) => ({ getInfo: async () => info(h.name) }) };
const active = new Map();
const jobs = { activeJobs: () => [...active.values()], activeJobFor: (h) => active.get(h) };
for (let i = 0; i < N; i++) {
  const h = name(i);
  active.set(h, {
    row: {
      id: `backup-${i}`,
      kind: 'backup',
      host: h,
      state: i < 50 ? 'Running' : 'Queued',
      phase: '',
      progressJson: '',
      requestedBy: 'bench',
      createdAtMs: Date.now(),
      startedAtMs: i < 50 ? Date.now() : 0,
      endedAtMs: 0,
      errorCode: '',
      errorMessage: '',
      backupId: '',
      warningCount: 0,
      dryRunReport: '',
      paramsJson: '{}',
      resultJson: '',
    },
    progress: undefined,
    lastPersistMs: 0,
  });
}
const monitor = new HostMonitor(catalog, agents, jobs, createLogger('bench', 'error'), 86_400);
await monitor.status(true); // every host polled once, as after the monitor's first round

const cpu = [];
const alloc = [];
let next = 50;
const running = () => [...active.values()].filter((a) => a.row.state === 'Running');
for (let r = 0; r < ROUNDS; r++) {
  // one second of a fleet backup
  for (const a of running())
    a.progress = {
      jobId: a.row.id,
      phase: 'SYNC',
      state: 'running',
      bytesDone: r * 1000,
      bytesTotal: 1e6,
      filesDone: r,
      filesTotal: 100,
      message: '',
      atMs: Date.now(),
    };
  for (const a of running().slice(0, 16)) {
    active.delete(a.row.host);
    await putBackup(a.row.host, Date.now());
    const q = active.get(name(next++ % N));
    if (q && q.row.state === 'Queued') Object.assign(q.row, { state: 'Running', startedAtMs: Date.now() });
  }
  await catalog.updateHosts(
    running()
      .slice(0, 16)
      .map((a) => ({ name: a.row.host, update: { lastSeenMs: Date.now() } })),
  );
  globalThis.gc(); // the young generation (64 MiB here) then holds all that one answer allocates
  const heapBefore = v8.getHeapStatistics();
  const c0 = process.cpuUsage();
  const answer = await monitor.build(false);
  answerProto(answer, serialize);
  answerJson(answer);
  const c1 = process.cpuUsage(c0);
  const heapAfter = v8.getHeapStatistics();
  cpu.push((c1.user + c1.system) / 1000);
  alloc.push((heapAfter.used_heap_size - heapBefore.used_heap_size) / 1048576);
}
globalThis.gc();
const live = v8.getHeapStatistics().used_heap_size;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(
  JSON.stringify({
    dist,
    hosts: N,
    rounds: ROUNDS,
    cpu_ms_per_answer_p50: +median(cpu).toFixed(2),
    cpu_ms_per_answer_max: +Math.max(...cpu).toFixed(2),
    heap_growth_mb_per_answer_p50: +median(alloc).toFixed(2),
    heap_live_mb_after_gc: Math.round(live / 1048576),
  }),
);
await catalog.close();
rmSync(dir, { recursive: true, force: true });
