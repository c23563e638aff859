import { afterEach, describe, expect, it } from 'vitest';
import { register as globalRegistry } from 'prom-client';
import { ControllerMetrics, parseListen, startMetricsServer, type MetricsServer } from '../../packages/controller/src/policy/index.js';

/** Exposition text -> { 'name{label="v",...}': value } (comments dropped). */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+?(?:\{.*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

let server: MetricsServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('controller metrics over real HTTP', () => {
  it('serves per-host gauges, job counts and process metrics on /metrics', async () => {
    const metrics = new ControllerMetrics();
    metrics.updateFromStatus({
      hosts: [
        {
          host: 'gocd1',
          lastSuccessAtMs: Date.parse('2026-11-20T02:00:00Z'),
          lastBackupDurationSeconds: 93.5,
          lastBackupSizeBytes: 2_576_980_378,
          quiesceWindowSeconds: 4.25,
          agentUp: true,
          atRisk: false,
        },
        { host: 'circle1', lastSuccessAtMs: null, agentUp: false, atRisk: true },
      ],
    });
    metrics.recordJob('gocd1', 'backup', 'Completed');
    metrics.recordJob('gocd1', 'backup', 'Completed');
    metrics.recordJob('circle1', 'backup', 'Failed');

    server = await startMetricsServer('127.0.0.1:0', metrics.registry, () => ({ ok: true, detail: { hosts: 2 } }));
    expect(server.port).toBeGreaterThan(0);
    const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const m = parseMetrics(text);
    expect(m.get('boxback_last_success_timestamp_seconds{host="gocd1"}')).toBe(Date.parse('2026-11-20T02:00:00Z') / 1000);
    expect(m.get('boxback_last_backup_duration_seconds{host="gocd1"}')).toBe(93.5);
    expect(m.get('boxback_last_backup_size_bytes{host="gocd1"}')).toBe(2_576_980_378);
    expect(m.get('boxback_quiesce_window_seconds{host="gocd1"}')).toBe(4.25);
    expect(m.get('boxback_agent_up{host="gocd1"}')).toBe(1);
    expect(m.get('boxback_host_at_risk{host="gocd1"}')).toBe(0);
    expect(m.get('boxback_agent_up{host="circle1"}')).toBe(0);
    expect(m.get('boxback_host_at_risk{host="circle1"}')).toBe(1);
    expect(m.has('boxback_last_success_timestamp_seconds{host="circle1"}')).toBe(false); // never backed up: absent, not 0
    expect(m.get('boxback_jobs_total{host="gocd1",kind="backup",result="Completed"}')).toBe(2);
    expect(m.get('boxback_jobs_total{host="circle1",kind="backup",result="Failed"}')).toBe(1);
    expect(text).toContain('# TYPE boxback_jobs_total counter');
    expect(text).toContain('# HELP boxback_host_at_risk ');
    expect(m.get('process_resident_memory_bytes')).toBeGreaterThan(1_000_000);
    expect([...m.keys()].some((k) => k.startsWith('nodejs_eventloop_lag'))).toBe(true);
    // A fresh registry: nothing leaks into prom-client's global one.
    expect(await globalRegistry.metrics()).not.toContain('boxback_');
  });

  it('drops a host that is no longer reported, and can rebuild job counts from the catalog', async () => {
    const metrics = new ControllerMetrics({ defaultMetrics: false });
    metrics.updateFromStatus({
      hosts: [
        { host: 'a', lastSuccessAtMs: 1_000_000, agentUp: true, atRisk: false },
        { host: 'b', lastSuccessAtMs: 2_000_000, agentUp: true, atRisk: false },
      ],
    });
    metrics.recordJob('a', 'backup', 'Completed');
    metrics.updateFromStatus({
      hosts: [{ host: 'a', lastSuccessAtMs: 3_000_000, agentUp: true, atRisk: true }],
      jobCounts: [
        { host: 'a', kind: 'backup', result: 'Completed', count: 41 },
        { host: 'a', kind: 'verify', result: 'Failed', count: 2 },
      ],
    });
    const m = parseMetrics(await metrics.metrics());
    expect(m.get('boxback_last_success_timestamp_seconds{host="a"}')).toBe(3000);
    expect(m.get('boxback_host_at_risk{host="a"}')).toBe(1);
    expect([...m.keys()].filter((k) => k.includes('host="b"'))).toEqual([]);
    expect(m.get('boxback_jobs_total{host="a",kind="backup",result="Completed"}')).toBe(41);
    expect(m.get('boxback_jobs_total{host="a",kind="verify",result="Failed"}')).toBe(2);
    expect([...m.keys()].some((k) => k.startsWith('process_'))).toBe(false);
  });

  it('answers /healthz with 200 or 503 JSON, and 404/405 for anything else', async () => {
    const metrics = new ControllerMetrics({ defaultMetrics: false });
    let health: { ok: boolean; detail?: unknown } = { ok: true, detail: 'catalog ok' };
    server = await startMetricsServer('127.0.0.1:0', metrics.registry, async () => health);
    const base = `http://127.0.0.1:${server.port}`;
    let res = await fetch(`${base}/healthz`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    expect(await res.json()).toEqual({ ok: true, detail: 'catalog ok' });
    health = { ok: false, detail: { catalog: 'SQLITE_BUSY' } };
    res = await fetch(`${base}/healthz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ ok: false, detail: { catalog: 'SQLITE_BUSY' } });
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    expect((await fetch(`${base}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('reports a health check that throws as 503, not a crash', async () => {
    const metrics = new ControllerMetrics({ defaultMetrics: false });
    server = await startMetricsServer('127.0.0.1:0', metrics.registry, () => {
      throw new Error('catalog closed');
    });
    const res = await fetch(`http://127.0.0.1:${server.port}/healthz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ ok: false, detail: 'catalog closed' });
  });

  it('parses listen addresses and fails clearly on a port in use', async () => {
    expect(parseListen('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListen('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(parseListen(':9464')).toEqual({ host: undefined, port: 9464 });
    expect(() => parseListen('localhost')).toThrow(/want host:port/);
    expect(() => parseListen('h:70000')).toThrow(/bad metrics port/);
    const metrics = new ControllerMetrics({ defaultMetrics: false });
    server = await startMetricsServer('127.0.0.1:0', metrics.registry, () => ({ ok: true }));
    await expect(startMetricsServer(`127.0.0.1:${server.port}`, metrics.registry, () => ({ ok: true }))).rejects.toThrow(/EADDRINUSE/);
  });
});
