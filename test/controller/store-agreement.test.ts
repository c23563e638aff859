// The catalog and the store agree, with the real controller daemon, its SQLite catalog, a
// store directory, a real webhook receiver and the real `boxback` CLI:
//  - a complete backup in the store that the catalog never heard of (its agent was killed
//    just after PUBLISH; its job was recorded Failed/UNREACHABLE) is adopted when the
//    controller starts, and the job is corrected to Completed with a note in its log;
//  - when that backup's directory is deleted from the store, `status --refresh` notices: the
//    backup is no longer Restorable, the host is AT RISK, and a "damaged" webhook fires.
import { rmSync, mkdtempSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@boxback/common';
import { freePort, startCluster } from '../../scripts/lib/cluster.mjs';
import { openCatalog } from '../../packages/controller/src/catalog/open.js';
import { loadControllerConfig } from '../../packages/controller/src/config.js';
import { writeFakeBackup } from '../helpers/fake-backup.mjs';

type Cluster = Awaited<ReturnType<typeof startCluster>>;
let dir: string;
let cluster: Cluster;
let hook: http.Server;
let metricsPort = 0;
const lastSuccess = async () =>
  /^boxback_last_success_timestamp_seconds\{host="gocd1"\} (\S+)$/m.exec(
    await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text(),
  )?.[1];
const received: Array<Record<string, unknown>> = [];
let made: { rel: string; manifest: { id: string; createdAt: string } };
const JOB = 'backup-killed-after-publish';

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function json<T>(args: string[]): Promise<T> {
  const r = await cluster.cli(['--json', ...args]);
  if (r.code !== 0 && !r.stdout.trim()) throw new Error(`boxback ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-agree-'));
  hook = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      received.push(JSON.parse(body) as Record<string, unknown>);
      res.end('ok');
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', () => r()));
  const port = (hook.address() as { port: number }).port;
  cluster = await startCluster({
    dir,
    controllerExtra: `notify: { webhooks: [ { url: "http://127.0.0.1:${port}/hook", events: [damaged, at-risk], retries: 0 } ], atRiskCheckSeconds: 1 }
metrics: { listen: 127.0.0.1:${(metricsPort = await freePort())} }\n`,
  });
  const add = await cluster.cli(['hosts', 'add', 'gocd1', '--address', '127.0.0.1:1', '--skip-check']);
  expect(add.code, add.stderr).toBe(0);
  // The controller is down while the agent publishes and the job is left Failed (UNREACHABLE).
  await cluster.controller.stop();
  const config = loadControllerConfig(cluster.controllerYaml);
  const catalog = await openCatalog(config, createLogger('test', 'silent'));
  const started = Date.now() - 5_000;
  made = await writeFakeBackup(cluster.store, 'gocd1');
  await catalog.createJob({
    id: JOB,
    kind: 'backup',
    host: 'gocd1',
    state: 'Failed',
    phase: 'PUBLISH',
    progressJson: '',
    requestedBy: 'quickstart-admin',
    createdAtMs: started,
    startedAtMs: started,
    endedAtMs: Date.now() + 1_000,
    errorCode: 'BOXBACK_ERR_UNREACHABLE',
    errorMessage: 'agent gocd1 at 127.0.0.1:1 did not answer',
    backupId: '',
    warningCount: 0,
    dryRunReport: '',
    paramsJson: '{}',
    resultJson: '',
    schedule: '',
    slotMs: 0,
    attempt: 0,
    owner: '',
  });
  await catalog.close();
  await cluster.restartController();
});

afterAll(async () => {
  await cluster?.stop();
  hook?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface BackupMsg {
  id: string;
  restorable: boolean;
  damaged: boolean;
  damage: string;
}

describe('the catalog and the store agree', () => {
  it('adopts an uncatalogued complete backup on start-up and corrects its job with a note', async () => {
    const b = await until('the adopted backup', async () =>
      (await json<BackupMsg[]>(['backups', '--host', 'gocd1'])).find((x) => x.id === made.manifest.id),
    );
    expect(b.restorable).toBe(true);
    const job = await json<{ state: string; backupId: string; errorCode: string | null }>(['job', 'get', JOB]);
    expect(job).toMatchObject({ state: 'Completed', backupId: made.manifest.id, errorCode: null });
    const logs = await cluster.cli(['job', 'logs', JOB]);
    expect(logs.stdout).toMatch(
      /corrected by the store reconcile: backup gocd1@\S+ was found complete in the store after this job was recorded Failed \(BOXBACK_ERR_UNREACHABLE: agent gocd1 at 127\.0\.0\.1:1 did not answer\)/,
    );
    const status = await json<{ hosts: Array<{ atRisk: boolean }> }>(['status']);
    expect(status.hosts[0].atRisk).toBe(false);
    const m = await until('the adopted backup in the metrics', async () => ((await lastSuccess()) ? await lastSuccess() : undefined));
    expect(Number(m)).toBeCloseTo(Date.parse(made.manifest.createdAt) / 1000, 0);
  });

  it('notices a deleted store directory: not Restorable, AT RISK, and a webhook', async () => {
    rmSync(path.join(cluster.store, made.rel), { recursive: true, force: true });
    const r = await cluster.cli(['status', '--refresh']);
    expect(r.stdout).toMatch(/AT RISK/);
    const b = (await json<BackupMsg[]>(['backups', '--host', 'gocd1'])).find((x) => x.id === made.manifest.id)!;
    expect(b.restorable).toBe(false);
    expect(b.damaged).toBe(true);
    expect(b.damage).toMatch(new RegExp(`^missing from the store: ${made.rel} is gone`));
    const damaged = await until('the damaged webhook', async () => received.find((m) => m.event === 'damaged'));
    expect(damaged).toMatchObject({ host: 'gocd1', backupId: made.manifest.id });
    expect(String(damaged.message)).toMatch(/missing from the store/);
    // and the metrics no longer call it the host's last success (refreshed every 5 s)
    await until('the metrics to drop it', async () => ((await lastSuccess()) === undefined ? true : undefined), 15_000);
  });
});
