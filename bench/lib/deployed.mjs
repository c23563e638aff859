// The agent as deployed, for the bench: a long-lived `boxback-agent` daemon (its change
// journals on) driven over gRPC with the controller's client certificate, the way the
// controller drives it.
//
//   const d = await startDaemon({ dir, name, planFile, store, allowedRoots, log });
//   await d.watching(['artifacts', 'test-reports']);     // every tree's first scan done
//   const b = await d.backup('bench-full');               // { seconds, result, manifest, peakRssBytes, steps }
//   await d.farmsPrepared(['artifacts', ...], from);       // the next backup's link farms are ready
//   const r = await d.restore('bench-restore', backupPath) // { seconds, dataPathSeconds, phases, peakRssBytes }; a 3rd argument: another host's backup
//   await d.stop();
//
// Each job: reset the daemon's peak RSS (VmHWM), call the RPC and collect its progress events
// (arrival times), read the manifest from the store (phases, quiesce window, trees' sync mode),
// and pick the job's sub-step timings out of the daemon's debug log lines (steps()).
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { serverStream, unary } from '@boxback/common';
import { resetPeakMemory, startAgentDaemon } from '../../test/helpers/agent-daemon.mjs';
import { track } from './procs.mjs';

/** Parse the JSON log lines of `text` (others are skipped). */
function logLines(text) {
  const out = [];
  for (const l of text.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l));
    } catch {
      /* a partial line */
    }
  }
  return out;
}

/**
 * The fixed costs a backup pays below its phases, in seconds, from the daemon's log lines
 * for `jobId`: the previous manifest read in CREATING_DIR, each tree's farm / rsync runs /
 * describe, the flush (syncfs or fsyncs).
 */
export function steps(text, jobId) {
  const s = {};
  for (const l of logLines(text)) {
    if (l.jobId !== jobId) continue;
    if (l.msg === 'backup directory created') {
      s.creating_dir_lookup_s = l.lookupMs / 1000;
      s.creating_dir_previous_index_s = l.previousIndexMs / 1000;
    } else if (/^tree .* synced from the journal$/.test(l.msg)) {
      const t = l.tree.replace(/[^a-z0-9]+/gi, '_');
      s[`${t}_farm_s`] = l.linkMs / 1000;
      s[`${t}_journal_sync_s`] = l.syncMs / 1000;
      // (the name of earlier runs: the roots' copy, by rsync or, since session 19, in the agent: copied_by_rsync 0)
      s[`${t}_rsync_copy_s`] = (l.copyMs ?? 0) / 1000;
      s[`${t}_copied_by_rsync`] = l.copiedBy === 'rsync' ? 1 : 0;
      s[`${t}_rsync_dirs_s`] = (l.dirsMs ?? 0) / 1000;
      s[`${t}_changed_roots`] = l.roots;
    } else if (/^tree .* synced by rsync$/.test(l.msg)) {
      s[`${l.tree.replace(/[^a-z0-9]+/gi, '_')}_rsync_full_s`] = l.rsyncMs / 1000;
    } else if (/^tree .* described$/.test(l.msg)) {
      s[`${l.tree.replace(/[^a-z0-9]+/gi, '_')}_describe_s`] = l.describeMs / 1000;
    } else if (l.msg === 'manifest written and backup renamed') {
      s.publish_manifest_rename_s = l.ms / 1000;
    } else if (l.msg === 'change journals settled') {
      s.journals_seal_s = l.ms / 1000;
    } else if (l.msg === 'heap bounded during the job') {
      // memory.ts boundHeap: its full GCs and malloc_trims during the job, and the RSS the trims gave back
      s.bound_gcs = l.gcs;
      s.bound_gc_s = l.gcMs / 1000;
      s.bound_trims = l.trims;
      s.bound_trim_s = (l.trimMs ?? 0) / 1000;
      s.bound_trimmed_mb = l.trimmedMb;
    } else if (l.msg === 'backup flushed to disk') {
      s.publish_flush_s = l.ms / 1000;
      s.publish_flush_how = l.how;
    }
  }
  return s;
}

/** A restore's logged step timings ('restore step timed': verify_sha256, extract_<archive>, fetch_<tree>, chown, flush, swap...), seconds. */
export function restoreSteps(text, jobId) {
  const s = {};
  for (const l of logLines(text))
    if (l.jobId === jobId && l.msg === 'restore step timed') s[l.step.replace(/[^a-z0-9]+/gi, '_').toLowerCase()] = l.ms / 1000;
  return s;
}

const CLK_TCK = 100;
/**
 * CPU seconds of a process and of its waited-for children so far (/proc/PID/stat utime,
 * stime, cutime, cstime): a figure a loaded machine does not change, unlike wall time.
 */
export function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  // After "pid (comm) ": field 3 is index 0, so utime (14) is index 11.
  const [ut, st, cut, cst] = f.slice(11, 15).map(Number);
  return { self: (ut + st) / CLK_TCK, children: (cut + cst) / CLK_TCK };
}

/** CPU seconds so far of the JS thread (main) and of every other thread (workers: libuv's fs, zlib and crypto jobs, V8's GC helpers). */
export function threadCpuSeconds(pid) {
  const out = {};
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = tid === String(pid) ? 'main' : 'workers';
      const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1].split(' ');
      out[name] = (out[name] ?? 0) + (Number(f[11]) + Number(f[12])) / CLK_TCK;
    } catch {
      /* the thread ended */
    }
  }
  return out;
}

/** Each phase's span from its first event to its last (seconds); VERIFY of a restore overlaps the staging phases. */
function phaseSpans(events) {
  const span = {};
  for (const e of events) {
    span[e.phase] ??= { from: e.at, to: e.at };
    span[e.phase].to = e.at;
  }
  return Object.fromEntries(Object.entries(span).map(([k, v]) => [k, (v.to - v.from) / 1000]));
}

/**
 * `store`: a local store's directory, or a store config object (`{ kind: 's3', ... }`); for the
 * latter, `readManifest(backupPath)` reads a manifest the RPC did not send back (over 1 MiB).
 */
export async function startDaemon({ dir, name, planFile, store, allowedRoots, stateDir, nodeArgs, env, readManifest, log = () => {} }) {
  readManifest ??= async (backupPath) => readFileSync(path.join(store, backupPath, 'manifest.json'), 'utf8');
  const agent = await startAgentDaemon({
    dir,
    name,
    planFile,
    store,
    allowedRoots,
    stateDir,
    nodeArgs,
    env,
    startTimeoutMs: 60_000,
    onSpawn: track,
  });
  const pid = agent.proc.pid;

  async function job(rpc, req) {
    resetPeakMemory(pid);
    const cpu0 = cpuSeconds(pid);
    const threads0 = threadCpuSeconds(pid);
    const events = [];
    let result;
    const t0 = performance.now();
    // RSS sampled every 50 ms, the highest per phase (the phase of the last progress event): where the peak is
    const rssByPhase = {};
    const sampler = setInterval(() => {
      const ph = events.at(-1)?.phase ?? 'START';
      rssByPhase[ph] = Math.max(rssByPhase[ph] ?? 0, agent.memory().rssBytes);
    }, 50);
    try {
      for await (const ev of serverStream(agent.client, rpc, req)) {
        if (ev.progress) events.push({ phase: ev.progress.phase, state: ev.progress.state, at: Date.now() });
        if (ev.result) result = ev.result;
      }
    } finally {
      clearInterval(sampler);
    }
    const seconds = (performance.now() - t0) / 1000;
    if (!result) throw new Error(`${rpc} ${req.jobId}: the stream ended without a result`);
    if (result.status === 'Failed') throw new Error(`${rpc} ${req.jobId} failed: ${result.errorCode} ${result.errorMessage}`);
    const cpu1 = cpuSeconds(pid);
    const threads1 = threadCpuSeconds(pid);
    const threadCpu = Object.fromEntries(Object.entries(threads1).map(([k, v]) => [k, Math.round((v - (threads0[k] ?? 0)) * 100) / 100]));
    const cpu = { agentCpuSeconds: cpu1.self - cpu0.self, childrenCpuSeconds: cpu1.children - cpu0.children, threadCpu };
    return { seconds, result, events, peakRssBytes: agent.memory().hwmBytes, rssByPhase, ...cpu };
  }

  return {
    agent,
    pid,
    memory: () => agent.memory(),
    /** Wait until every named tree is watched (its first scan done); the peak RSS meanwhile. */
    async watching(trees, timeoutMs = 15 * 60_000) {
      const t0 = performance.now();
      for (const t of trees) await agent.waitForLog(new RegExp(`"msg":"watching ${t} for the change journal"`), { timeoutMs });
      return { seconds: (performance.now() - t0) / 1000, ...agent.memory() };
    },
    /** Offset into the daemon's output, for farmsPrepared's `from`. */
    mark: () => agent.output().length,
    /** Wait until each tree's next link farm is prepared (logged after `from`); its preparation times. */
    async farmsPrepared(trees, from, timeoutMs = 10 * 60_000) {
      const out = {};
      for (const t of trees) {
        const line = await agent.waitForLog(new RegExp(`"msg":"link farm for ${t}'s next backup prepared"`), { timeoutMs, from });
        out[t] = JSON.parse(line).ms / 1000;
      }
      return out;
    },
    async backup(jobId) {
      log(`  backup ${jobId} over gRPC...`);
      const j = await job('Backup', { jobId, live: false, initiatedBy: 'bench', initiatedVia: 'api' });
      const manifestJson = j.result.manifestJson || (await readManifest(j.result.backupPath));
      // The manifest minus its file list (one line per file).
      const manifest = JSON.parse(manifestJson.replace(/"files": \[\n[\s\S]*?\n \]/, '"files": []'));
      return { ...j, manifest, steps: steps(agent.output(), jobId) };
    },
    /** `sourceHost`: the host whose backup it is, when not this agent's own (a restore onto another box). */
    async restore(jobId, backupPath, sourceHost) {
      log(`  restore ${jobId} of ${backupPath} over gRPC...`);
      const j = await job('Restore', {
        jobId,
        backupPath,
        dryRun: false,
        force: false,
        backupId: '',
        ...(sourceHost ? { sourceHost } : {}),
      });
      const phases = phaseSpans(j.events);
      // The data path: what unzip + rsync stand for (no stop, start or health check of the service).
      const service = ['STOP', 'START', 'HEALTH_CHECK'].reduce((s, k) => s + (phases[k] ?? 0), 0);
      // The agent removes the safety copies before it answers: minutes for a large box (the controller allows an hour too).
      await unary(agent.client, 'ConfirmRestore', { jobId }, { deadlineMs: 3_600_000 });
      return { ...j, phases, dataPathSeconds: Math.max(0, j.seconds - service), steps: restoreSteps(agent.output(), jobId) };
    },
    stop: () => agent.stop(),
  };
}
