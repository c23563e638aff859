// The agent's peak memory on a box with many small tree files: a full backup, then an
// incremental one after touching a few files, each in its own process (bench/run-backup.mjs),
// printing each process's VmHWM.
//   npm run build && node bench/rss-probe.mjs [--files 60000] [--dir DIR] [--keep]
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AGENT_NODE_FLAGS } from '../packages/agent/dist/node-flags.js';
import { SIZES, generateBox } from './lib/gen-box.mjs';
import { benchArgs } from './lib/cli-args.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: args } = benchArgs(import.meta.url, {
  options: { files: { type: 'string', default: '60000' }, dir: { type: 'string' }, keep: { type: 'boolean', default: false } },
});
const nFiles = Number(args.files);

const root = args.dir ?? mkdtempSync(path.join(os.tmpdir(), 'boxback-rss-'));
mkdirSync(root, { recursive: true });
const port = 20000 + Math.floor(Math.random() * 20000);
SIZES.probe = { dbBytes: 8 << 20, artifacts: 200, testReports: 200, commits: 3 };
const gen = await generateBox({ root: path.join(root, 'box'), port, size: 'probe', seed: 7 });
const { box } = gen;
// The bulk: small artifact files (0.5-2 KiB), 20 per job directory, GoCD-like paths.
const fileOf = (i) =>
  path.join(box.artifacts, 'pipelines', `pipe-${Math.floor(i / 20) % 40}`, String(Math.floor(i / 800)), 'build', 'job', `console-${i}.log`);
const made = new Set();
for (let i = 0; i < nFiles; i++) {
  const file = fileOf(i);
  if (!made.has(path.dirname(file))) mkdirSync(path.dirname(file), { recursive: true });
  made.add(path.dirname(file));
  writeFileSync(file, `${'x'.repeat(512 + (i % 1536))}\n${i}\n`);
}
const store = path.join(root, 'store');
mkdirSync(store, { recursive: true });
const agentYaml = path.join(root, 'agent.yaml');
writeFileSync(
  agentYaml,
  JSON.stringify({
    name: 'probe',
    listen: '127.0.0.1:0',
    tls: { ca: 'x', cert: 'x', key: 'x' },
    store,
    stateDir: path.join(root, 'state'),
    plan: box.planFile,
    allowedRoots: [box.root],
  }),
);

function run(jobId) {
  const r = spawnSync(process.execPath, [...AGENT_NODE_FLAGS, path.join(here, 'run-backup.mjs'), agentYaml, jobId], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line);
  } catch {
    throw new Error(`backup process failed (${r.status}): ${r.stderr.slice(-2000)}`);
  }
}
const mib = (b) => (b / 1048576).toFixed(1);
try {
  await box.start();
  const full = run('probe-full');
  if (full.status === 'Failed') throw new Error(`full backup failed: ${full.error}`);
  for (let i = 0; i < nFiles; i += Math.ceil(nFiles / 20)) appendFileSync(fileOf(i), 'touched\n');
  writeFileSync(path.join(box.artifacts, 'new-file.log'), 'new\n');
  await new Promise((res) => setTimeout(res, 1100)); // a new backup_<ts> second
  const incr = run('probe-incr');
  if (incr.status === 'Failed') throw new Error(`incremental backup failed: ${incr.error}`);
  const out = {
    treeFiles: nFiles,
    full: {
      files: full.files,
      manifestBytes: full.manifestBytes,
      vmHwmMiB: Number(mib(full.vmHwmBytes)),
      seconds: Number(full.seconds.toFixed(1)),
    },
    incremental: {
      files: incr.files,
      linkedFiles: incr.linkedFiles,
      manifestBytes: incr.manifestBytes,
      vmHwmMiB: Number(mib(incr.vmHwmBytes)),
      seconds: Number(incr.seconds.toFixed(1)),
    },
  };
  process.stdout.write(`${JSON.stringify(out, null, 1)}\n`);
} finally {
  await box.stop().catch(() => undefined);
  if (!args.keep && !args.dir) rmSync(root, { recursive: true, force: true });
}
