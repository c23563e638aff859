// Preloaded into the controller by `fleet-bench.mjs --cpu-prof DIR` (node --import): a V8 CPU
// profile (1 ms samples) of one bench phase. SIGUSR2 starts it, the next SIGUSR2 writes it to
// $BB_PHASE_PROFILE_DIR/<phase>.cpuprofile ($BB_PHASE_PROFILE_NAME names the phase).
// `node --cpu-prof` wrote nothing here: the controller exits from its SIGTERM handler.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import path from 'node:path';

const dir = process.env.BB_PHASE_PROFILE_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  const post = (m, p = {}) => new Promise((res, rej) => session.post(m, p, (err, r) => (err ? rej(err) : res(r))));
  let on = false;
  process.on('SIGUSR2', () => {
    void (async () => {
      if (!on) {
        on = true;
        await post('Profiler.enable');
        await post('Profiler.setSamplingInterval', { interval: 1000 });
        await post('Profiler.start');
        return;
      }
      on = false;
      const { profile } = await post('Profiler.stop');
      writeFileSync(path.join(dir, `${process.env.BB_PHASE_PROFILE_NAME ?? 'phase'}.cpuprofile`), JSON.stringify(profile));
    })();
  });
}
