// Tokens and roles over a real TLS socket on 127.0.0.1:0: no token and unknown tokens are
// UNAUTHENTICATED, a viewer may read but a viewer's restore is PERMISSION_DENIED with an
// actionable message, every mutating call (and every refused one) is in the audit log,
// and grpc.health.v1 reports SERVING.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, loadServices, tokenClientCredentials, unary } from '@boxback/common';
import { createToken } from '../../packages/controller/src/auth.js';
import { loadControllerConfig } from '../../packages/controller/src/config.js';
import { ControllerServer } from '../../packages/controller/src/server.js';
import { makeCerts, writeControllerYaml } from './helpers.js';

let dir: string;
let server: ControllerServer;
let address: string;
let ca: string;
let adminToken: string;
let viewerToken: string;

function client(token?: string): grpc.Client {
  const { ControllerService } = loadServices();
  return new ControllerService(address, tokenClientCredentials(ca, token), {});
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-auth-'));
  const certs = await makeCerts(dir);
  ca = certs.ca;
  const config = { ...loadControllerConfig(writeControllerYaml(dir, 0)), pollSeconds: 3600 };
  server = await ControllerServer.start(config, createLogger('test', 'silent'));
  address = `127.0.0.1:${server.port}`;
  adminToken = (await createToken(server.ctx.catalog, 'alice', 'admin')).token;
  viewerToken = (await createToken(server.ctx.catalog, 'ci-bot', 'viewer')).token;
  // a restorable backup for the viewer to try to restore
  await server.ctx.catalog.addHost({
    name: 'gocd1',
    address: '127.0.0.1:1',
    group: '',
    rpoSeconds: 0,
    planName: '',
    product: '',
    productVersion: '',
    agentVersion: '',
    lastSeenMs: 0,
    createdAtMs: 1,
  });
  await server.ctx.catalog.putBackup({
    id: 'gocd1@20261121-201000',
    host: 'gocd1',
    createdAtMs: 1,
    sizeBytes: 1,
    consistency: 'quiesced',
    status: 'Completed',
    verifiedAtMs: 0,
    verifyFailed: false,
    path: 'gocd1/backup_20261121-201000',
    productVersion: '',
    jobId: '',
    origin: 'boxback',
    manifestJson: '{}',
    quiesceWindowMs: 0,
    fileCount: 1,
    warningCount: 0,
    errorCount: 0,
    errorMessage: '',
  });
});

afterAll(async () => {
  await server?.shutdown();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('tokens and roles', () => {
  it('refuses a call without a token: UNAUTHENTICATED', async () => {
    const c = client();
    await expect(unary(c, 'ListBackups', {})).rejects.toMatchObject({
      code: 'BOXBACK_ERR_UNAUTHENTICATED',
      message: expect.stringMatching(/no token given/),
    });
    c.close();
  });

  it('refuses an unknown token: UNAUTHENTICATED', async () => {
    const c = client('bbx_not-a-real-token');
    await expect(unary(c, 'GetStatus', {})).rejects.toMatchObject({ code: 'BOXBACK_ERR_UNAUTHENTICATED' });
    c.close();
  });

  it('lets a viewer read', async () => {
    const c = client(viewerToken);
    const r = await unary<object, { backups: { id: string; restorable: boolean }[] }>(c, 'ListBackups', {});
    expect(r.backups).toEqual([expect.objectContaining({ id: 'gocd1@20261121-201000', restorable: true })]);
    const s = await unary<object, { totalHosts: number }>(c, 'GetStatus', {});
    expect(s.totalHosts).toBe(1);
    c.close();
  });

  it("refuses a viewer's restore with PERMISSION_DENIED and a clear message", async () => {
    const c = client(viewerToken);
    const call = new Promise<grpc.ServiceError>((resolve) => {
      (c as unknown as Record<string, (...a: unknown[]) => void>).RestoreBackup.call(
        c,
        { backupId: 'gocd1@20261121-201000' },
        (err: grpc.ServiceError) => resolve(err),
      );
    });
    const err = await call;
    expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(err.details).toBe('role viewer may not restore backups; ask an admin for an admin token');
    await expect(unary(c, 'AddHost', { name: 'x', address: '127.0.0.1:2', skipCheck: true })).rejects.toMatchObject({
      code: 'BOXBACK_ERR_PERMISSION_DENIED',
    });
    await expect(unary(c, 'CreateToken', { name: 'sneaky', role: 'admin' })).rejects.toMatchObject({
      code: 'BOXBACK_ERR_PERMISSION_DENIED',
    });
    c.close();
  });

  it('lets an admin mutate, create tokens, and records everything in the audit log', async () => {
    const c = client(adminToken);
    const h = await unary<object, { name: string }>(c, 'AddHost', { name: 'gocd2', address: '127.0.0.1:2', group: 'ci', skipCheck: true });
    expect(h.name).toBe('gocd2');
    const t = await unary<object, { token: string; role: string }>(c, 'CreateToken', { name: 'bob', role: 'viewer' });
    expect(t.token).toMatch(/^bbx_/);
    expect(t.role).toBe('viewer');
    const tokens = await unary<object, { tokens: { name: string }[] }>(c, 'ListTokens', {});
    expect(tokens.tokens.map((x) => x.name)).toEqual(['alice', 'bob', 'ci-bot']);
    const audit = await unary<object, { entries: { who: string; action: string; target: string; result: string }[] }>(c, 'ListAudit', {});
    expect(audit.entries).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ who: 'alice', action: 'AddHost', target: 'gocd2', result: 'ok' }),
        expect.objectContaining({ who: 'alice', action: 'CreateToken', target: 'bob (viewer)', result: 'ok' }),
        expect.objectContaining({ who: 'ci-bot', action: 'RestoreBackup', result: 'BOXBACK_ERR_PERMISSION_DENIED' }),
      ]),
    );
    c.close();
  });

  it('lets an operator verify but not restore, and tells a viewer which role backs up', async () => {
    const operatorToken = (await createToken(server.ctx.catalog, 'olga', 'operator')).token;
    const op = client(operatorToken);
    // past the role check: the store is not mounted here and the agent at 127.0.0.1:1 does not answer
    await expect(unary(op, 'VerifyBackup', { backupId: 'gocd1@20261121-201000' })).rejects.toMatchObject({
      code: 'BOXBACK_ERR_UNREACHABLE',
    });
    await expect(unary(op, 'RestoreBackup', { backupId: 'gocd1@20261121-201000' })).rejects.toMatchObject({
      code: 'BOXBACK_ERR_PERMISSION_DENIED',
      message: 'role operator may not restore backups; ask an admin for an admin token',
    });
    op.close();
    const v = client(viewerToken);
    await expect(unary(v, 'CreateBackup', { hosts: ['gocd1'] })).rejects.toMatchObject({
      code: 'BOXBACK_ERR_PERMISSION_DENIED',
      message: 'role viewer may not create backups; ask an admin for an operator token',
    });
    v.close();
    const audit = await server.ctx.catalog.listAudit(20);
    expect(audit).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          who: 'olga',
          action: 'VerifyBackup',
          target: 'gocd1@20261121-201000',
          result: 'BOXBACK_ERR_UNREACHABLE',
        }),
        expect.objectContaining({ who: 'olga', action: 'RestoreBackup', result: 'BOXBACK_ERR_PERMISSION_DENIED' }),
        expect.objectContaining({ who: 'ci-bot', action: 'CreateBackup', target: 'gocd1', result: 'BOXBACK_ERR_PERMISSION_DENIED' }),
      ]),
    );
  });

  it('serves grpc.health.v1 as SERVING', async () => {
    const def = protoLoader.loadSync(healthProtoPath, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } };
    const h = new pkg.grpc.health.v1.Health(address, tokenClientCredentials(ca));
    const res = await new Promise<{ status: string }>((resolve, reject) =>
      (h as unknown as Record<string, (...a: unknown[]) => void>).Check.call(
        h,
        { service: 'boxback.v1.ControllerService' },
        (err: Error | null, r: { status: string }) => (err ? reject(err) : resolve(r)),
      ),
    );
    expect(res.status).toBe('SERVING');
    h.close();
  });

  it('refuses a plaintext client', async () => {
    const { ControllerService } = loadServices();
    const c = new ControllerService(address, grpc.credentials.createInsecure());
    await expect(unary(c, 'GetStatus', {}, { deadlineMs: 3000 })).rejects.toMatchObject({ code: 'BOXBACK_ERR_UNREACHABLE' });
    c.close();
  });
});
