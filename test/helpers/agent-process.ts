/**
 * Run the real agent (`node packages/agent/dist/main.js --config ...`) over mutual TLS for a
 * test, and talk to it as the controller does.
 *
 *   const agent = await startAgent({ dir, name: 'gocd1', planFile, store, allowedRoots: [root] });
 *   for await (const ev of serverStream(agent.client, 'Backup', req)) ...
 *   await agent.stop();            // SIGTERM, waits for exit
 *   await agent.kill('SIGKILL');   // any signal, waits for exit
 *
 * Certificates live in `<dir>/certs` (a CA and controller cert made once by initCerts, one
 * agent cert per name): starting again with the same dir reuses them, so an agent can be
 * killed and restarted. The agent listens on 127.0.0.1:0; its port is read from its
 * "agent listening" log line. Needs `npm run build` first (the tests' npm script does it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { AGENT_NODE_FLAGS } from '../../packages/agent/src/node-flags.js';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { channelOptions, initCerts, issueAgentCert, loadServices, mutualClientCredentials } from '@boxback/common';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const AGENT_MAIN = path.join(repo, 'packages/agent/dist/main.js');

export interface StartAgentOptions {
  /** Working directory for certs, config, state and logs. */
  dir: string;
  name: string;
  planFile: string;
  store: string;
  allowedRoots: string[];
  identity?: { hostname?: string; addresses?: string[] };
  /** Defaults to `<dir>/state-<name>`. */
  stateDir?: string;
  /** Extra agent.yaml keys (allowedClients...). */
  extraConfig?: Record<string, unknown>;
  env?: Record<string, string>;
  /** How long to wait for the agent to listen (ms). */
  startTimeoutMs?: number;
}

export interface AgentProcess {
  client: grpc.Client;
  port: number;
  proc: ChildProcess;
  configFile: string;
  stateDir: string;
  /** Controller-side TLS files (CA, controller cert and key). */
  tls: { ca: string; cert: string; key: string };
  /** Everything the agent printed so far (JSON log lines, stderr). */
  output(): string;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Send a signal and wait for the exit. */
  kill(signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function ensureCerts(certsDir: string, name: string) {
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

export async function startAgent(o: StartAgentOptions): Promise<AgentProcess> {
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
  const proc = spawn(process.execPath, [...AGENT_NODE_FLAGS, AGENT_MAIN, '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, BOXBACK_LOG_LEVEL: 'debug', ...o.env },
  });
  let out = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent ${o.name} did not start listening:\n${out}`)), o.startTimeoutMs ?? 20_000);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const m = /"port":(\d+)[^\n]*"msg":"agent listening"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    void exited.then((x) => {
      clearTimeout(timer);
      reject(new Error(`agent ${o.name} exited (${x.code ?? x.signal}) before listening:\n${out}`));
    });
  });
  const { AgentService } = loadServices();
  const client = new AgentService(`127.0.0.1:${port}`, mutualClientCredentials(certs.controller), channelOptions(o.name));
  const kill = async (signal: NodeJS.Signals) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    const r = await exited;
    client.close();
    return r;
  };
  return {
    client,
    port,
    proc,
    configFile,
    stateDir,
    tls: certs.controller,
    output: () => out,
    stop: () => kill('SIGTERM'),
    kill,
  };
}
