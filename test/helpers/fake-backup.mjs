// A minimal but valid boxback backup in the store (one file, a real manifest with its
// SHA-256), written the way the agent publishes: temp dir, then rename. Used by the stub
// agent of the controller tests and by the fleet bench, where no real box exists.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { MANIFEST_FORMAT, backupId, backupRelPath, formatTimestamp } from '@boxback/common';

const lastTs = new Map();

/** One timestamp per host per second, moving forward (backup IDs are per second). */
function nextTimestamp(host) {
  const t = Math.max(Date.now(), (lastTs.get(host) ?? 0) + 1000);
  lastTs.set(host, t);
  return { ts: formatTimestamp(new Date(t)), ms: t };
}

/**
 * @param {string} store
 * @param {string} host
 * @param {{ agentVersion?: string, windowMs?: number }} [o]
 */
export async function writeFakeBackup(store, host, o = {}) {
  const { ts, ms } = nextTimestamp(host);
  const rel = backupRelPath(host, ts);
  const tmp = path.join(store, host, `.tmp-${ts}`);
  await fsp.mkdir(tmp, { recursive: true });
  const data = Buffer.from(`data of ${host} at ${ts}\n`);
  await fsp.writeFile(path.join(tmp, 'version.txt'), data);
  const name = o.agentVersion ?? 'stub';
  const manifest = {
    format: MANIFEST_FORMAT,
    id: backupId(host, ts),
    host,
    timestamp: ts,
    createdAt: new Date(ms).toISOString(),
    completedAt: new Date().toISOString(),
    origin: 'boxback',
    agentVersion: name,
    plan: { name, product: 'generic' },
    product: { name: 'generic', version: '1.0' },
    source: { hostname: host, addresses: ['127.0.0.1'] },
    consistency: 'quiesced',
    quiesce: { mode: 'stop', windowMs: o.windowMs ?? 42 },
    phases: [],
    datasets: [],
    trees: [],
    files: [
      {
        path: 'version.txt',
        type: 'file',
        size: data.length,
        sha256: createHash('sha256').update(data).digest('hex'),
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtimeMs: 0,
      },
    ],
    totals: { files: 1, bytes: data.length },
    warnings: [],
  };
  const json = JSON.stringify(manifest);
  await fsp.writeFile(path.join(tmp, 'manifest.json'), json);
  await fsp.rename(tmp, path.join(store, ...rel.split('/')));
  return { rel, manifest, json };
}
