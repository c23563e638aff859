// A throwaway single-node Ceph with an S3 gateway, for the tests and the bench (see
// ECOSYSTEM.md, radosgw row). Plain ESM so that bench/*.mjs can use it; test/helpers/radosgw.ts
// re-exports it with the vitest-only pieces (sharedRadosgw), and radosgw.d.mts types it.
//   1. mkdtemp (under `parent`, default the OS temp dir); free loopback ports for the mon
//      (v2 + v1) and the gateway
//   2. ceph.conf: memstore osd sized `memBytes`, pool size 1, auth none, crc messenger mode for radosgw
//   3. monmaptool --create, ceph-mon --mkfs, ceph-mon -f
//   4. ceph osd new, ceph-osd --mkfs, ceph-osd -f
//   5. radosgw -n client.rgw.a -f; wait until its port answers HTTP
//   6. radosgw-admin user create (fixed test keys)
// Every daemon is handed to `onSpawn` as soon as it is spawned (the bench tracks them, so a
// signal stops them); its command line names the cluster's ceph.conf, inside the temp dir.
// stop() kills the three daemons by pid and removes the directory. Starting takes ~15-20 s, so
// the suite starts it once per run (test/helpers/radosgw-setup.ts, vitest globalSetup) and every
// S3 test file reads the endpoint from inject('radosgw').
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';

const execFileP = promisify(execFile);

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function cephConf(dir, fsid, p, memBytes) {
  return `[global]
fsid = ${fsid}
mon host = [v2:127.0.0.1:${p.v2},v1:127.0.0.1:${p.v1}]
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
osd crush chooseleaf type = 0
osd objectstore = memstore
# a killed radosgw leaves its watch on the cache-notify objects: with the default 30 s every
# notify the other gateway sends (a new bucket, a quota change) waits out that dead watch
osd client watch timeout = 5
memstore device bytes = ${memBytes}
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
mon data = ${dir}/mon/$id
osd data = ${dir}/osd/$id
keyring = ${dir}/keyring
debug ms = 0
mon cluster log file = ${dir}/log/cluster.log

[client.rgw.a]
# tcp_nodelay: without it beast sends a response's body after its headers only once they are
# acknowledged, and the client delays that ACK: every GET, LIST and multi-object DELETE took
# 40-48 ms on loopback (HEAD and PUT, with no response body, 3-10 ms). restic's requests and
# ours alike; docs/design/store-s3-performance.md, session 22.
rgw frontends = beast endpoint=127.0.0.1:${p.rgw} tcp_nodelay=1
ms mon client mode = crc
ms client mode = crc
rgw data = ${dir}/rgw
rgw bucket quota ttl = 0
rgw user quota bucket sync interval = 0
rgw user quota sync interval = 0
rgw dns name = 127.0.0.1
log file = ${dir}/log/rgw.log
`;
}

function daemon(argv, onSpawn) {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'ignore'], detached: false });
  child.on('error', () => {});
  onSpawn?.(child);
  return child;
}

async function ceph(conf, args, timeoutMs = 30_000) {
  const { stdout } = await execFileP('ceph', ['-c', conf, '--connect-timeout', '20', ...args], { timeout: timeoutMs });
  return stdout;
}

export async function rgwAdmin(conf, args) {
  const { stdout } = await execFileP('radosgw-admin', ['-c', conf, '-n', 'client.rgw.a', ...args], { timeout: 60_000 });
  return stdout;
}

async function waitFor(what, deadlineMs, probe) {
  const until = Date.now() + deadlineMs;
  for (;;) {
    if (await probe().catch(() => false)) return;
    if (Date.now() > until) throw new Error(`radosgw harness: ${what} not ready after ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function httpAnswers(port) {
  const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(1000) });
  return res.status > 0;
}

async function killAndWait(child) {
  if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', () => r()));
  child.kill('SIGKILL');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
}

export const TEST_ACCESS_KEY = 'BOXBACKTESTACCESSKEY';
export const TEST_SECRET_KEY = 'boxbacktestsecretkey0123456789abcdefghij';

/** Is Ceph's S3 gateway installed (radosgw, ceph-mon, ceph-osd on the PATH)? */
export async function radosgwInstalled() {
  for (const cmd of ['radosgw', 'ceph-mon', 'ceph-osd', 'monmaptool', 'radosgw-admin']) {
    const found = await execFileP('sh', ['-c', `command -v ${cmd}`]).then(
      () => true,
      () => false,
    );
    if (!found) return false;
  }
  return true;
}

/** Start mon + osd + radosgw in a temp dir and create the test user. */
export async function startRadosgw(opts = {}) {
  const parent = opts.parent ?? os.tmpdir();
  mkdirSync(parent, { recursive: true });
  const dir = mkdtempSync(path.join(parent, 'bb-rgw-'));
  for (const d of ['run', 'log', 'mon', 'osd', 'rgw']) mkdirSync(path.join(dir, d));
  const ports = { v2: await freePort(), v1: await freePort(), rgw: await freePort() };
  const fsid = randomUUID();
  const conf = path.join(dir, 'ceph.conf');
  writeFileSync(conf, cephConf(dir, fsid, ports, opts.memBytes ?? 2 * 1024 ** 3));
  const children = [];
  let rgw;
  const pids = () => [rgw, ...children].filter((c) => c?.pid).map((c) => c.pid);
  const stop = async () => {
    await killAndWait(rgw);
    for (const c of children.reverse()) await killAndWait(c);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const monmap = path.join(dir, 'monmap');
    await execFileP('monmaptool', [
      '--create',
      '--fsid',
      fsid,
      '--addv',
      'a',
      `[v2:127.0.0.1:${ports.v2},v1:127.0.0.1:${ports.v1}]`,
      monmap,
    ]);
    await execFileP('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', monmap]);
    children.push(daemon(['ceph-mon', '-c', conf, '-i', 'a', '-f'], opts.onSpawn));
    const osdUuid = randomUUID();
    const osdId = (await ceph(conf, ['osd', 'new', osdUuid], 60_000)).trim();
    mkdirSync(path.join(dir, 'osd', osdId), { recursive: true });
    await execFileP('ceph-osd', ['-c', conf, '-i', osdId, '--mkfs', '--osd-uuid', osdUuid]);
    children.push(daemon(['ceph-osd', '-c', conf, '-i', osdId, '-f'], opts.onSpawn));
    await waitFor('osd', 60_000, async () => JSON.parse(await ceph(conf, ['osd', 'stat', '-f', 'json'])).num_up_osds >= 1);
    rgw = daemon(['radosgw', '-c', conf, '-n', 'client.rgw.a', '-f'], opts.onSpawn);
    await waitFor('radosgw', 90_000, () => httpAnswers(ports.rgw));
    await rgwAdmin(conf, [
      'user',
      'create',
      '--uid=test',
      '--display-name=test',
      `--access-key=${TEST_ACCESS_KEY}`,
      `--secret=${TEST_SECRET_KEY}`,
    ]);
  } catch (err) {
    const log = path.join(dir, 'log', 'rgw.log');
    const tail = existsSync(log) ? readFileSync(log, 'utf8').split('\n').slice(-15).join('\n') : '';
    await stop();
    throw new Error(`${err.message}\n${tail}`);
  }
  return {
    dir,
    conf,
    endpoint: `http://127.0.0.1:${ports.rgw}`,
    region: 'us-east-1',
    accessKeyId: TEST_ACCESS_KEY,
    secretAccessKey: TEST_SECRET_KEY,
    pids,
    stop,
  };
}

/**
 * A second radosgw on the same cluster, on its own free port: a fault test may kill it
 * mid-upload without disturbing the shared gateway other test files use at the same time.
 */
export async function startExtraGateway(info) {
  const port = await freePort();
  const child = daemon([
    'radosgw',
    '-c',
    info.conf,
    '-n',
    'client.rgw.a',
    '-f',
    `--rgw_frontends=beast endpoint=127.0.0.1:${port} tcp_nodelay=1`,
  ]);
  const gw = { endpoint: `http://127.0.0.1:${port}`, pid: child.pid, stop: () => killAndWait(child) };
  try {
    await waitFor('extra radosgw', 60_000, () => httpAnswers(port));
  } catch (err) {
    await gw.stop();
    throw err;
  }
  return gw;
}

/** Set (and enable) a bucket quota in bytes. */
export async function setBucketQuota(info, bucket, maxBytes) {
  await rgwAdmin(info.conf, ['quota', 'set', '--quota-scope=bucket', `--bucket=${bucket}`, `--max-size=${maxBytes}`]);
  await rgwAdmin(info.conf, ['quota', 'enable', '--quota-scope=bucket', `--bucket=${bucket}`]);
}

/** A client for the test user (path-style, as radosgw wants). */
export function adminS3(info, endpoint = info.endpoint, maxAttempts = 3) {
  return new S3Client({
    endpoint,
    maxAttempts,
    region: info.region,
    forcePathStyle: true,
    credentials: { accessKeyId: info.accessKeyId, secretAccessKey: info.secretAccessKey },
  });
}

/** Create a bucket with a unique name (test files share one gateway). */
export async function makeBucket(info, stem = 'bb') {
  const name = `${stem}-${randomUUID().slice(0, 12)}`.toLowerCase();
  const s3 = adminS3(info);
  try {
    await s3.send(new CreateBucketCommand({ Bucket: name }));
  } finally {
    s3.destroy();
  }
  return name;
}

/** Objects and their total bytes under `sub` of a bucket (ListObjectsV2: what the server stores). */
export async function bucketBytes(info, bucket, sub = '') {
  const s3 = adminS3(info);
  try {
    let objects = 0;
    let bytes = 0;
    let token;
    do {
      const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: sub, ContinuationToken: token }));
      for (const o of r.Contents ?? []) {
        objects++;
        bytes += o.Size ?? 0;
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return { objects, bytes };
  } finally {
    s3.destroy();
  }
}
