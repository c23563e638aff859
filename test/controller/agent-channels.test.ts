// The controller's agent channels are bounded (agent-client.ts, docs/design/fleet-scale.md):
// against real stub agents over mutual TLS, at most `maxOpen` channels stay open, the least
// recently used idle one is closed to make room, a channel with a backup stream in flight is
// never closed (the stream goes on to its result), and a closed channel's host is asked
// again over a new connection.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentClients, channelTarget } from '../../packages/controller/src/agent-client.js';
import { makeCerts, type Certs } from './helpers.js';
import { startStubAgent, type StubAgent } from './stub-agent.js';

let dir: string;
let certs: Certs;
const agents: StubAgent[] = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-channels-'));
  const store = path.join(dir, 'store');
  mkdirSync(store);
  certs = await makeCerts(dir);
  for (const name of ['ch-a', 'ch-b', 'ch-c', 'ch-d']) agents.push(await startStubAgent({ name, certs, store, backupMs: 50 }));
}, 120_000);

afterAll(async () => {
  for (const a of agents) await a.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('agent channels', () => {
  it('keeps at most maxOpen open, closes the least recently used idle one, never one with a call in flight', async () => {
    const clients = new AgentClients(certs.controller, 2);
    const [a, b, c, d] = agents;
    expect((await clients.get(a).getInfo()).name).toBe('ch-a');
    expect((await clients.get(b).getInfo()).name).toBe('ch-b');
    expect(clients.openChannels).toBe(2);

    // a backup on a holds its channel: opening c closes b (idle), not a
    a.hold = true;
    const events: string[] = [];
    const stream = (async () => {
      for await (const ev of clients.get(a).backup({ jobId: 'backup-ch-1', live: true, initiatedBy: 't', initiatedVia: 'cli' })) {
        events.push(ev.result ? `result ${ev.result.status}` : 'progress');
      }
    })();
    await expect.poll(() => a.running.size).toBe(1);
    expect((await clients.get(c).getInfo()).name).toBe('ch-c');
    expect(clients.openChannels).toBe(2);
    expect(clients.counts.closedForRoom).toBe(1);
    expect((await clients.get(d).getInfo()).name).toBe('ch-d'); // closes c: a is still busy
    expect(clients.counts.closedForRoom).toBe(2);
    expect(clients.openChannels).toBe(2);

    // b was closed: asking it again opens a new connection and gets its answer
    const opened = clients.counts.opened;
    expect((await clients.get(b).getInfo()).name).toBe('ch-b');
    expect(clients.counts.opened).toBe(opened + 1);

    a.releaseAll();
    await stream;
    expect(events.at(-1)).toBe('result Completed');
    expect(events).toContain('progress');
    clients.closeAll();
    expect(clients.openChannels).toBe(0);
  }, 60_000);

  it('keeps only largeFleetOpen idle channels once the fleet has more hosts than maxOpen, never closing one in flight', async () => {
    const clients = new AgentClients(certs.controller, 3, 1);
    const [a, b, c, d] = agents;
    for (const x of [a, b, c]) expect((await clients.get(x).getInfo()).name).toBe(x.name);
    expect(clients.openChannels).toBe(3); // the fleet fits: every channel stays open

    // a fourth host: polls go round a fleet larger than the bound, idle channels are not kept
    a.hold = true;
    const stream = (async () => {
      let last = '';
      for await (const ev of clients.get(a).backup({ jobId: 'backup-ch-2', live: true, initiatedBy: 't', initiatedVia: 'cli' })) {
        if (ev.result) last = ev.result.status;
      }
      return last;
    })();
    await expect.poll(() => a.running.size).toBe(1);
    expect((await clients.get(d).getInfo()).name).toBe('ch-d');
    // a's backup is in flight (kept), d is the one idle channel kept; b and c were closed
    expect(clients.openChannels).toBe(2);
    expect(clients.isOpen(a)).toBe(true);
    expect(clients.isOpen(d)).toBe(true);
    expect((await clients.get(b).getInfo()).name).toBe('ch-b'); // a new connection, then d closes
    expect(clients.isOpen(d)).toBe(false);
    a.releaseAll();
    expect(await stream).toBe('Completed');
    expect(clients.openChannels).toBe(1); // a's channel closed once idle: one idle channel kept
    clients.closeAll();
  }, 60_000);
});

describe('TLS sessions resumed on a reopened channel (tls-resumption.ts)', () => {
  it("resumes a host's session when its channel is opened again, and offers it to no other name or address", async () => {
    const clients = new AgentClients(certs.controller, 1);
    const [a, b, c] = agents;
    expect((await clients.get(a).getInfo()).name).toBe('ch-a');
    expect(clients.sessions.counts).toEqual({ full: 1, resumed: 0 });
    await expect.poll(() => clients.sessions.size).toBe(1); // the agent's ticket arrives after the handshake
    expect((await clients.get(b).getInfo()).name).toBe('ch-b'); // closes a's channel (bound 1)
    expect(clients.isOpen(a)).toBe(false);
    await expect.poll(() => clients.sessions.size).toBe(2);
    // a again: a new connection that resumes a's session, and the agent still answers as itself
    expect((await clients.get(a).getInfo()).name).toBe('ch-a');
    expect(clients.sessions.counts).toEqual({ full: 2, resumed: 1 });
    // on the resumed session the agent still reads the controller's certificate, as its access check does
    expect(a.callers.at(-1)).toBe('controller');

    // the name ch-c at a's address: no session is held for that pair, so a full handshake checks
    // a's certificate against ch-c and refuses it
    clients.closeAll();
    const wrong = new AgentClients(certs.controller, 1);
    expect((await wrong.get(a).getInfo()).name).toBe('ch-a');
    await expect.poll(() => wrong.sessions.size).toBe(1);
    await expect(wrong.get({ name: c.name, address: a.address }).getInfo()).rejects.toThrow(/ch-c/);
    expect(wrong.sessions.counts.resumed).toBe(0);
    wrong.closeAll();
  }, 60_000);
});

describe('agent channel targets', () => {
  it('dials an IP literal through the IP resolver and a name through DNS', () => {
    expect(channelTarget('127.0.0.1:7444')).toBe('ipv4:127.0.0.1:7444');
    expect(channelTarget('[::1]:7444')).toBe('ipv6:[::1]:7444');
    expect(channelTarget('gocd1.example.com:7444')).toBe('gocd1.example.com:7444');
    expect(channelTarget('localhost:7444')).toBe('localhost:7444');
    expect(channelTarget('[gocd1]:7444')).toBe('[gocd1]:7444');
  });
});
