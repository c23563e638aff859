/**
 * Test helpers for the controller: certificates in a temp dir, controller.yaml, the real
 * controller daemon (packages/controller/dist/main.js) as a child process, tokens made by
 * its `token create` subcommand, and the real `boxback` CLI. Needs `npm run build` first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initCerts, issueAgentCert } from '@boxback/common';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CONTROLLER_MAIN = path.join(repo, 'packages/controller/dist/main.js');
export const CLI_MAIN = path.join(repo, 'packages/controller/dist/cli/main.js');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(argv: string[], opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, argv, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export interface Certs {
  dir: string;
  ca: string;
  controller: { ca: string; cert: string; key: string };
  agent(name: string): Promise<{ ca: string; cert: string; key: string }>;
}

export async function makeCerts(dir: string): Promise<Certs> {
  const certsDir = path.join(dir, 'certs');
  if (!existsSync(path.join(certsDir, 'ca.key'))) await initCerts(certsDir, { controllerName: 'controller' });
  const ca = path.join(certsDir, 'ca.crt');
  return {
    dir: certsDir,
    ca,
    controller: { ca, cert: path.join(certsDir, 'controller.crt'), key: path.join(certsDir, 'controller.key') },
    agent: async (name) => {
      const cert = path.join(certsDir, 'agents', `${name}.crt`);
      if (existsSync(cert)) return { ca, cert, key: path.join(certsDir, 'agents', `${name}.key`) };
      const r = await issueAgentCert(certsDir, name);
      return { ca: r.ca, cert: r.cert, key: r.key };
    },
  };
}

export function writeControllerYaml(dir: string, port: number, extra = ''): string {
  const file = path.join(dir, 'controller.yaml');
  writeFileSync(
    file,
    `listen: 127.0.0.1:${port}
tls: { ca: certs/ca.crt, cert: certs/controller.crt, key: certs/controller.key }
catalog: state/catalog.db
store: store
${extra}`,
  );
  return file;
}

export async function createTokenLocal(configFile: string, name: string, role: 'admin' | 'viewer'): Promise<string> {
  const r = await run([CONTROLLER_MAIN, '--config', configFile, 'token', 'create', '--role', role, '--name', name]);
  if (r.code !== 0) throw new Error(`token create failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}

export interface ControllerProc {
  proc: ChildProcess;
  port: number;
  address: string;
  output(): string;
  /** Port of the metrics server once it logged "metrics listening". */
  metricsPort(): number | undefined;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function startController(configFile: string): Promise<ControllerProc> {
  const proc = spawn(process.execPath, [CONTROLLER_MAIN, '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const port = await new Promise<number>((resolve, reject) => {
    // 60 s: a loaded machine (2 cores, many test files) has taken more than 20 s to start one
    const t = setTimeout(() => reject(new Error(`controller did not start within 60 s:\n${out}`)), 60_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"port":(\d+)[^\n]*"msg":"controller listening"/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    void exited.then((x) => {
      clearTimeout(t);
      reject(new Error(`controller exited (${x.code ?? x.signal}) before listening:\n${out}`));
    });
  });
  return {
    proc,
    port,
    address: `127.0.0.1:${port}`,
    output: () => out,
    metricsPort: () => {
      const m = /"port":(\d+)[^\n]*"msg":"metrics listening"/.exec(out);
      return m ? Number(m[1]) : undefined;
    },
    exited,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** Run the boxback CLI against a controller. */
export function cli(
  args: string[],
  env: { controller: string; ca: string; token?: string },
  extraEnv: Record<string, string> = {},
): Promise<RunResult> {
  return run([CLI_MAIN, ...args], { env: cliEnv(env, extraEnv) });
}

/** The environment `cli` runs the CLI with (for tests that spawn it themselves, e.g. in a pipeline). */
export function cliEnv(env: { controller: string; ca: string; token?: string }, extraEnv: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    BOXBACK_CONTROLLER: env.controller,
    BOXBACK_CA: env.ca,
    BOXBACK_TOKEN: env.token ?? '',
    BOXBACK_CONFIG: '',
    ...extraEnv,
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until<T>(
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20_000,
  what = 'condition',
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
