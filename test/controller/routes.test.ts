// The route table is the one source of every call's role and audit: every ControllerService
// RPC in the proto has exactly one entry (and no entry lacks an RPC), roles are ordered
// viewer < operator < admin, and everything that changes state is audited.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger, loadServices, serverStream, tokenClientCredentials, unary } from '@boxback/common';
import { httpRoutes, matchApi, type HttpRoute } from '../../packages/controller/src/api/http-adapter.js';
import { ROUTES, roleAllows, routeFor, routeList, type Route } from '../../packages/controller/src/api/routes.js';
import { createToken } from '../../packages/controller/src/auth.js';
import { loadControllerConfig } from '../../packages/controller/src/config.js';
import { ControllerServer } from '../../packages/controller/src/server.js';
import { makeCerts, writeControllerYaml } from './helpers.js';

const rpcs = () => {
  const svc = loadServices().ControllerService.service as Record<string, { responseStream: boolean }>;
  return Object.entries(svc).map(([name, d]) => ({ name, stream: d.responseStream }));
};

describe('route table', () => {
  it('has one entry per ControllerService RPC, streaming where the proto streams', () => {
    const names = rpcs().map((r) => r.name);
    expect(
      routeList()
        .map((r) => r.name)
        .sort(),
    ).toEqual([...names].sort());
    for (const r of rpcs()) expect(routeFor(r.name)?.kind, r.name).toBe(r.stream ? 'stream' : 'unary');
    expect(routeFor('constructor')).toBeUndefined();
    expect(routeFor('NoSuchCall')).toBeUndefined();
  });

  it('orders roles viewer < operator < admin', () => {
    expect(roleAllows('admin', 'operator')).toBe(true);
    expect(roleAllows('operator', 'operator')).toBe(true);
    expect(roleAllows('operator', 'admin')).toBe(false);
    expect(roleAllows('viewer', 'operator')).toBe(false);
    expect(roleAllows('root', 'viewer')).toBe(false);
  });

  it('audits every call that changes something, and needs more than viewer for it', () => {
    // a call that is not audited only reads: its name says so (Get, List, Watch)
    for (const r of routeList()) if (!r.audit) expect(r.name, r.name).toMatch(/^(Get|List|Watch)[A-Z]/);
    for (const r of routeList()) if (r.audit) expect(r.role, r.name).not.toBe('viewer');
    expect(ROUTES.RestoreBackup.role).toBe('admin');
    expect(ROUTES.CreateBackup.role).toBe('operator');
    expect(ROUTES.RestoreBackup.audit?.target({ backupId: 'a@1', targetHost: '', dryRun: true, force: false })).toBe(
      'a@1 -> (own host) (dry run)',
    );
  });
});

// Both adapters against one real controller (gRPC over TLS, HTTPS dashboard API): every RPC
// and every HTTP route map to the same entry, and a viewer's call of each entry ends with the
// same error code on both (PERMISSION_DENIED exactly where the entry needs more than viewer).
describe('gRPC and HTTP adapters', () => {
  let dir = '';
  let server: ControllerServer | undefined;
  let viewer = '';
  let ca = '';
  afterAll(async () => {
    await server?.shutdown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('list the same entries with the same roles', () => {
    const http = httpRoutes();
    expect(http.map((h) => h.route)).toEqual(routeList());
    for (const rpc of rpcs()) {
      const h = http.find((x) => x.path === `/api/v1/${rpc.name}`);
      expect(h, rpc.name).toBeDefined();
      expect(matchApi(h!.method, h!.path)).toBe(routeFor(rpc.name));
      expect(h!.method).toBe(rpc.stream ? 'GET' : 'POST');
    }
    expect(matchApi('GET', '/api/v1/RestoreBackup')).toBeUndefined();
  });

  it("refuse or allow a viewer's call of every entry alike", async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'bb-routes-'));
    const certs = await makeCerts(dir);
    ca = certs.ca;
    const yaml = writeControllerYaml(dir, 0, 'http: { listen: 127.0.0.1:0 }\n');
    server = await ControllerServer.start({ ...loadControllerConfig(yaml), pollSeconds: 3600 }, createLogger('test', 'silent'));
    viewer = (await createToken(server.ctx.catalog, 'vic', 'viewer')).token;
    const { ControllerService } = loadServices();
    const client = new ControllerService(`127.0.0.1:${server.port}`, tokenClientCredentials(ca, viewer), {});
    const agent = new https.Agent({ ca: readFileSync(ca), servername: 'controller' });
    const viaHttp = async (h: HttpRoute): Promise<string> => {
      const res = await fetchHttps(agent, server!.httpPort, h.method, h.path, viewer);
      return res.status === 200 ? 'ok' : (JSON.parse(res.body) as { code: string }).code;
    };
    const viaGrpc = async (r: Route): Promise<string> => {
      try {
        if (r.kind === 'stream') await serverStream(client, r.name, {}).next();
        else await unary(client, r.name, {}, { deadlineMs: 10_000 });
        return 'ok';
      } catch (err) {
        return (err as { code: string }).code;
      }
    };
    for (const h of httpRoutes()) {
      const [g, w] = [await viaGrpc(h.route), await viaHttp(h)];
      expect(w, h.route.name).toBe(g);
      expect(g === 'BOXBACK_ERR_PERMISSION_DENIED', h.route.name).toBe(h.route.role !== 'viewer');
    }
    client.close();
  });
});

function fetchHttps(agent: https.Agent, port: number, method: string, p: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: p,
        agent,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      },
      (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end(method === 'POST' ? '{}' : undefined);
  });
}
