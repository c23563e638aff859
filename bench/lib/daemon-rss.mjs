// The agent daemon's memory while it watches a large tree: the real `boxback-agent` (gRPC,
// journals, everything) with a plan of one tree of N small files (journal-bench's layout).
//
//   const f = await daemonWatchRss({ dir, files: 200_000, log });
//
// Steps: generate the tree; start the daemon; RSS when it listens (baseline); wait until the
// tree is watched (its first scan done) and read the peak RSS (VmHWM: the first scan); then
// read the RSS once a second until it has not dropped by more than 1 MiB for 15 s (V8 gives
// freed pages back some seconds after its idle GCs; no GC is forced, as in production), at
// most 120 s: the steady RSS. Stop the daemon, remove the tree.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { generate } from '../journal-bench.mjs';
import { startDaemon } from './deployed.mjs';
import { onCleanup } from './procs.mjs';

const mb = (b) => Math.round((b / 1e6) * 10) / 10;

export async function daemonWatchRss({ dir, files = 200_000, perDir = 100, log = () => {} }) {
  mkdirSync(dir, { recursive: true });
  const undo = onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const tree = path.join(dir, 'tree');
  const t0 = performance.now();
  log(`daemon RSS: generating a tree of ${files} small files...`);
  generate(tree, files, perDir, 5);
  const generateS = (performance.now() - t0) / 1000;
  const planFile = path.join(dir, 'plan.yaml');
  writeFileSync(
    planFile,
    JSON.stringify({ name: 'watch-probe', product: 'generic', quiesce: { mode: 'none' }, trees: [{ name: 'artifacts', source: tree }] }),
  );
  const store = path.join(dir, 'store');
  mkdirSync(store);
  let d;
  try {
    log('daemon RSS: starting the agent daemon on it...');
    d = await startDaemon({ dir: path.join(dir, 'daemon'), name: 'watch-probe', planFile, store, allowedRoots: [dir], log });
    const baseline = d.memory().rssBytes;
    const w = await d.watching(['artifacts']);
    log(`daemon RSS: watching after ${w.seconds.toFixed(1)} s (first-scan peak ${mb(w.hwmBytes)} MB); waiting for a steady RSS...`);
    let low = d.memory().rssBytes;
    for (let t = 0, since = 0; t < 120 && since < 15; t++, since++) {
      await new Promise((r) => setTimeout(r, 1000));
      const now = d.memory().rssBytes;
      if (now < low - 1048576) {
        low = now;
        since = 0;
      }
    }
    return {
      agent_daemon_watch_files: files,
      agent_daemon_watch_generate_s: generateS,
      agent_daemon_watcher_start_s: w.seconds,
      agent_daemon_baseline_rss_mb: mb(baseline),
      agent_daemon_first_scan_peak_rss_mb: mb(w.hwmBytes),
      agent_daemon_steady_rss_mb: mb(Math.min(low, d.memory().rssBytes)),
    };
  } finally {
    await d?.stop();
    rmSync(dir, { recursive: true, force: true });
    undo();
  }
}
