/**
 * Restore test fixtures: a sample GoCD-like box with an AgentConfig whose identity
 * (hostname, addresses) is the box's, a JobContext recording progress, and the
 * restore request shape.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { createLogger, localStoreConfig, type RestoreRequest } from '@boxback/common';
import type { AgentConfig } from '../../packages/agent/src/config.js';
import type { JobContext, ProgressUpdate } from '../../packages/agent/src/job.js';
import { loadPlan, type Plan } from '../../packages/agent/src/plan.js';
import { createSampleBox, type SampleBox, type SampleBoxOptions } from '../../scripts/lib/sample-box.mjs';
import { freePort } from './backup-box.js';

export interface RestoreBox {
  box: SampleBox;
  config: AgentConfig;
  /** A config with the plan changed (health URL, owners...). */
  withPlan(fn: (p: Plan) => Plan): AgentConfig;
}

export async function restoreBox(
  o: Omit<SampleBoxOptions, 'port'> & { name: string; store: string; stateDir: string },
): Promise<RestoreBox> {
  const box = await createSampleBox({ artifacts: 30, testReports: 8, dbBytes: 512 * 1024, ...o, port: await freePort() });
  mkdirSync(o.stateDir, { recursive: true });
  const plan = loadPlan(box.planFile, [box.root]);
  const config: AgentConfig = Object.freeze({
    file: path.join(box.root, 'agent.yaml'),
    name: o.name,
    listen: '127.0.0.1:0',
    tls: { ca: '', cert: '', key: '' },
    store: localStoreConfig(o.store),
    stateDir: o.stateDir,
    planFile: box.planFile,
    plan,
    allowedRoots: [box.root],
    hostname: box.hostname,
    addresses: [box.address],
    allowedClients: [],
  });
  return { box, config, withPlan: (fn) => Object.freeze({ ...config, plan: fn(structuredClone(plan)) }) };
}

export function job(config: AgentConfig, jobId: string): { ctx: JobContext; events: ProgressUpdate[] } {
  const events: ProgressUpdate[] = [];
  const log = createLogger('test', process.env.BOXBACK_TEST_LOG ?? 'silent').child({ jobId });
  return { ctx: { config, log, jobId, signal: new AbortController().signal, emit: (u) => events.push(u) }, events };
}

export const restoreReq = (backupPath: string, over: Partial<RestoreRequest> = {}): RestoreRequest => ({
  jobId: '',
  backupPath,
  dryRun: false,
  force: false,
  backupId: '',
  ...over,
});

/** The stand-in writes its pid file before it listens: poll /health for up to 5 s. */
export async function healthySoon(box: { healthy(): Promise<boolean> }): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    if (await box.healthy()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}
