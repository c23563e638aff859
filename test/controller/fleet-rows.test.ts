// The fleet page's rows from templates (dashboard/pages/fleet.ts): a row is rendered once per
// host and role while what it shows of the host's rows stays the same, its times and running
// job filled in per answer. Whatever the template, the markup must be what rendering the row
// whole gives: followed here through a job queued, running with progress and done, a new last
// backup, a host gone unreachable, both roles, and names that hold markup or the slot marker.
import type { wire } from '@boxback/common';
import { describe, expect, it } from 'vitest';
import type { PageCtx } from '../../packages/controller/src/dashboard/html.js';
import { row, templatedRow } from '../../packages/controller/src/dashboard/pages/fleet.js';

type Row = wire.HostStatus & { host: wire.Host };
const now = Date.now();
const HOUR = 3600_000;

const ctx = (role: 'viewer' | 'operator'): PageCtx =>
  ({
    session: { id: 's', token: 't', caller: { name: role, role }, csrf: 'c', expiresAtMs: now + HOUR },
    url: new URL('https://controller/'),
    defaultRpoSeconds: 86_400,
    call: () => Promise.reject(new Error('not here')),
  }) as PageCtx;

const host = (name: string): wire.Host => ({
  name,
  address: '10.0.0.1:7443',
  group: 'ci',
  planName: 'gocd',
  agentVersion: '0.2.0',
  lastSeenMs: now - 2 * HOUR,
  rpoSeconds: 0,
  product: 'gocd',
  productVersion: '23.5.0',
});

const backup = (id: string, createdAtMs: number) => ({ id, createdAtMs, verifiedAtMs: createdAtMs + HOUR }) as wire.Backup;

const job = (id: string, phase: string, done = 0): wire.Job =>
  ({ id, kind: 'backup', phase, progress: done ? { bytesDone: done, bytesTotal: 100 } : null }) as wire.Job;

function status(h: wire.Host, o: Partial<wire.HostStatus> = {}): Row {
  return {
    host: h,
    reachable: true,
    unreachableReason: '',
    runningJob: null,
    lastGoodBackup: null,
    lastGoodAgeSeconds: -1,
    nextRunMs: 0,
    atRisk: false,
    safetyCopies: 0,
    safetyCopyBytes: 0,
    lastDrillBackupId: '',
    lastDrillAtMs: 0,
    lastDrillDurationMs: 0,
    ...o,
  } as Row;
}

function templated(h: Row, p: PageCtx): string {
  const out: string[] = [];
  templatedRow(out, h, p, Date.now());
  return out.join('');
}

describe('fleet page rows from templates', () => {
  it('are the rows rendered whole, through a job, a new backup, a host gone down, for both roles', () => {
    const h = host('gocd1');
    const b1 = backup('gocd1@20261207-090000', now - 3 * HOUR);
    const b2 = backup('gocd1@20261207-120000', now - HOUR);
    const states: Row[] = [
      status(h, { lastGoodBackup: b1, lastGoodAgeSeconds: 3 * 3600 }),
      status(h, { lastGoodBackup: b1, lastGoodAgeSeconds: 3 * 3600, runningJob: job('j1', '') }),
      status(h, { lastGoodBackup: b1, lastGoodAgeSeconds: 3 * 3600, runningJob: job('j1', 'SYNC_ARTIFACTS', 42) }),
      status(h, { lastGoodBackup: b1, lastGoodAgeSeconds: 3 * 3600, runningJob: job('j1', 'PUBLISH', 100) }),
      status(h, { lastGoodBackup: b2, lastGoodAgeSeconds: 3600 }),
      status(h, { lastGoodBackup: b2, lastGoodAgeSeconds: 3600, reachable: false, unreachableReason: 'connection refused' }),
      status(h, { lastGoodBackup: b2, lastGoodAgeSeconds: 3600, atRisk: true, nextRunMs: now + HOUR, lastDrillAtMs: now - HOUR }),
    ];
    for (const role of ['operator', 'viewer'] as const) {
      const p = ctx(role);
      for (const s of states) expect(templated(s, p)).toBe(row(s, p).text);
    }
    // the job's cell changed, the rest of the row did not
    const p = ctx('operator');
    expect(templated(states[2], p)).toContain('SYNC_ARTIFACTS');
    expect(templated(states[2], p)).toContain('value="42"');
    expect(templated(states[3], p)).not.toContain('SYNC_ARTIFACTS');
    expect(templated(states[0], p)).toContain('idle');
  });

  it('a name with markup renders as text; a name holding the slot marker is rendered whole', () => {
    for (const name of ['<script>alert(1)</script>', 'odd\uE0000\uE000name']) {
      const s = status(host(name), { runningJob: job('j2', 'QUIESCE', 5) });
      const p = ctx('operator');
      expect(templated(s, p)).toBe(row(s, p).text);
      expect(templated(s, p)).not.toContain('<script>alert');
    }
  });
});
