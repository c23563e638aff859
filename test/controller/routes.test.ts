// The route table is the one source of every call's role and audit: every ControllerService
// RPC in the proto has exactly one entry (and no entry lacks an RPC), roles are ordered
// viewer < operator < admin, and everything that changes state is audited.
import { describe, expect, it } from 'vitest';
import { loadServices } from '@boxback/common';
import { ROUTES, roleAllows, routeFor, routeList } from '../../packages/controller/src/api/routes.js';

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
    const reads = routeList()
      .filter((r) => !r.audit)
      .map((r) => r.name);
    expect(reads.sort()).toEqual(
      [
        'GetBackup',
        'GetJob',
        'GetStatus',
        'ListAudit',
        'ListBackups',
        'ListHosts',
        'ListJobs',
        'GetJobLogs',
        'ListTokens',
        'WatchJob',
      ].sort(),
    );
    for (const r of routeList()) if (r.audit) expect(r.role, r.name).not.toBe('viewer');
    expect(ROUTES.RestoreBackup.role).toBe('admin');
    expect(ROUTES.CreateBackup.role).toBe('operator');
    expect(ROUTES.RestoreBackup.audit?.target({ backupId: 'a@1', targetHost: '', dryRun: true, force: false })).toBe(
      'a@1 -> (own host) (dry run)',
    );
  });
});
