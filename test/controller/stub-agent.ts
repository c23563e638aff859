/**
 * A scriptable AgentService for controller tests, served over real mutual TLS on
 * 127.0.0.1:0 with a certificate from the test CA. It does what the controller needs to
 * see (progress events, a result, a complete backup directory with manifest.json in the
 * shared store) without touching any service, so tests can hold a job open, count how
 * many run at once, or keep a job going while the controller is killed. The real agent is
 * exercised by test/e2e.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { emptyProgress, emptyResult, loadServices, serverCredentials, type JobEvent } from '@boxback/common';
import type { Certs } from './helpers.js';
import { writeFakeBackup } from '../helpers/fake-backup.mjs';

export interface StubAgent {
  name: string;
  address: string;
  /** Backups running now, and the most ever at once. */
  running: Set<string>;
  maxConcurrent: number;
  /** Let every held job finish. */
  releaseAll(): void;
  /** Hold new jobs until releaseAll() (default: run for `backupMs`). */
  hold: boolean;
  stop(): Promise<void>;
  /** Drop off the network at once, leaving held jobs unfinished (a crashed box). */
  kill(): void;
  /** The certificate name of each GetInfo's caller, as the real agent reads it (access.ts checkCaller). */
  callers: string[];
}

/** Counts backups in flight across several stub agents. */
export interface FleetTracker {
  now: number;
  max: number;
}

export async function startStubAgent(o: {
  name: string;
  certs: Certs;
  store: string;
  backupMs?: number;
  hold?: boolean;
  tracker?: FleetTracker;
  /** A certificate to serve with (one whose SANs name many stub agents saves a key per agent). */
  tls?: { ca: string; cert: string; key: string };
}): Promise<StubAgent> {
  const tls = o.tls ?? (await o.certs.agent(o.name));
  const server = new grpc.Server();
  const waiters: Array<() => void> = [];
  let currentJob = '';
  let dead = false;
  const stub: StubAgent = {
    name: o.name,
    address: '',
    running: new Set(),
    maxConcurrent: 0,
    callers: [],
    hold: Boolean(o.hold),
    releaseAll: () => waiters.splice(0).forEach((w) => w()),
    kill: () => {
      dead = true;
      server.forceShutdown();
    },
    stop: () =>
      new Promise<void>((resolve) => {
        stub.releaseAll();
        server.tryShutdown(() => resolve());
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2_000).unref();
      }),
  };
  const wait = () => (stub.hold ? new Promise<void>((r) => waiters.push(r)) : new Promise<void>((r) => setTimeout(r, o.backupMs ?? 200)));

  const { AgentService } = loadServices();
  server.addService(AgentService.service, {
    GetInfo: (call: grpc.ServerUnaryCall<unknown, object>, cb: grpc.sendUnaryData<object>) => {
      stub.callers.push(String(call.getAuthContext()?.sslPeerCertificate?.subject?.CN ?? ''));
      cb(null, {
        name: o.name,
        agentVersion: 'stub-1',
        hostname: o.name,
        addresses: ['127.0.0.1'],
        planName: 'stub',
        product: 'generic',
        productVersion: '1.0',
        runningJobId: currentJob,
        runningJobKind: currentJob ? 'backup' : '',
        runningProgress: currentJob ? { ...emptyProgress(currentJob, 'BACKUP_DATABASE'), state: 'running' } : null,
        safetyCopies: [],
      });
    },
    Backup: (call: grpc.ServerWritableStream<{ jobId: string }, JobEvent>) => {
      void (async () => {
        const jobId = call.request.jobId;
        currentJob = jobId;
        stub.running.add(jobId);
        stub.maxConcurrent = Math.max(stub.maxConcurrent, stub.running.size);
        if (o.tracker) o.tracker.max = Math.max(o.tracker.max, ++o.tracker.now);
        const write = (ev: JobEvent) => {
          if (!call.cancelled) call.write(ev);
        };
        write({
          progress: { ...emptyProgress(jobId, 'BACKUP_DATABASE'), state: 'running', bytesTotal: 100, bytesDone: 10, etaSeconds: 1 },
        });
        await wait();
        if (dead) return;
        // the job goes on even when the controller went away
        if (o.tracker) o.tracker.now--;
        const b = await writeFakeBackup(o.store, o.name);
        stub.running.delete(jobId);
        currentJob = '';
        write({ progress: { ...emptyProgress(jobId, 'BACKUP_DATABASE'), state: 'done', bytesTotal: 100, bytesDone: 100 } });
        write({
          result: {
            ...emptyResult(jobId),
            status: 'Completed',
            backupId: b.manifest.id,
            backupPath: b.rel,
            sizeBytes: b.manifest.totals.bytes,
            manifestJson: b.json,
            durationMs: 5,
          },
        });
        if (!call.cancelled) call.end();
      })().catch((err: Error) => {
        if (!dead && !call.cancelled) call.emit('error', { code: grpc.status.INTERNAL, details: err.message });
      });
    },
    Restore: (call: grpc.ServerWritableStream<{ jobId: string; backupId: string; dryRun: boolean }, JobEvent>) => {
      const r = call.request;
      call.write({ progress: { ...emptyProgress(r.jobId, 'RESTORE_DATABASE'), state: 'done' } });
      call.write({
        result: {
          ...emptyResult(r.jobId),
          status: 'Completed',
          backupId: r.backupId,
          dryRunReport: r.dryRun ? 'would restore db.zip' : '',
        },
      });
      call.end();
    },
    VerifyBackup: (_c: unknown, cb: grpc.sendUnaryData<object>) =>
      cb(null, { ok: true, filesChecked: 1, bytesChecked: 1, problems: [], durationMs: 1 }),
    DeleteBackup: (call: grpc.ServerUnaryCall<{ backupPath: string }, object>, cb: grpc.sendUnaryData<object>) => {
      fsp.rm(path.join(o.store, ...call.request.backupPath.split('/')), { recursive: true, force: true }).then(
        () => cb(null, { deleted: true, freedBytes: 1 }),
        (err: Error) => cb(err),
      );
    },
    ConfirmRestore: (_c: unknown, cb: grpc.sendUnaryData<object>) => cb(null, { removed: 1, freedBytes: 10 }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', serverCredentials(tls, true), (err, p) => (err ? reject(err) : resolve(p))),
  );
  stub.address = `127.0.0.1:${port}`;
  return stub;
}
