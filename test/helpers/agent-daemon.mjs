// Start the real agent daemon (`node packages/agent/dist/main.js --config ...`, with the
// agent's V8 flags) over mutual TLS, and talk to it as the controller does. Shared by the
// tests (test/helpers/agent-process.ts types it) and the bench (bench/bench.mjs runs the
// deployed incremental through it).
//
//   const agent = await startAgentDaemon({ dir, name, planFile, store, allowedRoots });
//   for await (const ev of serverStream(agent.client, 'Backup', req)) ...
//   await agent.waitForLog(/"msg":"watching artifacts/);   // its JSON log lines
//   agent.memory();                                         // { rssBytes, hwmBytes } from /proc
//   await agent.stop();                                     // SIGTERM, waits for the exit
//
// Steps: make (or reuse) a CA, the controller's certificate and this agent's in <dir>/certs;
// write <dir>/agent-<name>.yaml; spawn the daemon; read its port from the "agent listening"
// log line; open a gRPC client with the controller's certificate. Needs `npm run build`.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { channelOptions, initCerts, issueAgentCert, loadServices, mutualClientCredentials } from '@boxback/common';
import { AGENT_NODE_FLAGS } from '../../packages/agent/dist/node-flags.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const AGENT_MAIN = path.join(repo, 'packages/agent/dist/main.js');

async function ensureCerts(certsDir, name) {
  if (!existsSync(path.join(certsDir, 'ca.key'))) await initCerts(certsDir, { controllerName: 'controller' });
  const agentCert = path.join(certsDir, 'agents', `${name}.crt`);
  const agent = existsSync(agentCert)
    ? { ca: path.join(certsDir, 'ca.crt'), cert: agentCert, key: path.join(certsDir, 'agents', `${name}.key`) }
    : await issueAgentCert(certsDir, name);
  const controller = {
    ca: path.join(certsDir, 'ca.crt'),
    cert: path.join(certsDir, 'controller.crt'),
    key: path.join(certsDir, 'controller.key'),
  };
  return { agent, controller };
}

/** RSS and peak RSS (VmHWM) of a live process, from /proc (0 when it is gone). */
export function processMemory(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (f) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 0) * 1024;
    return { rssBytes: kb('VmRSS'), hwmBytes: kb('VmHWM') };
  } catch {
    return { rssBytes: 0, hwmBytes: 0 };
  }
}

/** Reset a process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0; own processes only). */
export function resetPeakMemory(pid) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export async function startAgentDaemon(o) {
  mkdirSync(o.dir, { recursive: true });
  const certs = await ensureCerts(path.join(o.dir, 'certs'), o.name);
  const stateDir = o.stateDir ?? path.join(o.dir, `state-${o.name}`);
  const configFile = path.join(o.dir, `agent-${o.name}.yaml`);
  const config = {
    name: o.name,
    listen: '127.0.0.1:0',
    tls: certs.agent,
    store: o.store,
    stateDir,
    plan: o.planFile,
    allowedRoots: o.allowedRoots,
    ...(o.identity ? { identity: o.identity } : {}),
    ...o.extraConfig,
  };
  writeFileSync(configFile, JSON.stringify(config, null, 2)); // JSON is YAML
  const proc = spawn(process.execPath, [...AGENT_NODE_FLAGS, ...(o.nodeArgs ?? []), AGENT_MAIN, '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, BOXBACK_LOG_LEVEL: 'debug', ...o.env },
  });
  o.onSpawn?.(proc);
  let out = '';
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent ${o.name} did not start listening:\n${out}`)), o.startTimeoutMs ?? 60_000);
    proc.stdout.on('data', (chunk) => {
      out += chunk.toString();
      const m = /"port":(\d+)[^\n]*"msg":"agent listening"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    proc.stderr.on('data', (c) => (out += c.toString()));
    void exited.then((x) => {
      clearTimeout(timer);
      reject(new Error(`agent ${o.name} exited (${x.code ?? x.signal}) before listening:\n${out}`));
    });
  });
  const { AgentService } = loadServices();
  const client = new AgentService(`127.0.0.1:${port}`, mutualClientCredentials(certs.controller), channelOptions(o.name));
  const kill = async (signal) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    const r = await exited;
    client.close();
    return r;
  };
  /** Resolve with the first log line matching `re` (searching from `from`, an offset into output()). */
  const waitForLog = async (re, { timeoutMs = 60_000, from = 0 } = {}) => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const line = out
        .slice(from)
        .split('\n')
        .find((l) => re.test(l));
      if (line) return line;
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`agent ${o.name} exited while waiting for ${re}`);
      if (Date.now() > end) throw new Error(`agent ${o.name}: no log line ${re} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  return {
    client,
    port,
    proc,
    configFile,
    stateDir,
    tls: certs.controller,
    output: () => out,
    waitForLog,
    memory: () => processMemory(proc.pid),
    stop: () => kill('SIGTERM'),
    kill,
  };
}
