import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Notifier, notifierConfigSchema, type NotificationPayload } from '../../packages/controller/src/policy/index.js';

interface Hook {
  url: string;
  bodies: NotificationPayload[];
  headers: http.IncomingHttpHeaders[];
  close(): Promise<void>;
}

/** A real webhook receiver on 127.0.0.1:0 answering each request with the next status of `script` (then 200). */
async function receiver(script: (number | 'hang')[] = []): Promise<Hook> {
  const bodies: NotificationPayload[] = [];
  const headers: http.IncomingHttpHeaders[] = [];
  let n = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      bodies.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as NotificationPayload);
      headers.push(req.headers);
      const answer = script[n++] ?? 200;
      if (answer === 'hang') return; // never answers: the client's timeout must fire
      res.writeHead(answer, { 'content-type': 'text/plain' }).end(answer === 200 ? 'ok' : 'nope');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks/boxback?token=s3cret`,
    bodies,
    headers,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

let hook: Hook | undefined;
afterEach(async () => {
  await hook?.close();
  hook = undefined;
});

const fixedNow = () => Date.parse('2026-11-20T20:30:00Z');

describe('webhook notifications to a real local server', () => {
  it('POSTs the JSON payload and retries after a 500', async () => {
    hook = await receiver([500]);
    const n = new Notifier(
      {
        url: hook.url,
        events: ['failure', 'at-risk'],
        retries: 2,
        backoffSeconds: 0.05,
        timeoutSeconds: 2,
        headers: { authorization: 'Bearer t' },
      },
      { now: fixedNow },
    );
    const started = Date.now();
    const outcome = await n.notify({
      event: 'failure',
      host: 'gocd1',
      jobId: 'job-7',
      backupId: 'backup_20261120-203000',
      status: 'Failed',
      error: 'BOXBACK_ERR_SYNC_FAILED: rsync exited 23',
    });
    expect(outcome).toBe('sent');
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    expect(hook.bodies.length).toBe(2);
    expect(hook.bodies[1]).toEqual({
      event: 'failure',
      host: 'gocd1',
      jobId: 'job-7',
      backupId: 'backup_20261120-203000',
      status: 'Failed',
      error: 'BOXBACK_ERR_SYNC_FAILED: rsync exited 23',
      message: null,
      at: '2026-11-20T20:30:00.000Z',
    });
    expect(hook.headers[0]['content-type']).toBe('application/json');
    expect(hook.headers[0].authorization).toBe('Bearer t');
  });

  it('notifies at-risk once per spell: deduped until the host recovers', async () => {
    hook = await receiver();
    const n = new Notifier({ url: hook.url, events: ['failure', 'at-risk'], backoffSeconds: 0.01 });
    expect(await n.setAtRisk('gocd1', true, { message: 'no Restorable backup for 26h (RPO 24h)' })).toBe('sent');
    expect(await n.setAtRisk('gocd1', true)).toBe('deduped');
    expect(await n.notify({ event: 'at-risk', host: 'gocd1' })).toBe('deduped');
    expect(await n.setAtRisk('circle1', true)).toBe('sent'); // per host
    expect(n.atRiskHosts()).toEqual(['circle1', 'gocd1']);
    expect(await n.setAtRisk('gocd1', false)).toBe('unchanged');
    expect(await n.setAtRisk('gocd1', true)).toBe('sent'); // a new spell
    // A success (even one not subscribed to) ends the spell too.
    expect(await n.notify({ event: 'success', host: 'circle1', backupId: 'b1', status: 'Completed' })).toBe('filtered');
    expect(await n.setAtRisk('circle1', true)).toBe('sent');
    expect(hook.bodies.map((b) => `${b.event}:${b.host}`)).toEqual([
      'at-risk:gocd1',
      'at-risk:circle1',
      'at-risk:gocd1',
      'at-risk:circle1',
    ]);
    expect(hook.bodies[0].message).toBe('no Restorable backup for 26h (RPO 24h)');
  });

  it('sends only the events configured', async () => {
    hook = await receiver();
    const n = new Notifier({ url: hook.url, events: ['success'] });
    expect(await n.notify({ event: 'failure', host: 'h' })).toBe('filtered');
    expect(await n.notify({ event: 'success', host: 'h', status: 'Completed' })).toBe('sent');
    expect(hook.bodies.map((b) => b.event)).toEqual(['success']);
  });

  it('never throws: gives up after the retries, and a failed at-risk is tried again next time', async () => {
    hook = await receiver([503, 503, 503, 200]);
    const n = new Notifier({ url: hook.url, events: ['at-risk'], retries: 2, backoffSeconds: 0.01 });
    expect(await n.setAtRisk('gocd1', true)).toBe('failed');
    expect(hook.bodies.length).toBe(3);
    expect(n.atRiskHosts()).toEqual([]);
    expect(await n.setAtRisk('gocd1', true)).toBe('sent');
    expect(hook.bodies.length).toBe(4);
  });

  it('does not retry a 4xx answer other than 408/429', async () => {
    hook = await receiver([400, 200]);
    const n = new Notifier({ url: hook.url, retries: 3, backoffSeconds: 0.01 });
    expect(await n.notify({ event: 'failure', host: 'h' })).toBe('failed');
    expect(hook.bodies.length).toBe(1);
  });

  it('times out a hanging endpoint and retries', async () => {
    hook = await receiver(['hang', 200]);
    const n = new Notifier({ url: hook.url, retries: 1, backoffSeconds: 0.01, timeoutSeconds: 0.2 });
    const started = Date.now();
    expect(await n.notify({ event: 'failure', host: 'h' })).toBe('sent');
    expect(Date.now() - started).toBeLessThan(2000);
    expect(hook.bodies.length).toBe(2);
  });

  it('survives an endpoint that is not there, without an unhandled rejection', async () => {
    const gone = await receiver();
    const url = gone.url;
    await gone.close();
    const n = new Notifier({ url, retries: 1, backoffSeconds: 0.01 });
    void n.notify({ event: 'failure', host: 'h' }); // fire and forget, as the daemon does
    await n.whenIdle();
    expect(await n.notify({ event: 'failure', host: 'h' })).toBe('failed');
  });

  it('validates its config', () => {
    expect(notifierConfigSchema.parse({ url: 'https://hooks.example.com/x' })).toEqual({
      url: 'https://hooks.example.com/x',
      events: ['failure', 'at-risk', 'damaged'],
      timeoutSeconds: 10,
      retries: 3,
      backoffSeconds: 2,
    });
    expect(notifierConfigSchema.safeParse({ url: 'ftp://x/y' }).error?.issues[0].message).toBe('want an http:// or https:// URL');
    expect(notifierConfigSchema.safeParse({ url: 'https://x/y', events: ['restore'] }).success).toBe(false);
    expect(() => new Notifier({ url: 'not a url' })).toThrow();
  });
});
