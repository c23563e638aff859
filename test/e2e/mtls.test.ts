// The agent talks only mutual TLS with certificates from the fleet CA: a plaintext
// client, a client without a certificate and a client whose certificate another CA signed
// are all refused over a real socket; the right certificate gets an answer.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { channelOptions, initCerts, issueAgentCert, loadServices, mutualClientCredentials, unary, type AgentInfo } from '@boxback/common';

const repo = path.resolve(import.meta.dirname, '../..');
const AGENT = path.join(repo, 'packages/agent/dist/main.js');

let dir: string;
let agent: ChildProcess;
let address: string;
let ours: { ca: string; cert: string; key: string };
let foreign: { ca: string; cert: string; key: string };

function writeAgentConfig(file: string, port: number, extra = ''): void {
  writeFileSync(
    file,
    `name: gocd1
listen: 127.0.0.1:${port}
tls: { ca: certs/ca.crt, cert: certs/agents/gocd1.crt, key: certs/agents/gocd1.key }
store: store
stateDir: state
plan: plan.yaml
allowedRoots: [${JSON.stringify(dir)}]
${extra}`,
  );
}

async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

function client(creds: grpc.ChannelCredentials): grpc.Client {
  const { AgentService } = loadServices();
  return new AgentService(address, creds, channelOptions('gocd1'));
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-mtls-'));
  const c = await initCerts(path.join(dir, 'certs'));
  await issueAgentCert(path.join(dir, 'certs'), 'gocd1');
  ours = { ca: c.ca, cert: c.cert, key: c.key };
  const f = await initCerts(path.join(dir, 'other-ca'));
  foreign = { ca: c.ca, cert: f.cert, key: f.key }; // trusts our CA, but presents a cert another CA signed
  mkdirSync(path.join(dir, 'data'));
  writeFileSync(
    path.join(dir, 'plan.yaml'),
    `name: tiny\ndatasets:\n  - { name: database, archive: db.zip, path: ${JSON.stringify(path.join(dir, 'data'))} }\n`,
  );
  const port = await freePort();
  address = `127.0.0.1:${port}`;
  writeAgentConfig(path.join(dir, 'agent.yaml'), port);
  agent = spawn(process.execPath, [AGENT, '--config', path.join(dir, 'agent.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    agent.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('agent listening')) resolve();
    });
    agent.on('exit', (code) => reject(new Error(`agent exited ${code}: ${out}`)));
  });
});

afterAll(async () => {
  agent?.kill('SIGTERM');
});

describe('agent mutual TLS', () => {
  it('answers a client with a certificate from the fleet CA', async () => {
    const info = await unary<object, AgentInfo>(client(mutualClientCredentials(ours)), 'GetInfo', {}, { what: 'agent gocd1' });
    expect(info.name).toBe('gocd1');
    expect(info.planName).toBe('tiny');
  });

  it('refuses a plaintext client', async () => {
    const err = await unary(client(grpc.credentials.createInsecure()), 'GetInfo', {}, { deadlineMs: 5000, what: 'agent gocd1' }).catch(
      (e) => e,
    );
    expect(err.code).toMatch(/BOXBACK_ERR_(UNREACHABLE|TLS)/);
  });

  it('refuses a TLS client without a certificate', async () => {
    const err = await unary(
      client(grpc.credentials.createSsl(Buffer.from(await readText(ours.ca)))),
      'GetInfo',
      {},
      { deadlineMs: 5000 },
    ).catch((e) => e);
    expect(err.code).toMatch(/BOXBACK_ERR_(UNREACHABLE|TLS)/);
  });

  it('refuses a client whose certificate another CA signed', async () => {
    const err = await unary(client(mutualClientCredentials(foreign)), 'GetInfo', {}, { deadlineMs: 5000 }).catch((e) => e);
    expect(err.code).toMatch(/BOXBACK_ERR_(UNREACHABLE|TLS)/);
  });

  it('writes private keys mode 0600', () => {
    for (const k of ['certs/ca.key', 'certs/controller.key', 'certs/agents/gocd1.key']) {
      expect((statSync(path.join(dir, k)).mode & 0o777).toString(8), k).toBe('600');
    }
  });
});

describe('agent config errors', () => {
  it('names the bad key, exits 2, prints no stack trace', () => {
    const bad = path.join(dir, 'bad.yaml');
    writeAgentConfig(bad, 1, 'allowedRoot: [/]\n');
    const r = spawnSync(process.execPath, [AGENT, '--config', bad], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/Unrecognized key.*allowedRoot/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('refuses a plan path outside allowedRoots with the key that names it', () => {
    const bad = path.join(dir, 'roots.yaml');
    writeFileSync(
      bad,
      `name: gocd1\nlisten: 127.0.0.1:1\ntls: { ca: a, cert: b, key: c }\nstore: s\nstateDir: t\nplan: plan.yaml\nallowedRoots: [/nonexistent]\n`,
    );
    const r = spawnSync(process.execPath, [AGENT, '--config', bad, '--check-config'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/datasets\.0\.path: .* is outside the agent's allowedRoots/);
  });
});

async function readText(f: string): Promise<string> {
  const fs = await import('node:fs/promises');
  return fs.readFile(f, 'utf8');
}
