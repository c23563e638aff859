import type { ChildProcess } from 'node:child_process';
import type * as grpc from '@grpc/grpc-js';

export const AGENT_MAIN: string;

export interface StartAgentOptions {
  /** Working directory for certs, config, state and logs. */
  dir: string;
  name: string;
  planFile: string;
  /** A local store's directory, or a store config (`{ kind: 's3', ... }`). */
  store: string | Record<string, unknown>;
  allowedRoots: string[];
  identity?: { hostname?: string; addresses?: string[] };
  /** Defaults to `<dir>/state-<name>`. */
  stateDir?: string;
  /** Extra agent.yaml keys (allowedClients...). */
  extraConfig?: Record<string, unknown>;
  env?: Record<string, string>;
  /** How long to wait for the agent to listen (ms). */
  startTimeoutMs?: number;
  /** Extra node flags (the bench's --cpu-prof). */
  nodeArgs?: string[];
  /** Called with the child as soon as it is spawned (the bench tracks it to stop it on a signal). */
  onSpawn?: (proc: ChildProcess) => void;
}

export interface ProcessMemory {
  rssBytes: number;
  hwmBytes: number;
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
  /** The first log line matching `re` (from offset `from` of output()); throws on timeout or exit. */
  waitForLog(re: RegExp, o?: { timeoutMs?: number; from?: number }): Promise<string>;
  /** Its RSS and peak RSS now. */
  memory(): ProcessMemory;
  /** SIGTERM and wait for the exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Send a signal and wait for the exit. */
  kill(signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function processMemory(pid: number | undefined): ProcessMemory;
export function resetPeakMemory(pid: number | undefined): boolean;
export function startAgentDaemon(o: StartAgentOptions): Promise<AgentProcess>;
