// memory.ts boundHeap in a real node process with --expose-gc (as the daemon runs): a job that
// keeps making old-generation garbage gets full GCs and its heap stays near live + budget; a job
// that allocates nothing gets none; without --expose-gc it only runs the job.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const here = path.dirname(fileURLToPath(import.meta.url));
const memory = path.join(here, '../../packages/agent/dist/memory.js');

function run(job: 'garbage' | 'idle', flags: string[]): { gcs: number; maxHeapMb: number; result: string } {
  const script = `
    const { boundHeap } = await import(${JSON.stringify(memory)});
    const lines = [];
    const log = { debug: (o) => lines.push(o) };
    let max = 0;
    const sample = setInterval(() => { max = Math.max(max, process.memoryUsage().heapUsed); }, 20);
    const result = await boundHeap(log, async () => {
      if (${JSON.stringify(job)} === 'garbage') {
        // 120k-entry passes: objects held across awaits (promoted), then dropped
        for (let pass = 0; pass < 4; pass++) {
          let held = [];
          for (let i = 0; i < 120000; i++) {
            held.push({ path: 'tree/dir-' + i + '/file-' + pass, size: i, line: JSON.stringify({ i, pass, pad: 'x'.repeat(40) }) });
            if (i % 5000 === 0) await new Promise((r) => setTimeout(r, 5));
          }
          held = null;
        }
      } else await new Promise((r) => setTimeout(r, 1200));
      return 'done';
    });
    clearInterval(sample);
    console.log(JSON.stringify({ gcs: lines[0]?.gcs ?? -1, maxHeapMb: max / 1e6, result }));`;
  const r = spawnSync(process.execPath, [...flags, '--input-type=module', '-e', script], { encoding: 'utf8' });
  return JSON.parse(r.stdout.trim()) as { gcs: number; maxHeapMb: number; result: string };
}

describe('boundHeap', () => {
  it('collects a job that piles up garbage, and keeps its heap within the budget of what is live', () => {
    const bounded = run('garbage', ['--expose-gc']);
    expect(bounded.result).toBe('done');
    expect(bounded.gcs).toBeGreaterThan(0);
    // live: one pass (~40 MB at most); budget 40 MB; sampling and the check interval add some
    expect(bounded.maxHeapMb).toBeLessThan(130);
  });

  it('runs no GC for a job that allocates nothing, and only runs the job without --expose-gc', () => {
    expect(run('idle', ['--expose-gc']).gcs).toBe(0);
    const plain = run('idle', []);
    expect(plain).toMatchObject({ result: 'done', gcs: -1 });
  });

  // Timing-based: the peaks depend on when the 250 ms checks fire. Under CPU load a late check lets
  // both runs pile up more (a clean-clone CI run once measured a 1.05 MB gap): one retry, and a
  // real regression (equal budgets) fails both tries.
  it("keeps a restore's dead buffers within its smaller budget (RESTORE_BUDGETS)", { retry: 1 }, () => {
    // 1 MiB buffers, each held across a timer (as a GET's or a blob's buffer is across its I/O), then dropped
    const buffers = (budgets: string) => {
      const script = `
        const { boundHeap, RESTORE_BUDGETS } = await import(${JSON.stringify(memory)});
        const lines = [];
        let max = 0;
        const sample = setInterval(() => { max = Math.max(max, process.memoryUsage().arrayBuffers); }, 10);
        await boundHeap({ debug: (o) => lines.push(o) }, async () => {
          for (let i = 0; i < 150; i++) {
            const b = Buffer.allocUnsafeSlow(1 << 20).fill(i);
            await new Promise((r) => setTimeout(r, 25));
            if (b[0] !== (i & 255)) throw new Error('lost');
          }
        }, ${budgets});
        clearInterval(sample);
        console.log(JSON.stringify({ gcs: lines[0].gcs, maxMb: max / 1e6 }));`;
      const r = spawnSync(process.execPath, ['--expose-gc', '--max-semi-space-size=4', '--input-type=module', '-e', script], {
        encoding: 'utf8',
      });
      return JSON.parse(r.stdout.trim()) as { gcs: number; maxMb: number };
    };
    const restore = buffers('RESTORE_BUDGETS');
    const backup = buffers('{}');
    expect(restore.gcs).toBeGreaterThan(0);
    expect(restore.maxMb).toBeLessThan(32); // 12 MiB budget, plus what a 250 ms check (late under load) lets through
    expect(backup.maxMb - restore.maxMb).toBeGreaterThan(4); // the backups' 24 MiB budget lets ~12 MiB more pile up
  });
});
