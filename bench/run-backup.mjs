// One backup in its own process, the way the agent runs it, for the bench: prints one JSON
// line with the result's figures and the process's peak memory (maxRSS and VmHWM).
//   node bench/run-backup.mjs AGENT_YAML JOB_ID
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createLogger } from '@boxback/common';
import { loadAgentConfig } from '../packages/agent/dist/config.js';
import { runBackup } from '../packages/agent/dist/backup/backup.js';

const [configFile, jobId = `bench-${Date.now()}`] = process.argv.slice(2);
const config = loadAgentConfig(configFile);
const log = createLogger('bench', process.env.BOXBACK_LOG_LEVEL ?? 'warn').child({ jobId });
const t0 = performance.now();
const res = await runBackup(
  { config, log, jobId, signal: new AbortController().signal, emit: () => undefined },
  { jobId, live: false, initiatedBy: 'bench', initiatedVia: 'cli' },
);
const seconds = (performance.now() - t0) / 1000;
// Peak memory first: reading the manifest below is the bench's, not the agent's.
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
const maxRssBytes = process.resourceUsage().maxRSS * 1024;
// A large manifest is not sent back (JobResult.manifestJson is empty): read it from the store
// (the bench's one-shot process always has a local store).
const manifestJson =
  res.manifestJson || (res.backupPath ? readFileSync(path.join(config.store.path, res.backupPath, 'manifest.json'), 'utf8') : '');
// The manifest minus its file list (one line per file): parsing 100k entries here would
// count the bench's own memory as the agent's.
const m = manifestJson ? JSON.parse(manifestJson.replace(/"files": \[\n[\s\S]*?\n \]/, '"files": []')) : undefined;
process.stdout.write(
  `${JSON.stringify({
    status: res.status,
    error: res.errorMessage,
    seconds,
    backupPath: res.backupPath,
    sizeBytes: res.sizeBytes,
    windowMs: m?.quiesce.windowMs ?? 0,
    copyMs: m?.quiesce.copyMs ?? 0,
    phases: m?.phases.map((p) => ({ name: p.name, ms: p.durationMs })) ?? [],
    files: m?.totals.files ?? 0,
    manifestBytes: manifestJson.length,
    manifestSent: res.manifestJson.length > 0,
    linkedFiles: m?.trees.reduce((s, t) => s + t.linkedFiles, 0) ?? 0,
    maxRssBytes,
    vmHwmBytes: hwm ? Number(hwm[1]) * 1024 : 0,
  })}\n`,
);
process.exit(res.status === 'Failed' ? 1 : 0);
