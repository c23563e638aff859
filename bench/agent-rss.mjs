#!/usr/bin/env node
// The agent daemon's memory through a full backup, an incremental one after a CI day and a
// restore, on a generated box (bench/lib/gen-box.mjs): each job's peak RSS (VmHWM, reset before
// it), and from a sampling preload (bench/lib/mem-sampler.mjs) the peaks of the JS heap,
// external memory, ArrayBuffers and threads during it, and the agent's CPU seconds.
//
//   npm run build && node bench/agent-rss.mjs [--size files] [--dir DIR] [--keep] [--json] [--snapshot-mb N] [--only full]
//
// `--only full`: the first scan and the full backup only (a faster loop for the full's peak).
// `--size files` has the default box's file counts (120k tree files) with a small database:
// the agent's memory scales with files, not bytes. Target (issue 16): every peak <= 150 MB.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDaemon } from './lib/deployed.mjs';
import { generateBox, simulateCiDay } from './lib/gen-box.mjs';
import { guard, onCleanup, stopEverything } from './lib/procs.mjs';
import { benchArgs } from './lib/cli-args.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: args } = benchArgs(import.meta.url, {
  options: {
    size: { type: 'string', default: 'files' },
    dir: { type: 'string' },
    keep: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    seed: { type: 'string', default: '42' },
    'snapshot-mb': { type: 'string', default: '0' },
    only: { type: 'string' },
  },
});
const say = (m) => process.stderr.write(`[agent-rss] ${m}\n`);
guard({ timeoutS: 3 * 3600, log: say });
mkdirSync(args.dir ?? os.tmpdir(), { recursive: true });
const root = mkdtempSync(path.join(args.dir ?? os.tmpdir(), 'boxback-agent-rss-'));
onCleanup(() => (args.keep ? say(`kept ${root}`) : rmSync(root, { recursive: true, force: true })));
const samples = path.join(root, 'mem-samples.jsonl');
const mb = (b) => Math.round(b / 1e5) / 10;

/** Peaks of the sampled fields between two times. */
function peaks(from, to) {
  const out = {};
  for (const l of readFileSync(samples, 'utf8').split('\n')) {
    if (!l) continue;
    const s = JSON.parse(l);
    if (s.t < from || s.t > to) continue;
    for (const k of ['rss', 'heapUsed', 'heapTotal', 'external', 'arrayBuffers', 'threads']) out[k] = Math.max(out[k] ?? 0, s[k]);
  }
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, k === 'threads' ? v : mb(v)]));
}

const figures = {};
let daemon;
try {
  say(`generating a ${args.size} box under ${root}...`);
  const gen = await generateBox({
    root: path.join(root, 'box'),
    port: 20000 + Math.floor(Math.random() * 20000),
    size: args.size,
    seed: Number(args.seed),
  });
  const { box } = gen;
  onCleanup(() => box.stop());
  await box.start();
  const store = path.join(root, 'store');
  mkdirSync(store);
  daemon = await startDaemon({
    dir: path.join(root, 'daemon'),
    name: 'bench',
    planFile: box.planFile,
    store,
    stateDir: path.join(root, 'state'),
    allowedRoots: [box.root],
    nodeArgs: ['--import', path.join(here, 'lib/mem-sampler.mjs')],
    env: { BOXBACK_MEM_SAMPLE_FILE: samples, BOXBACK_MEM_SNAPSHOT_MB: args['snapshot-mb'] },
    log: say,
  });
  const w = await daemon.watching(['artifacts', 'test-reports']);
  figures.first_scan_peak_mb = mb(w.hwmBytes);
  await new Promise((r) => setTimeout(r, 3000)); // the GC after the first scans
  figures.idle_rss_mb = mb(daemon.memory().rssBytes);
  const measure = async (name, fn) => {
    const t0 = Date.now();
    const r = await fn();
    figures[name] = {
      peak_rss_mb: mb(r.peakRssBytes),
      seconds: Math.round(r.seconds * 100) / 100,
      agent_cpu_s: r.agentCpuSeconds,
      children_cpu_s: r.childrenCpuSeconds,
      threadCpu: r.threadCpu,
      rss_by_phase_mb: Object.fromEntries(Object.entries(r.rssByPhase).map(([k, v]) => [k, mb(v)])),
      sampled: peaks(t0, Date.now()),
    };
    say(`  ${name}: ${JSON.stringify(figures[name])}`);
    await new Promise((r) => setTimeout(r, 3000));
    return r;
  };
  const mark = daemon.mark();
  await measure('full', () => daemon.backup('rss-full'));
  if (args.only !== 'full') {
    simulateCiDay(gen);
    await daemon.farmsPrepared(['artifacts', 'test-reports'], mark);
    await new Promise((r) => setTimeout(r, 2000));
    const incr = await measure('incremental', () => daemon.backup('rss-incr'));
    await measure('restore', () => daemon.restore('rss-restore', incr.result.backupPath));
  }
  figures.after_rss_mb = mb(daemon.memory().rssBytes);
  await daemon.stop();
} finally {
  // The daemon's log (JSON lines: each step's timings) beside the run, for what the samples show.
  if (daemon) writeFileSync(path.join(args.dir ?? os.tmpdir(), `agent-rss-${path.basename(root)}.log`), daemon.agent.output());
  await stopEverything();
}
if (args.json) process.stdout.write(`${JSON.stringify(figures)}\n`);
else console.log(JSON.stringify(figures, null, 1));
