// memory.ts fixNativeHeap, as the daemon calls it at start, in a real Node process with the
// agent's flags: once a 4 MiB buffer has been freed, glibc's default puts every later buffer up
// to that size in its main heap (whose freed pages stay resident until a trim); with the
// threshold fixed each is a mapping of its own, and freeing them gives the memory back at once.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AGENT_NODE_FLAGS } from '../../packages/agent/src/node-flags.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const memoryJs = path.join(repo, 'packages/agent/dist/memory.js');
const addon = path.join(repo, 'packages/agent/native/build/Release/boxback_inotify.node');

const script = `
import { readFileSync } from 'node:fs';
import { fixNativeHeap } from ${JSON.stringify(memoryJs)};
const lines = [];
fixNativeHeap({ debug: (o, msg) => lines.push({ ...o, msg }) });
const heapMb = () => {
  const l = readFileSync('/proc/self/maps', 'utf8').split('\\n').find((x) => x.endsWith('[heap]'));
  const [a, b] = l.split(' ')[0].split('-').map((x) => parseInt(x, 16));
  return (b - a) / 1e6;
};
const rssMb = () => process.memoryUsage().rss / 1e6;
let big = Buffer.allocUnsafeSlow(4 << 20).fill(1);
big = null;
gc();
await new Promise((r) => setTimeout(r, 50));
gc(); // V8 frees a dead buffer's memory after its GC, on another thread: this one waits for that
let held = [];
for (let i = 0; i < 24; i++) held.push(Buffer.allocUnsafeSlow(1 << 20).fill(2));
const heldHeap = heapMb();
const heldRss = rssMb();
held = null;
gc();
await new Promise((r) => setTimeout(r, 200));
console.log(JSON.stringify({ heldHeap, heldRss, freedRss: rssMb(), lines }));
`;

function run(env: NodeJS.ProcessEnv): { heldHeap: number; heldRss: number; freedRss: number; lines: Array<Record<string, unknown>> } {
  const base = { ...process.env };
  delete base.MALLOC_MMAP_THRESHOLD_; // glibc's own setting: fixNativeHeap leaves it alone
  const r = spawnSync(process.execPath, [...AGENT_NODE_FLAGS, '--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...base, ...env },
  });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

describe.skipIf(process.platform !== 'linux' || !existsSync(addon))('fixNativeHeap', () => {
  it("keeps 1 MiB buffers out of glibc's main heap, so freeing them gives their memory back at once", () => {
    const fixed = run({});
    expect(fixed.lines).toEqual([expect.objectContaining({ msg: 'native heap: mmap threshold fixed', bytes: 128 * 1024 })]);
    expect(fixed.heldHeap).toBeLessThan(12); // 24 MiB held, none of it in the main heap
    expect(fixed.heldRss - fixed.freedRss).toBeGreaterThan(20); // unmapped when V8 freed them

    // glibc's default (BOXBACK_MMAP_THRESHOLD=0): the same buffers sit in the main heap
    const dflt = run({ BOXBACK_MMAP_THRESHOLD: '0' });
    expect(dflt.lines).toEqual([]);
    expect(dflt.heldHeap).toBeGreaterThan(20);
  });
});
