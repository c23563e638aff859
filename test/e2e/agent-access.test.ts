// Who may call a real agent, and what it may touch, over mutual TLS on a real socket:
//  - by default only the controller's certificate: another fleet certificate (an agent's made
//    the old way with clientAuth, or one issued with openssl for any name) is refused with
//    PERMISSION_DENIED naming it, and the backup it asked to delete is still there;
//  - an agent certificate as this version issues it (serverAuth only) cannot even complete
//    the TLS handshake as a client;
//  - even the controller cannot make an agent verify, delete or restore another host's part
//    of the store, except a restore for which it names that host as the source.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  certInfo,
  channelOptions,
  checkCerts,
  issueCert,
  loadServices,
  mutualClientCredentials,
  serverStream,
  unary,
  type JobEvent,
} from '@boxback/common';
import { startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { CLI_MAIN } from '../controller/helpers.js';

let dir: string;
let store: string;
let agent: AgentProcess;
const certs = () => path.join(dir, 'certs');
const ca = () => path.join(certs(), 'ca.crt');

function clientWith(cert: string, key: string): grpc.Client {
  const { AgentService } = loadServices();
  return new AgentService(`127.0.0.1:${agent.port}`, mutualClientCredentials({ ca: ca(), cert, key }), channelOptions('gocd1'));
}

function fakeBackup(host: string, ts: string): string {
  const d = path.join(store, host, `backup_${ts}`);
  mkdirSync(path.join(d, 'artifacts'), { recursive: true });
  writeFileSync(path.join(d, 'artifacts', 'a.txt'), 'precious');
  return d;
}

/** A certificate for `name` with clientAuth, signed by the fleet CA with the openssl CLI (not our code). */
function opensslClientCert(name: string): { cert: string; key: string } {
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.crt`);
  const ext = path.join(dir, `${name}.ext`);
  writeFileSync(ext, 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n');
  execFileSync('openssl', ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}/O=boxback`], {
    stdio: 'ignore',
  });
  execFileSync(
    'openssl',
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca(),
      '-CAkey',
      path.join(certs(), 'ca.key'),
      '-CAcreateserial',
      '-days',
      '30',
      '-extfile',
      ext,
      '-out',
      cert,
    ],
    { stdio: 'ignore' },
  );
  return { cert, key };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-access-'));
  store = path.join(dir, 'store');
  const data = path.join(dir, 'data');
  mkdirSync(data, { recursive: true });
  writeFileSync(path.join(data, 'db.txt'), 'db');
  const planFile = path.join(dir, 'plan.yaml');
  writeFileSync(planFile, `name: tiny\ndatasets:\n  - { name: database, archive: db.zip, path: ${JSON.stringify(data)} }\n`);
  agent = await startAgent({ dir, name: 'gocd1', planFile, store, allowedRoots: [dir] });
  await startAgent({ dir, name: 'gocd2', planFile, store, allowedRoots: [dir] }).then((a) => a.stop()); // issues gocd2's certificate
});

afterAll(async () => {
  await agent?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('an agent serves only the controller by default', () => {
  it('answers the controller certificate that certs init made', async () => {
    const info = await unary<object, { name: string }>(agent.client, 'GetInfo', {}, { deadlineMs: 5000 });
    expect(info.name).toBe('gocd1');
  });

  it('refuses a fleet certificate issued with openssl for another name: PERMISSION_DENIED naming it, nothing deleted', async () => {
    const b = fakeBackup('gocd1', '20261201-100000');
    const ops = opensslClientCert('ops');
    const err = await unary(
      clientWith(ops.cert, ops.key),
      'DeleteBackup',
      { backupPath: 'gocd1/backup_20261201-100000' },
      { deadlineMs: 5000 },
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BOXBACK_ERR_PERMISSION_DENIED' });
    expect((err as Error).message).toMatch(/certificate "ops" may not call agent gocd1: it serves only controller/);
    expect(readFileSync(path.join(b, 'artifacts', 'a.txt'), 'utf8')).toBe('precious');
    // and the agent's log says whom it refused (pino writes asynchronously: wait for the line)
    for (let i = 0; i < 40 && !/certificate \\"ops\\" may not call/.test(agent.output()); i++) await new Promise((r) => setTimeout(r, 100));
    expect(agent.output()).toMatch(/"rpc":"DeleteBackup","code":"BOXBACK_ERR_PERMISSION_DENIED","err":"certificate \\"ops\\" may not call/);
  });

  it('refuses an agent certificate made the old way (clientAuth too) by name, and also for a job', async () => {
    const b = fakeBackup('gocd1', '20261201-110000');
    const old = issueCert(
      { certPem: readFileSync(ca(), 'utf8'), keyPem: readFileSync(path.join(certs(), 'ca.key'), 'utf8') },
      'gocd2',
      [],
      'server+client',
    );
    writeFileSync(path.join(dir, 'old-gocd2.crt'), old.certPem);
    writeFileSync(path.join(dir, 'old-gocd2.key'), old.keyPem, { mode: 0o600 });
    const c = clientWith(path.join(dir, 'old-gocd2.crt'), path.join(dir, 'old-gocd2.key'));
    const err = await unary(c, 'DeleteBackup', { backupPath: 'gocd1/backup_20261201-110000' }, { deadlineMs: 5000 }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'BOXBACK_ERR_PERMISSION_DENIED' });
    expect((err as Error).message).toMatch(/certificate "gocd2" may not call agent gocd1/);
    expect(existsSync(b)).toBe(true);
    const events: JobEvent[] = [];
    const jobErr = await (async () => {
      for await (const ev of serverStream<object, JobEvent>(c, 'Backup', {
        jobId: 'evil',
        live: false,
        initiatedBy: 'x',
        initiatedVia: 'x',
      }))
        events.push(ev);
    })().catch((e: unknown) => e);
    expect(jobErr).toMatchObject({ code: 'BOXBACK_ERR_PERMISSION_DENIED' });
    expect(events).toEqual([]);
  });

  it("an agent's certificate as issued now cannot be used as a client at all (TLS refuses it)", async () => {
    const gocd2 = { cert: path.join(certs(), 'agents/gocd2.crt'), key: path.join(certs(), 'agents/gocd2.key') };
    expect(certInfo(readFileSync(gocd2.cert, 'utf8')).clientAuth).toBe(false);
    expect(certInfo(readFileSync(path.join(certs(), 'controller.crt'), 'utf8')).clientAuth).toBe(true);
    const b = fakeBackup('gocd1', '20261201-120000');
    const err = await unary(
      clientWith(gocd2.cert, gocd2.key),
      'DeleteBackup',
      { backupPath: 'gocd1/backup_20261201-120000' },
      { deadlineMs: 5000 },
    ).catch((e: unknown) => e);
    expect((err as { code: string }).code).toMatch(/BOXBACK_ERR_(UNREACHABLE|TLS)/);
    expect(existsSync(b)).toBe(true);
  });

  it('certs check names an old agent certificate and says how to re-issue it (the CLI exits 1)', () => {
    mkdirSync(path.join(dir, 'old-certs/agents'), { recursive: true });
    writeFileSync(path.join(dir, 'old-certs/controller.crt'), readFileSync(path.join(certs(), 'controller.crt')));
    writeFileSync(path.join(dir, 'old-certs/agents/gocd2.crt'), readFileSync(path.join(dir, 'old-gocd2.crt')));
    writeFileSync(path.join(dir, 'old-certs/agents/gocd1.crt'), readFileSync(path.join(certs(), 'agents/gocd1.crt')));
    const r = checkCerts(path.join(dir, 'old-certs'));
    expect(r.map((c) => [c.role, c.name, c.problem === ''])).toEqual([
      ['controller', 'controller', true],
      ['agent', 'gocd1', true],
      ['agent', 'gocd2', false],
    ]);
    expect(r[2].problem).toMatch(/usable as a client certificate .*boxback certs issue --dir .* --host gocd2/);
    const cli = spawnSync(process.execPath, [CLI_MAIN, 'certs', 'check', '--dir', path.join(dir, 'old-certs')], { encoding: 'utf8' });
    expect(cli.status).toBe(1);
    expect(cli.stdout).toMatch(/agent\s+gocd2\s+server\+client\s.*usable as a client certificate/);
    expect(cli.stdout).toMatch(/agent\s+gocd1\s+server\s.*ok/);
  });
});

describe('an agent touches only its own host part of the store', () => {
  it('refuses to delete or verify another host backup, even for the controller', async () => {
    const other = fakeBackup('gocd2', '20261201-130000');
    for (const rpc of ['DeleteBackup', 'VerifyBackup']) {
      const err = await unary(agent.client, rpc, { backupPath: 'gocd2/backup_20261201-130000' }, { deadlineMs: 5000 }).catch(
        (e: unknown) => e,
      );
      expect(err, rpc).toMatchObject({ code: 'BOXBACK_ERR_PERMISSION_DENIED' });
      expect((err as Error).message).toMatch(
        new RegExp(`agent gocd1 refuses to ${rpc === 'DeleteBackup' ? 'delete' : 'verify'} gocd2/backup_20261201-130000: an agent may`),
      );
    }
    expect(readFileSync(path.join(other, 'artifacts', 'a.txt'), 'utf8')).toBe('precious');
  });

  it('deletes its own backup for the controller', async () => {
    const own = fakeBackup('gocd1', '20261201-140000');
    const r = await unary<object, { deleted: boolean }>(
      agent.client,
      'DeleteBackup',
      { backupPath: 'gocd1/backup_20261201-140000' },
      { deadlineMs: 5000 },
    );
    expect(r.deleted).toBe(true);
    expect(existsSync(own)).toBe(false);
  });

  it('reads another host backup for a restore only when the controller names that host as its source', async () => {
    fakeBackup('gocd2', '20261201-150000');
    const restore = (sourceHost: string) =>
      (async () => {
        for await (const ev of serverStream<object, JobEvent>(agent.client, 'Restore', {
          jobId: `r-${sourceHost || 'none'}`,
          backupPath: 'gocd2/backup_20261201-150000',
          dryRun: true,
          force: false,
          backupId: 'gocd2@20261201-150000',
          sourceHost,
        }))
          if (ev.result) return ev.result;
        return undefined;
      })().catch((e: unknown) => e);
    for (const src of ['', 'gocd3']) {
      const err = await restore(src);
      expect(err, src).toMatchObject({ code: 'BOXBACK_ERR_PERMISSION_DENIED' });
      expect((err as Error).message).toMatch(
        /refuses to restore gocd2\/backup_20261201-150000: a restore reads another host's backup only when the controller names that host/,
      );
    }
    // Named: the agent reads it (this fake has no manifest, so the restore's VERIFY says so).
    const named = (await restore('gocd2')) as { status: string; errorMessage: string };
    expect(named.status).toBe('Failed');
    expect(named.errorMessage).toMatch(/manifest/);
  });
});
