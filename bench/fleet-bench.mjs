#!/usr/bin/env node
// boxback fleet bench: a real controller process against N lightweight agents on loopback.
//
//   npm run bench:fleet -- [--hosts 200] [--concurrency 50] [--backup-ms 500] [--status-calls 300] [--json] [--keep]
//                          [--cpu-prof DIR [--prof-phase fleet-backup|after]]  (the controller's CPU profile of
//                          the fleet backup, step 4, or of the calls after it, step 5)
//
// Steps, in order:
//   1. a temp dir with a fleet CA, the controller's certificate, and one certificate per agent
//      naming that agent (bench/lib/agent-certs.mjs: one shared key, natively signed), so the
//      controller checks per connection what it checks in production
//   2. N gRPC servers in ONE child process (this file with --serve-agents, so that the agents'
//      work never delays the measuring client), each a scripted AgentService over mutual TLS on
//      127.0.0.1:0: GetInfo answers, Backup streams progress, holds `--backup-ms`, writes a
//      small complete backup (manifest.json with SHA-256) into the shared store and returns
//      its result (the shape the real agent returns); that process runs 10 nice levels below
//      the rest ($BB_FLEET_AGENTS_NICE): it stands for 1000 other machines, not for load on this one
//   3. the real controller (packages/controller/dist/main.js) as a child process with fleet
//      concurrency `--concurrency` and its dashboard on; an admin token from its `token create`;
//      a dashboard session (POST /login); N AddHost calls
//   4. fleet backup: CreateBackup --all, every job followed with WatchJob until its result
//      (per-host progress: each job must stream progress before its result; these watchers
//      stand for the operator's CLI on another machine and run 10 nice levels below the
//      controller and the timing clients, $BB_FLEET_WATCHERS_NICE); meanwhile a third
//      and fourth child process (this file with --sample: their own event loops, so the N watch
//      streams here never delay a timing, nor a page read a status timing) time, every 50 ms,
//      GetStatus over gRPC (one: each call also split into the answer's bytes received and
//      their decoding by the client), and the fleet page's HTML (GET / with the session) and its
//      JSON (POST /api/v1/GetStatus) (the other); every page must list every host; afterwards no
//      job may be left Queued or Running; the agents' and timing clients' CPU seconds are reported
//   5. GetStatus sampled `--status-calls` times back to back (idle, N backups in the catalog),
//      then the fleet page 20 times: the controller's CPU per call and per page (CPU seconds
//      from /proc, per phase too: comparable on a loaded machine, unlike wall-clock timings)
//   6. the controller's peak RSS (VmHWM of /proc/<pid>/status), then SIGTERM and clean-up
//   7. a table, or with --json one object (`fleet_hosts`, `fleet_backup_s`, `status_p99_ms`
//      (during the backup), `status_idle_p99_ms`, `dashboard_p99_ms` (fleet page HTML during the
//      backup), `dashboard_json_p99_ms`, `controller_peak_rss_mb`, `jobs_left_running`,
//      `load_avg_1m` (at start and end: the machine is shared), `status_slowest_split` (the five
//      slowest status calls: when, ms, bytes in, decode, and the timing client's own wait for a
//      CPU (/proc/thread-self/schedstat) and GC during each), `status_p99_less_client_ms` (the
//      busy p99 of each call less that wait and GC: how much of the tail the measuring process
//      was, on a loaded machine), `status_end_wait_p50_ms` / `_p99_ms` (from the answer decoded to the
//      call's end: the wait for the status trailers the controller sends after the answer's write
//      completes, and this client's own turn), ...)
//   The timing clients' `timing_clients_eld_ms` (monitorEventLoopDelay, resolution 10 ms)
//   includes the 10 ms interval itself: an idle process reads p50 ~10 ms.
import { spawn, spawnSync } from 'node:child_process';
import https from 'node:https';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { emptyProgress, emptyResult, initCerts, loadServices, mapLimit, serverCredentials, tokenClientCredentials } from '@boxback/common';
import { writeFakeBackup } from '../test/helpers/fake-backup.mjs';
import { issueBenchAgentCerts } from './lib/agent-certs.mjs';
import { benchArgs } from './lib/cli-args.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
const CONTROLLER_MAIN = path.join(repo, 'packages/controller/dist/main.js');
const { ControllerClient } = await import(path.join(repo, 'packages/controller/dist/cli/connection.js'));
const { CONTROLLER_NODE_FLAGS } = await import(path.join(repo, 'packages/controller/dist/node-flags.js'));

const { values: args } = benchArgs(import.meta.url, {
  options: {
    hosts: { type: 'string', default: '200' },
    'backup-ms': { type: 'string', default: '500' },
    concurrency: { type: 'string', default: '50' },
    'status-calls': { type: 'string', default: '300' },
    // internal: this process is the agents' process (see step 2), or the timing client (step 4)
    'serve-agents': { type: 'string' },
    sample: { type: 'string' },
    json: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    // a V8 CPU profile of the controller during the fleet backup, written to DIR/fleet-backup.cpuprofile
    'cpu-prof': { type: 'string' },
    // the phase --cpu-prof profiles: fleet-backup (step 4) or after (step 5, the calls back to back)
    'prof-phase': { type: 'string', default: 'fleet-backup' },
  },
});
const N = Number(args.hosts);
const BACKUP_MS = Number(args['backup-ms']);
const STATUS_CALLS = Number(args['status-calls']);
const CONCURRENCY = Number(args.concurrency);
/** Fleet pages (HTML, then JSON) asked at the end to measure the controller's CPU per page. */
const PAGE_CALLS = 20;
/** The agents' process runs this many nice levels below the bench (see main). */
const AGENTS_NICE_DELTA = Number(process.env.BB_FLEET_AGENTS_NICE ?? 10);
/**
 * This process's main thread (the N WatchJob streams, as `boxback backup create --all` follows
 * them from an operator's machine) runs this many nice levels below the controller and the
 * timing clients during the fleet backup, like the agents' process (see main).
 */
const WATCHERS_NICE_DELTA = Number(process.env.BB_FLEET_WATCHERS_NICE ?? 10);
const log = (s) => {
  if (!args.json) process.stderr.write(`${s}\n`);
};

// ---------------------------------------------------------------------------------------------
// 2. the agents

async function startAgent(name, tls, store) {
  const server = new grpc.Server();
  let current = '';
  const { AgentService } = loadServices();
  server.addService(AgentService.service, {
    GetInfo: (_c, cb) =>
      cb(null, {
        name,
        agentVersion: 'bench-1',
        hostname: name,
        addresses: ['127.0.0.1'],
        planName: 'bench',
        product: 'generic',
        productVersion: '1.0',
        runningJobId: current,
        runningJobKind: current ? 'backup' : '',
        safetyCopies: [],
      }),
    Backup: (call) => {
      void (async () => {
        const jobId = call.request.jobId;
        current = jobId;
        call.write({ progress: { ...emptyProgress(jobId, 'BACKUP_DATABASE'), state: 'running', bytesTotal: 100, bytesDone: 10 } });
        await new Promise((r) => setTimeout(r, BACKUP_MS));
        const b = await writeFakeBackup(store, name, { agentVersion: 'bench', windowMs: 10 });
        current = '';
        call.write({ progress: { ...emptyProgress(jobId, 'PUBLISH'), state: 'done', bytesTotal: 100, bytesDone: 100 } });
        call.write({
          result: {
            ...emptyResult(jobId),
            status: 'Completed',
            backupId: b.manifest.id,
            backupPath: b.rel,
            sizeBytes: b.manifest.totals.bytes,
            manifestJson: b.json,
            durationMs: BACKUP_MS,
          },
        });
        call.end();
      })().catch((err) => call.emit('error', { code: grpc.status.INTERNAL, details: err.message }));
    },
    Restore: (call) => call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: 'bench agent' }),
    VerifyBackup: (_c, cb) => cb(null, { ok: true, filesChecked: 1, bytesChecked: 1, problems: [], durationMs: 1 }),
    DeleteBackup: (_c, cb) => cb(null, { deleted: true, freedBytes: 0 }),
    ConfirmRestore: (_c, cb) => cb(null, { removed: 0, freedBytes: 0 }),
    // the controller acknowledges every recorded backup (agent-outbox.ts): answered as a real agent
    // does, not with UNIMPLEMENTED (an error per backup the controller would log)
    CancelJob: (_c, cb) => cb(null, { cancelling: false, runningJobId: current }),
    UnsentResults: (_c, cb) => cb(null, { results: [] }),
    AckResults: (c, cb) => cb(null, { removed: c.request.jobIds.length }),
  });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', serverCredentials({ ca: tls.ca, key: tls.key, cert: tls.certOf(name) }, true), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { name, address: `127.0.0.1:${port}`, server };
}

// ---------------------------------------------------------------------------------------------
// 3. the controller

function startController(configFile) {
  const extra = process.env.BB_CONTROLLER_NODE_ARGS ? process.env.BB_CONTROLLER_NODE_ARGS.split(' ') : [];
  // the controller's own V8 flags (as its shebang and the installed wrapper), then the bench's extra ones
  const prof = args['cpu-prof'] ? ['--import', path.join(here, 'lib/phase-profile.mjs')] : [];
  if (args['cpu-prof']) mkdirSync(path.resolve(args['cpu-prof']), { recursive: true }); // the controller writes there at the phase's end
  const argv = [...CONTROLLER_NODE_FLAGS, ...extra, ...prof, CONTROLLER_MAIN, '--config', configFile];
  const env = args['cpu-prof']
    ? { ...process.env, BB_PHASE_PROFILE_DIR: path.resolve(args['cpu-prof']), BB_PHASE_PROFILE_NAME: args['prof-phase'] }
    : process.env;
  const proc = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  let started = false;
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`controller did not start:\n${out.slice(-2000)}`)), 30_000);
    proc.stdout.on('data', (d) => {
      out += d;
      if (out.length > 64_000) out = out.slice(-16_000); // its last lines, said if it dies
      // after start-up only that tail is kept: a regex over a growing log per chunk delayed this
      // process's reading of the pipe, and a full pipe blocked the controller's log writes
      if (started) return;
      const m = /"port":(\d+)[^\n]*"msg":"controller listening"/.exec(out);
      const h = /"port":(\d+)[^\n]*"msg":"dashboard listening"/.exec(out);
      if (m && h) {
        started = true;
        clearTimeout(t);
        resolve({ proc, port: Number(m[1]), httpPort: Number(h[1]) });
      }
    });
    proc.stderr.on('data', (d) => (out += d));
    proc.once('exit', (code, signal) => {
      clearTimeout(t);
      reject(new Error(`controller exited (${code}):\n${out.slice(-2000)}`));
      // after it started: the bench's own SIGTERM ends it with 0; anything else is a crash, its last output says why
      if (code !== 0 && signal !== 'SIGTERM') process.stderr.write(`controller exited (${code ?? signal}):\n${out.slice(-4000)}\n`);
    });
  });
}

function rssMb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/**
 * The controller's RSS sampled every 250 ms, with the highest per bench phase (where the peak
 * is), and the CPU seconds it used in each phase.
 */
function rssByPhase(pid) {
  const peaks = {};
  const cpu = {};
  let phase = 'start';
  let cpuAt = cpuSeconds(pid);
  const t = setInterval(() => {
    try {
      peaks[phase] = Math.max(peaks[phase] ?? 0, Math.round(rssMb(pid)));
    } catch {
      // the controller has exited
    }
  }, 250);
  const endPhase = () => {
    try {
      const now = cpuSeconds(pid);
      cpu[phase] = round((cpu[phase] ?? 0) + now - cpuAt, 2);
      cpuAt = now;
    } catch {
      // the controller has exited
    }
  };
  return {
    set: (p) => (endPhase(), (phase = p)),
    stop: () => (clearInterval(t), endPhase(), { peaks, cpu }),
  };
}

function peakRssMb(pid) {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** CPU seconds the process has used (user + system): less noisy than wall time on a shared machine. */
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime (fields 14, 15) in ticks of 1/100 s
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
const round = (v, d = 1) => Math.round(v * 10 ** d) / 10 ** d;

async function timeStatus(client) {
  const t = performance.now();
  const s = await client.call('GetStatus', { refresh: false });
  return { ms: performance.now() - t, s };
}

/**
 * The timing client's GetStatus: a ControllerService client whose GetStatus decoder notes when
 * the whole answer's bytes are in (grpc-js calls it then) and how long decoding them took (~350
 * KB of protobuf into 1000 objects: this client's CPU), so a call's time shows the controller's
 * part (request sent -> answer's bytes received: its event loop, encoding and the transport);
 * the rest is the decoding and the trailers that end the call. Same TLS,
 * token and HTTP/2 window as the CLI's ControllerClient.
 */
function statusTimer(o) {
  const { ControllerService } = loadServices();
  const def = { ...ControllerService.service };
  let bytesAt = 0;
  let decodeMs = 0;
  const decode = def.GetStatus.responseDeserialize;
  const timedDecode = (b) => {
    bytesAt = performance.now();
    const s = decode(b);
    decodeMs = performance.now() - bytesAt;
    return s;
  };
  def.GetStatus = { ...def.GetStatus, responseDeserialize: timedDecode };
  const Client = grpc.makeGenericClientConstructor(def, 'ControllerService');
  const client = new Client(o.controller, tokenClientCredentials(o.ca, o.token), {
    'grpc.max_receive_message_length': 256 * 1024 * 1024,
    'grpc-node.flow_control_window': 16 * 1024 * 1024,
  });
  // this client's own share of a call: how long its thread waited for a core while runnable
  // (/proc/thread-self/schedstat's run delay) and its GC pauses during the call
  let gcMs = 0;
  const gcs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcMs += e.duration;
  });
  gcs.observe({ entryTypes: ['gc'] });
  const time = () =>
    new Promise((resolve, reject) => {
      const wait0 = runDelayMs();
      const gc0 = gcMs;
      const t = performance.now();
      client.GetStatus({ refresh: false }, { deadline: Date.now() + 60_000 }, (err, s) => {
        if (err) return reject(err);
        const end = performance.now();
        if (s.totalHosts !== o.web.hosts) return reject(new Error(`status lists ${s.totalHosts} of ${o.web.hosts} hosts`));
        resolve({ ms: end - t, bytesMs: bytesAt - t, decodeMs, waitMs: runDelayMs() - wait0, gcMs: gcMs - gc0 });
      });
    });
  return { time, close: () => client.close() };
}

/** The calling thread's time spent runnable but waiting for a CPU, in ms (Linux schedstat; 0 elsewhere). */
function runDelayMs() {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[1]) / 1e6;
  } catch {
    return 0;
  }
}

/** One HTTPS request to the dashboard; resolves { status, ms, body, headers }. */
function request(web, method, p, { body, headers = {} } = {}) {
  const t = performance.now();
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: web.port, method, path: p, agent: web.agent, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - t, body: text, headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Sign in to the dashboard with the token; returns the session cookie. */
async function dashboardSession(web, token) {
  const r = await request(web, 'POST', '/login', {
    body: new URLSearchParams({ token }).toString(),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  const cookie = String(r.headers['set-cookie'] ?? '').split(';')[0];
  if (r.status !== 303 || !cookie) throw new Error(`dashboard sign-in failed: ${r.status} ${r.body.slice(0, 200)}`);
  return cookie;
}

async function timeDashboard(web) {
  const page = await request(web, 'GET', '/', { headers: { cookie: web.cookie } });
  if (page.status !== 200 || !page.body.includes('<table class="fleet"')) throw new Error(`fleet page: ${page.status}`);
  const rows = page.body.match(/<tr\s+data-host="/g)?.length ?? 0;
  if (rows !== web.hosts) throw new Error(`the fleet page lists ${rows} of ${web.hosts} hosts`);
  const json = await request(web, 'POST', '/api/v1/GetStatus', {
    body: '{}',
    headers: { authorization: `Bearer ${web.token}`, 'content-type': 'application/json' },
  });
  if (json.status !== 200) throw new Error(`GetStatus over HTTP: ${json.status} ${json.body.slice(0, 200)}`);
  return { html: page.ms, json: json.ms, htmlBytes: page.body.length };
}

/**
 * A timing client's process: `what` 'status' times GetStatus over gRPC, 'page' the fleet page
 * (HTML, then JSON), every 50 ms until stdin ends; prints { status | html, json, pageBytes }
 * (milliseconds) and its own event loop's delay (p99 and max, ms: a timing is the controller's
 * only while this stays small). Two processes: a 0.8 MB page read and checked in the same event
 * loop would delay a status call's timing.
 */
async function sample(spec) {
  const o = JSON.parse(spec);
  const eld = monitorEventLoopDelay({ resolution: 10 });
  const out = { status: [], statusBytes: [], statusDecode: [], statusCalls: [], html: [], json: [], pageBytes: 0 };
  const t0 = performance.now();
  let running = true;
  process.stdin.resume();
  process.stdin.once('end', () => (running = false));
  const pause = () => new Promise((r) => setTimeout(r, 50));
  if (o.what === 'status') {
    const client = statusTimer(o);
    await client.time(); // connect before the first timing
    process.stdout.write('ready\n');
    eld.enable();
    while (running) {
      const r = await client.time();
      out.status.push(r.ms);
      out.statusBytes.push(r.bytesMs);
      out.statusDecode.push(r.decodeMs);
      // each call: when it ended (s since sampling began), its ms, bytes in, decode, the client's CPU wait and GC
      out.statusCalls.push([(performance.now() - t0) / 1000, r.ms, r.bytesMs, r.decodeMs, r.waitMs, r.gcMs].map((x) => round(x, 1)));
      await pause();
    }
    client.close();
  } else {
    const web = { ...o.web, agent: new https.Agent({ ca: readFileSync(o.ca), servername: 'controller', keepAlive: true }) };
    await timeDashboard(web);
    process.stdout.write('ready\n');
    eld.enable();
    while (running) {
      const d = await timeDashboard(web);
      out.html.push(d.html);
      out.json.push(d.json);
      out.pageBytes = d.htmlBytes;
      await pause();
    }
    web.agent.destroy();
  }
  eld.disable();
  out.eld = { p99: round(eld.percentile(99) / 1e6), max: round(eld.max / 1e6) };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

function spawnSampler(spec) {
  const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), '--sample', JSON.stringify(spec)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  const exited = new Promise((resolve, reject) =>
    proc.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`the timing client exited (${code})`)))),
  );
  const ready = new Promise((resolve, reject) => {
    proc.stdout.on('data', () => out.startsWith('ready\n') && resolve());
    exited.catch(reject);
  });
  return {
    ready,
    /** Stop sampling; resolves with the timings and the process's CPU seconds. */
    async stop() {
      let cpuS = NaN;
      try {
        cpuS = cpuSeconds(proc.pid);
      } catch {
        // it has exited
      }
      proc.stdin.end();
      await exited;
      return { ...JSON.parse(out.slice('ready\n'.length)), cpuS };
    },
  };
}

/** The agents' process: serve every agent, print their addresses as one JSON line, live until stdin ends. */
async function serveAgents(spec) {
  const { names, certsDir, store } = JSON.parse(spec);
  const tls = {
    ca: path.join(certsDir, 'ca.crt'),
    key: path.join(certsDir, 'agents', 'bench-agents.key'),
    certOf: (n) => path.join(certsDir, 'agents', `${n}.crt`),
  };
  const agents = [];
  for (const n of names) agents.push(await startAgent(n, tls, store));
  process.stdout.write(`${JSON.stringify(agents.map((a) => ({ name: a.name, address: a.address })))}\n`);
  process.stdin.resume();
  await new Promise((r) => process.stdin.once('end', r));
  await Promise.all(agents.map((a) => new Promise((r) => a.server.tryShutdown(r))));
}

function spawnAgents(names, certsDir, store) {
  const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve-agents', JSON.stringify({ names, certsDir, store })], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let out = '';
  return new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve({ proc, agents: JSON.parse(out.slice(0, nl)) });
    });
    proc.once('exit', (code) => reject(new Error(`the agents' process exited (${code})`)));
  });
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-fleet-'));
  const certsDir = path.join(dir, 'certs');
  const store = path.join(dir, 'store');
  mkdirSync(store, { recursive: true });
  const names = Array.from({ length: N }, (_, i) => `box${String(i + 1).padStart(4, '0')}`);
  let controller;
  let load0 = 0;
  let phases;
  let agents = [];
  let agentsProc;
  let agentsNice;
  let client;
  let web;
  try {
    log(`fleet bench: ${N} agents, backups of ${BACKUP_MS} ms each, in ${dir}`);
    load0 = os.loadavg()[0];
    await initCerts(certsDir, { controllerName: 'controller' });
    issueBenchAgentCerts(certsDir, names);
    const t0 = performance.now();
    ({ proc: agentsProc, agents } = await spawnAgents(names, certsDir, store));
    // the scripted agents stand for 1000 other machines: on this one they run 10 nice levels below
    // the controller and the timing clients, so that their CPU (6-10 s over a fleet backup) is
    // not what a status timing waits for (AGENTS_NICE_DELTA; 0 to share the CPU equally)
    agentsNice = Math.min(19, os.getPriority() + AGENTS_NICE_DELTA);
    os.setPriority(agentsProc.pid, agentsNice);
    log(`  ${N} agents listening (${round((performance.now() - t0) / 1000)} s)`);

    const configFile = path.join(dir, 'controller.yaml');
    writeFileSync(
      configFile,
      `listen: 127.0.0.1:0
tls: { ca: certs/ca.crt, cert: certs/controller.crt, key: certs/controller.key }
catalog: state/catalog.db
store: store
concurrency: ${CONCURRENCY}
http: { listen: 127.0.0.1:0 }
${process.env.BB_CONTROLLER_EXTRA_YAML ?? ''}
`,
    );
    const tok = spawnSync(
      process.execPath,
      [CONTROLLER_MAIN, '--config', configFile, 'token', 'create', '--role', 'admin', '--name', 'bench'],
      {
        encoding: 'utf8',
      },
    );
    if (tok.status !== 0) throw new Error(`token create failed: ${tok.stderr}`);
    controller = await startController(configFile);
    phases = rssByPhase(controller.proc.pid);
    client = new ControllerClient({
      controller: `127.0.0.1:${controller.port}`,
      ca: path.join(certsDir, 'ca.crt'),
      token: tok.stdout.trim(),
    });
    web = {
      port: controller.httpPort,
      agent: new https.Agent({ ca: readFileSync(path.join(certsDir, 'ca.crt')), servername: 'controller', keepAlive: true }),
      token: tok.stdout.trim(),
      hosts: N,
    };
    web.cookie = await dashboardSession(web, web.token);
    phases.set('add-hosts');
    const t1 = performance.now();
    // AddHost asks each agent first (5 s deadline, the controller's); on a machine this loaded a
    // handshake can miss it: such a host is asked again (the count is reported), never skipped
    let addRetries = 0;
    await mapLimit(agents, 8, async (a) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await client.call('AddHost', { name: a.name, address: a.address }, 30_000);
        } catch (err) {
          if (attempt >= 4 || !/did not answer in time|UNAVAILABLE/.test(String(err.message))) throw err;
          addRetries++;
        }
      }
    });
    const addS = (performance.now() - t1) / 1000;
    log(`  ${N} hosts added (${round(addS)} s)`);
    phases.set('status-refresh');
    const first = await client.call('GetStatus', { refresh: true }, 300_000);
    if (first.reachableHosts !== N) throw new Error(`only ${first.reachableHosts} of ${N} agents reachable`);

    // 4. fleet backup, status and the fleet page timed meanwhile by the timing client
    const spec = {
      controller: `127.0.0.1:${controller.port}`,
      ca: path.join(certsDir, 'ca.crt'),
      token: web.token,
      web: { port: web.port, token: web.token, cookie: web.cookie, hosts: N },
    };
    const samplers = [spawnSampler({ ...spec, what: 'status' }), spawnSampler({ ...spec, what: 'page' })];
    await Promise.all(samplers.map((x) => x.ready));
    phases.set('fleet-backup');
    // the watchers below stand for the operator's CLI on another machine (as the agents stand
    // for 1000 others): on this one their JavaScript (~1.7 CPU-s, ~0.13 s of it in the first
    // 0.3 s while 256 streams open) runs WATCHERS_NICE_DELTA levels below the controller and
    // the timing clients, which were started at the bench's own level. Linux: the main thread only.
    const benchNice = os.getPriority();
    const watchersNice = Math.min(19, benchNice + WATCHERS_NICE_DELTA);
    os.setPriority(watchersNice);
    const agentsCpu0 = cpuSeconds(agentsProc.pid);
    const mainCpu0 = process.cpuUsage();
    const profiled = args['cpu-prof'] && args['prof-phase'] === 'fleet-backup';
    if (profiled) controller.proc.kill('SIGUSR2'); // start the profile (lib/phase-profile.mjs)
    // a job's progress seen live by its watcher; a job that ended before its watch began (the
    // watches start after CreateBackup returns, 256 at a time) answers with its result only:
    // its progress is then the one the controller recorded from the agent's stream (ListJobs)
    const watchedLive = new Set();
    const tb = performance.now();
    const { jobs } = await client.call('CreateBackup', { all: true }, 60_000);
    const results = await mapLimit(jobs, 256, async (j) => {
      let progressed = false;
      for await (const ev of client.stream('WatchJob', { id: j.id })) {
        if (ev.progress) progressed = true;
        if (ev.result) {
          if (progressed) watchedLive.add(j.id);
          return ev.result;
        }
      }
      throw new Error(`job ${j.id} ended without a result`);
    });
    const fleetS = (performance.now() - tb) / 1000;
    if (profiled) controller.proc.kill('SIGUSR2'); // write it
    const [timedStatus, timedPage] = await Promise.all(samplers.map((x) => x.stop()));
    const busy = timedStatus.status;
    // every timed status call, for percentiles over several runs (BB_FLEET_STATUS_CALLS=FILE: one JSON array,
    // each call [s after sampling began, ms, bytes in ms, decode ms, client CPU wait ms, client GC ms])
    if (process.env.BB_FLEET_STATUS_CALLS) writeFileSync(process.env.BB_FLEET_STATUS_CALLS, JSON.stringify(timedStatus.statusCalls));
    const busyBytes = timedStatus.statusBytes.sort((a, b) => a - b);
    const busyDecode = timedStatus.statusDecode.sort((a, b) => a - b);
    const mainCpu = process.cpuUsage(mainCpu0);
    const pageMs = timedPage.html;
    const jsonMs = timedPage.json;
    const pageBytes = timedPage.pageBytes;
    const agentsCpuS = cpuSeconds(agentsProc.pid) - agentsCpu0;
    const leftRunning = (await client.call('ListJobs', { states: ['active'], limit: 10_000 })).jobs.length;
    const ids = new Set(jobs.map((j) => j.id));
    const recorded = (await client.call('ListJobs', { limit: 10_000 })).jobs.filter(
      (j) => ids.has(j.id) && j.progress?.phase === 'PUBLISH' && j.progress.state === 'done',
    );
    const withProgress = new Set([...watchedLive, ...recorded.map((j) => j.id)]).size;
    const completed = results.filter((r) => r.status === 'Completed').length;
    log(`  fleet backup: ${completed}/${N} Completed in ${round(fleetS, 2)} s`);
    try {
      os.setPriority(benchNice); // back to the bench's level for step 5 (needs CAP_SYS_NICE, as root)
    } catch {
      // not allowed: step 5's timings run at the watchers' level (nothing else runs then)
    }

    // 5. status, idle
    phases.set('after');
    for (let i = 0; i < 10; i++) await timeStatus(client); // warm
    const profiledAfter = args['cpu-prof'] && args['prof-phase'] === 'after';
    if (profiledAfter) controller.proc.kill('SIGUSR2');
    const idle = [];
    const idleCpu0 = cpuSeconds(controller.proc.pid);
    let last;
    for (let i = 0; i < STATUS_CALLS; i++) {
      const r = await timeStatus(client);
      idle.push(r.ms);
      last = r.s;
    }
    const statusCpuMs = ((cpuSeconds(controller.proc.pid) - idleCpu0) * 1000) / STATUS_CALLS;
    // the fleet page (HTML) asked back to back: the controller's CPU per page; the load of the
    // machine (others' processes) does not count in it, unlike the wall-clock timings above
    const pageCpu0 = cpuSeconds(controller.proc.pid);
    for (let i = 0; i < PAGE_CALLS; i++) await timeDashboard(web);
    const pageCpuMs = ((cpuSeconds(controller.proc.pid) - pageCpu0) * 1000) / PAGE_CALLS;
    if (profiledAfter) {
      controller.proc.kill('SIGUSR2');
      await new Promise((r) => setTimeout(r, 3_000)); // the profile written before the SIGTERM below
    }
    idle.sort((a, b) => a - b);
    busy.sort((a, b) => a - b);
    pageMs.sort((a, b) => a - b);
    jsonMs.sort((a, b) => a - b);
    const rss = peakRssMb(controller.proc.pid);
    const cpuS = cpuSeconds(controller.proc.pid);
    const out = {
      fleet_hosts: N,
      load_avg_1m: [round(load0, 2), round(os.loadavg()[0], 2)],
      fleet_concurrency: CONCURRENCY,
      backup_ms_per_host: BACKUP_MS,
      fleet_backup_s: round(fleetS, 2),
      fleet_backups_completed: completed,
      fleet_backups_with_progress: withProgress,
      fleet_backups_progress_watched_live: watchedLive.size,
      jobs_left_running: leftRunning,
      hosts_per_s: round(N / fleetS, 1),
      add_hosts_s: round(addS, 2),
      add_hosts_retried: addRetries,
      status_calls: STATUS_CALLS,
      status_p99_ms: busy.length ? round(pct(busy, 99), 2) : null,
      status_p50_ms: busy.length ? round(pct(busy, 50), 2) : null,
      status_p90_ms: busy.length ? round(pct(busy, 90), 2) : null,
      status_p95_ms: busy.length ? round(pct(busy, 95), 2) : null,
      // the five slowest calls during the backup (a p99 of ~200 samples is its second slowest)
      status_slowest_ms: [...busy]
        .sort((a, b) => b - a)
        .slice(0, 5)
        .map((x) => round(x, 1)),
      status_samples: busy.length,
      // the five slowest calls, each [s after sampling began, ms, bytes in ms, decode ms, the timing
      // client's own wait for a CPU during the call ms, its GC during the call ms]: how much of a
      // slow call was the measuring process itself
      status_slowest_split: [...timedStatus.statusCalls].sort((a, b) => b[1] - a[1]).slice(0, 5),
      // the busy p99 counting only the controller's and the transport's part: each call less the
      // timing client's own CPU wait and GC during it (an estimate: they may overlap the wait for bytes)
      status_p99_less_client_ms: (() => {
        const v = timedStatus.statusCalls.map((c) => Math.max(0, c[1] - c[4] - c[5])).sort((a, b) => a - b);
        return v.length ? round(pct(v, 99), 2) : null;
      })(),
      // the same calls split: request sent -> the answer's bytes received (the controller and the
      // transport), and the timing client decoding them (its own CPU, ~350 KB into 1000 objects)
      status_bytes_p50_ms: busyBytes.length ? round(pct(busyBytes, 50), 2) : null,
      status_bytes_p99_ms: busyBytes.length ? round(pct(busyBytes, 99), 2) : null,
      status_decode_p50_ms: busyDecode.length ? round(pct(busyDecode, 50), 2) : null,
      status_decode_p99_ms: busyDecode.length ? round(pct(busyDecode, 99), 2) : null,
      // after the answer was decoded, until the call ended: the wait for the trailers (the status
      // the controller sends after the answer's write completes) and this client's own turn
      ...(() => {
        const v = timedStatus.statusCalls.map((c) => Math.max(0, c[1] - c[2] - c[3])).sort((a, b) => a - b);
        return v.length ? { status_end_wait_p50_ms: round(pct(v, 50), 2), status_end_wait_p99_ms: round(pct(v, 99), 2) } : {};
      })(),
      status_idle_p50_ms: round(pct(idle, 50), 2),
      status_idle_p99_ms: round(pct(idle, 99), 2),
      status_idle_max_ms: round(idle[idle.length - 1], 2),
      dashboard_p99_ms: pageMs.length ? round(pct(pageMs, 99), 2) : null,
      dashboard_p50_ms: pageMs.length ? round(pct(pageMs, 50), 2) : null,
      dashboard_json_p99_ms: jsonMs.length ? round(pct(jsonMs, 99), 2) : null,
      dashboard_samples: pageMs.length,
      dashboard_page_kb: round(pageBytes / 1024, 1),
      status_hosts_reported: last.totalHosts,
      status_at_risk_hosts: last.atRiskHosts,
      controller_peak_rss_mb: round(rss, 1),
      controller_cpu_s: round(cpuS, 1),
      // the bench's own processes during the fleet backup: they share the 2 cores with the controller
      agents_cpu_s_fleet_backup: round(agentsCpuS, 1),
      // nice levels: the bench (controller, timing clients) and the agents' process
      nice: { bench: benchNice, agents: agentsNice, watchers: watchersNice },
      // this process (the 1000 WatchJob streams) over the fleet backup
      watchers_cpu_s: round((mainCpu.user + mainCpu.system) / 1e6, 1),
      timing_clients_cpu_s: [round(timedStatus.cpuS, 1), round(timedPage.cpuS, 1)],
      // the timing clients' own event-loop delay (status, page): p99 and max in ms
      timing_clients_eld_ms: [timedStatus.eld, timedPage.eld],
      // the controller's CPU per status call and per fleet page (HTML + JSON), both asked back
      // to back after the backup (answers reused as status.ts says), in ms: what a request
      // costs it, whatever the machine's load
      status_cpu_ms_per_call: round(statusCpuMs, 2),
      dashboard_cpu_ms_per_page: round(pageCpuMs, 2),
      ...(() => {
        const { peaks, cpu } = phases.stop();
        return { controller_rss_mb_by_phase: peaks, controller_cpu_s_by_phase: cpu };
      })(),
      targets: { status_p99_ms: 50, dashboard_p99_ms: 200, controller_peak_rss_mb: 250 },
    };
    if (args.json) process.stdout.write(`${JSON.stringify(out)}\n`);
    else {
      const rows = [
        ['hosts', `${N}`],
        [
          `fleet backup (concurrency ${CONCURRENCY})`,
          `${out.fleet_backup_s} s, ${completed}/${N} Completed, ${withProgress} with progress, ${leftRunning} left running, ${out.hosts_per_s} hosts/s`,
        ],
        [
          'status p50 / p99 (during backup)',
          `${out.status_p50_ms} / ${out.status_p99_ms} ms over ${busy.length} calls   (target p99 < 50 ms)`,
        ],
        ['  bytes in / decoded p99', `${out.status_bytes_p99_ms} / ${out.status_decode_p99_ms} ms`],
        ['status p50 / p99 / max (idle)', `${out.status_idle_p50_ms} / ${out.status_idle_p99_ms} / ${out.status_idle_max_ms} ms`],
        [
          'fleet page HTML p50 / p99 (during backup)',
          `${out.dashboard_p50_ms} / ${out.dashboard_p99_ms} ms, ${out.dashboard_page_kb} KiB   (target p99 < 200 ms)`,
        ],
        ['fleet JSON p99 (during backup)', `${out.dashboard_json_p99_ms} ms over ${pageMs.length} samples`],
        ['controller peak RSS', `${out.controller_peak_rss_mb} MB   (target < 250 MB)`],
        ['controller CPU (whole run)', `${out.controller_cpu_s} s`],
        ['load average (1 min) at start / end', `${out.load_avg_1m.join(' / ')} (2 cores, shared)`],
      ];
      const w = Math.max(...rows.map((r) => r[0].length));
      process.stdout.write(`${rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n')}\n`);
    }
  } finally {
    phases?.stop();
    client?.close();
    web?.agent.destroy();
    if (controller) {
      controller.proc.kill('SIGTERM');
      await new Promise((r) => {
        if (controller.proc.exitCode !== null) r();
        else controller.proc.once('exit', r);
      });
    }
    if (agentsProc && agentsProc.exitCode === null) {
      const gone = new Promise((r) => agentsProc.once('exit', r));
      agentsProc.stdin.end();
      await gone;
    }
    if (!args.keep) rmSync(dir, { recursive: true, force: true });
    else log(`kept ${dir}`);
  }
}

(args['serve-agents'] ? serveAgents(args['serve-agents']) : args.sample ? sample(args.sample) : main()).then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`fleet bench failed: ${err.stack ?? err}\n`);
    process.exit(1);
  },
);
