// The agent gives back a burst's garbage once the burst is over (packages/agent/src/memory.ts),
// measured the way an operator would see it: the RSS of a real Node process run with the
// agent's V8 flags, before and after releaseMemorySoon.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AGENT_NODE_FLAGS } from '../../packages/agent/src/node-flags.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const memoryJs = path.join(repo, 'packages/agent/dist/memory.js');

// ~200 MB of short-lived objects, 1 in 20 kept (a fragmented old space, as a first scan
// leaves it); then idle: nothing else would collect it.
const script = `
import { releaseMemorySoon } from ${JSON.stringify(memoryJs)};
const lines = [];
const log = { debug: (o, msg) => lines.push({ ...o, msg }) };
let a = [];
for (let i = 0; i < 2e6; i++) a.push({ i, s: 'x' + i });
globalThis.keep = a.filter((_, i) => i % 20 === 0);
a = null;
const before = process.memoryUsage().rss;
releaseMemorySoon(log, 'test burst');
releaseMemorySoon(log, 'a second call shares the GC');
setTimeout(() => {
  const after = process.memoryUsage().rss;
  console.log(JSON.stringify({ before, after, lines, kept: globalThis.keep.length }));
}, 3000);
`;

function run(flags: string[]): { before: number; after: number; lines: Array<Record<string, unknown>>; kept: number } {
  const r = spawnSync(process.execPath, [...flags, '--input-type=module', '-e', script], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

describe('releaseMemorySoon', () => {
  it('with the agent flags: one compacting GC a moment later gives most of the burst back, and is logged', () => {
    const r = run(AGENT_NODE_FLAGS);
    expect(r.kept).toBe(100_000);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatchObject({ msg: 'memory released', why: 'test burst' });
    // The burst's ~200 MB of heap: more than 100 MB of RSS comes back.
    expect(r.before - r.after).toBeGreaterThan(100e6);
  });

  it("waits for a running job's end: no compacting GC under a job's peak, then one after it, and what waited for it runs", () => {
    // a watcher's first scan ends as a job starts (the daemon's first job): its release GC is
    // due 1 s later, inside the job; the job runs 2.5 s
    const job = `
import { boundHeap, releaseMemorySoon } from ${JSON.stringify(memoryJs)};
const lines = [];
const log = { debug: (o, msg) => lines.push({ ...o, msg, at: Date.now() }) };
const t0 = Date.now();
let thenAt = 0;
releaseMemorySoon(log, 'watcher started', () => (thenAt = Date.now()));
let jobEnd = 0;
await boundHeap(log, () => new Promise((r) => setTimeout(r, 2500)));
jobEnd = Date.now();
setTimeout(() => {
  const released = lines.filter((l) => l.msg === 'memory released');
  console.log(JSON.stringify({ released: released.map((l) => ({ why: l.why, afterJob: l.at - jobEnd })), thenAfterJob: thenAt - jobEnd, jobMs: jobEnd - t0 }));
}, 2000);
`;
    const r = spawnSync(process.execPath, [...AGENT_NODE_FLAGS, '--input-type=module', '-e', job], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(out.jobMs).toBeGreaterThanOrEqual(2400);
    expect(out.released).toHaveLength(1);
    expect(out.released[0].why).toBe('watcher started (after the job)');
    expect(out.released[0].afterJob).toBeGreaterThanOrEqual(900); // the delay again, from the job's end
    expect(out.thenAfterJob).toBeGreaterThanOrEqual(900);
  });

  it('without --expose-gc it does nothing (no GC, no log line)', () => {
    const r = run(AGENT_NODE_FLAGS.filter((f) => f !== '--expose-gc'));
    expect(r.lines).toHaveLength(0);
  });
});
