// Preloaded into the controller by `fleet-bench.mjs --cpu-prof DIR` (node --import): a V8 CPU
// profile (1 ms samples) of one bench phase, and the event loop's delay over it. SIGUSR2 starts
// both, the next SIGUSR2 writes $BB_PHASE_PROFILE_DIR/<phase>.cpuprofile and <phase>.eld.json
// ($BB_PHASE_PROFILE_NAME names the phase): perf_hooks' delay histogram (percentiles in ms), and
// process.memoryUsage() and V8's heap spaces at the phase's highest RSS (sampled every 250 ms).
// With BB_PHASE_ALLOC=1 also <phase>.heapprofile: V8's sampling heap profile of everything
// allocated in the phase, collected or not (who makes the garbage; DevTools opens it).
// `node --cpu-prof` wrote nothing here: the controller exits from its SIGTERM handler.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import v8 from 'node:v8';

const mb = (n) => Math.round(n / 1048576);
function memory() {
  const m = process.memoryUsage();
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, mb(s.space_used_size)]));
  return {
    rss: mb(m.rss),
    heapTotal: mb(m.heapTotal),
    heapUsed: mb(m.heapUsed),
    external: mb(m.external),
    arrayBuffers: mb(m.arrayBuffers),
    spaces,
  };
}

const dir = process.env.BB_PHASE_PROFILE_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  const post = (m, p = {}) => new Promise((res, rej) => session.post(m, p, (err, r) => (err ? rej(err) : res(r))));
  let on = false;
  let peak;
  let sampler;
  const eld = monitorEventLoopDelay({ resolution: 10 });
  process.on('SIGUSR2', () => {
    void (async () => {
      if (!on) {
        on = true;
        eld.reset();
        eld.enable();
        peak = memory();
        sampler = setInterval(() => {
          const m = memory();
          if (m.rss > peak.rss) peak = m;
        }, 250);
        if (process.env.BB_PHASE_ALLOC) {
          await post('HeapProfiler.enable');
          await post('HeapProfiler.startSampling', {
            samplingInterval: 64 * 1024,
            includeObjectsCollectedByMajorGC: true,
            includeObjectsCollectedByMinorGC: true,
          });
        }
        await post('Profiler.enable');
        await post('Profiler.setSamplingInterval', { interval: 1000 });
        await post('Profiler.start');
        return;
      }
      on = false;
      eld.disable();
      clearInterval(sampler);
      const { profile } = await post('Profiler.stop');
      const name = process.env.BB_PHASE_PROFILE_NAME ?? 'phase';
      if (process.env.BB_PHASE_ALLOC) {
        const heap = await post('HeapProfiler.stopSampling');
        writeFileSync(path.join(dir, `${name}.heapprofile`), JSON.stringify(heap.profile));
      }
      writeFileSync(path.join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
      const ms = (ns) => Math.round(ns / 1e4) / 100;
      const delay = { count: eld.count, mean: ms(eld.mean), max: ms(eld.max) };
      for (const p of [50, 90, 99, 99.9]) delay[`p${p}`] = ms(eld.percentile(p));
      writeFileSync(path.join(dir, `${name}.eld.json`), `${JSON.stringify({ delay_ms: delay, memory_mb_at_peak: peak }, null, 1)}\n`);
    })();
  });
}
