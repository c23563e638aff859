/**
 * A sample GoCD-like box (scripts/lib/sample-box.mjs) ready for backup tests: the plan can be
 * edited per test, an agent config is written beside it, and `job()` builds a JobContext
 * that records every progress event, for calling runBackup directly.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { createLogger } from '@boxback/common';
import { loadAgentConfig, type AgentConfig } from '../../packages/agent/src/config.js';
import type { JobContext, ProgressUpdate } from '../../packages/agent/src/job.js';
import { createSampleBox, type SampleBox, type SampleBoxOptions } from '../../scripts/lib/sample-box.mjs';

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** A plan as parsed YAML: tests edit any key freely (the loader validates it afterwards). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type PlanDoc = Record<string, any>;

export interface BackupBox {
  dir: string;
  box: SampleBox;
  /** The local store's directory (with `store` given as a config object: that object, as YAML wrote it). */
  store: string;
  stateDir: string;
  planFile: string;
  name: string;
  config: AgentConfig;
  /** Rewrite the plan (parsed YAML) and reload the config. */
  editPlan(fn: (plan: PlanDoc) => void): AgentConfig;
  job(jobId?: string, signal?: AbortSignal): { ctx: JobContext; events: ProgressUpdate[] };
  cleanup(): Promise<void>;
}

export async function makeBackupBox(
  o: Partial<SampleBoxOptions> & { name?: string; store?: string | Record<string, unknown> } = {},
): Promise<BackupBox> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'boxback-bk-'));
  const port = await freePort();
  const box = await createSampleBox({ root: path.join(dir, 'box'), port, artifacts: 40, testReports: 10, ...o });
  const name = o.name ?? 'gocd1';
  const storeConfig = o.store ?? path.join(dir, 'store');
  const store = typeof storeConfig === 'string' ? storeConfig : JSON.stringify(storeConfig);
  const stateDir = path.join(dir, 'state');
  if (typeof storeConfig === 'string') mkdirSync(store, { recursive: true });
  const original = parse(readFileSync(box.planFile, 'utf8')) as PlanDoc;
  const planFile = path.join(dir, 'plan.yaml');
  const agentFile = path.join(dir, 'agent.yaml');
  const writeAgent = () =>
    writeFileSync(
      agentFile,
      stringify({
        name,
        listen: '127.0.0.1:0',
        tls: { ca: 'unused', cert: 'unused', key: 'unused' },
        store: storeConfig,
        stateDir,
        plan: planFile,
        allowedRoots: [box.root],
        identity: { hostname: 'gocd-box-1', addresses: ['10.20.0.11'] },
      }),
    );
  writeAgent();
  const bb: BackupBox = {
    dir,
    box,
    store,
    stateDir,
    planFile,
    name,
    config: undefined as unknown as AgentConfig,
    editPlan(fn) {
      const plan = structuredClone(original);
      fn(plan);
      writeFileSync(planFile, stringify(plan));
      bb.config = loadAgentConfig(agentFile);
      return bb.config;
    },
    job(jobId = `job-${Date.now().toString(36)}`, signal = new AbortController().signal) {
      const events: ProgressUpdate[] = [];
      const log = createLogger('test', process.env.BOXBACK_TEST_LOG ?? 'silent').child({ jobId });
      return { ctx: { config: bb.config, log, jobId, signal, emit: (u) => events.push(u) }, events };
    },
    async cleanup() {
      await box.stop().catch(() => undefined);
      // Retried: an agent killed with SIGKILL by the test leaves its `cp -a -l` (a link farm
      // being built) running for a moment, still adding entries (ENOTEMPTY, seen once in CI).
      rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    },
  };
  bb.editPlan(() => undefined);
  return bb;
}

export const req = (over: Partial<{ live: boolean; initiatedBy: string; initiatedVia: string; jobId: string }> = {}) => ({
  jobId: over.jobId ?? 'job',
  live: false,
  initiatedBy: 'alice',
  initiatedVia: 'cli',
  ...over,
});
