// A preload for the agent daemon (`node --import bench/lib/mem-sampler.mjs ...`): every
// BOXBACK_MEM_SAMPLE_MS (250) ms, one line of process.memoryUsage() and the thread count,
// appended to the file BOXBACK_MEM_SAMPLE_FILE (with the pid: several processes may share it,
// e.g. through NODE_OPTIONS=--import). bench/agent-rss.mjs reads it per job.
// BOXBACK_MEM_SNAPSHOT_MB=N: the first time the JS heap holds more than N MB, one heap snapshot
// is written beside the samples file (what holds it: open it in Chrome's DevTools).
import { appendFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';

const file = process.env.BOXBACK_MEM_SAMPLE_FILE;
if (file) {
  const every = Number(process.env.BOXBACK_MEM_SAMPLE_MS ?? 250);
  let snapshotOver = Number(process.env.BOXBACK_MEM_SNAPSHOT_MB ?? 0) * 1e6;
  setInterval(() => {
    const m = process.memoryUsage();
    if (snapshotOver && m.heapUsed > snapshotOver) {
      snapshotOver = 0;
      v8.writeHeapSnapshot(path.join(path.dirname(file), `heap-${Date.now()}.heapsnapshot`));
    }
    let threads = 0;
    try {
      threads = Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0);
    } catch {
      /* not Linux */
    }
    appendFileSync(file, `${JSON.stringify({ t: Date.now(), pid: process.pid, ...m, threads })}\n`);
  }, every).unref();
}
