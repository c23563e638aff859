// The quick-start flow, run by the bundled daemons from where install.sh put them: bundle,
// install an agent and a controller into a scratch root, then from ROOT/opt/boxback (cwd
// elsewhere, no source tree, no $BOXBACK_PROTO_DIR) make the certificates with the installed
// `boxback certs`, start the controller and two agents with `node`, back up a sample GoCD box
// and restore it onto a fresh one: the bytes are equal, the host file is rewritten for the
// second box, and its server is healthy.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, run } from '../../scripts/lib/cluster.mjs';
import { createSampleBox, type SampleBox } from '../../scripts/lib/sample-box.mjs';
import { snapshotTree as snapshot } from '../../scripts/lib/tree-snapshot.mjs';
import { bundleInto, install } from './helpers.js';

const q = (s: string) => JSON.stringify(s);

interface Daemon {
  child: ChildProcess;
  lines: string[];
  stderr: string;
}

/** Start an installed daemon with node; resolves once it logs `ready`. */
function start(argv: string[], ready: string): Promise<Daemon> {
  const child = spawn(process.execPath, argv, {
    cwd: os.tmpdir(),
    env: { ...process.env, BOXBACK_PROTO_DIR: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const d: Daemon = { child, lines: [], stderr: '' };
  child.stderr!.on('data', (c) => (d.stderr += c));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${argv[0]} not ready in 20s:\n${d.stderr}${d.lines.slice(-5).join('\n')}`)), 20_000);
    child.stdout!.on('data', (c) => {
      for (const l of String(c).split('\n').filter(Boolean)) d.lines.push(l);
      if (d.lines.some((l) => l.includes(ready))) {
        clearTimeout(timer);
        resolve(d);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${argv[0]} exited ${code} before it was ready:\n${d.stderr}${d.lines.slice(-5).join('\n')}`));
    });
  });
}

async function stop(d: Daemon | undefined): Promise<void> {
  if (!d || d.child.exitCode !== null || d.child.signalCode !== null) return;
  const exited = new Promise((r) => d.child.on('exit', r));
  d.child.kill('SIGTERM');
  await exited;
}

let dir: string;
let root: string;
let opt: string;
let box1: SampleBox;
let box2: SampleBox;
const daemons: Daemon[] = [];
let cliConfig: string;
// The agent's host lock is an abstract Unix socket named after the host, machine-wide:
// names of our own, so tests running beside this one cannot make it busy.
const tag = Math.random().toString(36).slice(2, 8);
const A = `bundled-a-${tag}`;
const B = `bundled-b-${tag}`;

/** The daemons' last log lines, for a failure message. */
function daemonTail(): string {
  return daemons.map((d) => `--- ${d.child.spawnargs.slice(1, 2).join(' ')}\n${d.stderr}${d.lines.slice(-8).join('\n')}`).join('\n');
}

/** The installed CLI (ROOT/opt/boxback/boxback.mjs), from a directory outside the repo; 40 s at most. */
async function boxback(args: string[]) {
  const child = spawn(process.execPath, [path.join(opt, 'boxback.mjs'), ...args], {
    cwd: os.tmpdir(),
    env: { ...process.env, BOXBACK_PROTO_DIR: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += c));
  child.stderr.on('data', (c) => (stderr += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), 40_000);
  const code = await new Promise<number>((resolve) => child.on('close', (c, sig) => resolve(c ?? (sig ? 128 : 1))));
  clearTimeout(timer);
  if (code !== 0) throw new Error(`boxback ${args.join(' ')} exited ${code}:\n${stderr}${stdout}\n${daemonTail()}`);
  return { code, stdout, stderr };
}

const live = (box: SampleBox) => (rel: string) =>
  rel === path.relative(box.root, box.dbFile) || rel.startsWith('run') || rel.startsWith('var/log') || rel === 'plan.yaml';

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-bundled-'));
  root = path.join(dir, 'root');
  opt = path.join(root, 'opt/boxback');
  const bundle = await bundleInto(path.join(dir, 'bundle'));
  for (const args of [['--controller'], ['--agent', '--plan', 'gocd', '--name', 'gocd1']]) {
    const r = install(root, bundle, args);
    if (r.code !== 0) throw new Error(`install.sh ${args.join(' ')} failed: ${r.stderr}${r.stdout}`);
  }
  rmSync(path.join(dir, 'bundle'), { recursive: true }); // only the installed copy is left

  box1 = await createSampleBox({
    root: path.join(dir, 'box1'),
    port: await freePort(),
    seed: 1,
    hostname: 'gocd-box-1',
    address: '10.20.0.11',
    artifacts: 30,
    testReports: 8,
  });
  box2 = await createSampleBox({
    root: path.join(dir, 'box2'),
    port: await freePort(),
    seed: 2,
    hostname: 'gocd-box-2',
    address: '10.20.0.12',
    artifacts: 3,
    testReports: 1,
  });
  await box1.start();
  await box2.start();

  const etc = path.join(root, 'etc/boxback');
  const certs = path.join(etc, 'certs');
  const lib = path.join(root, 'var/lib/boxback');
  await boxback(['certs', 'init', '--dir', certs]);
  for (const h of [A, B]) await boxback(['certs', 'issue', '--dir', certs, '--host', h]);

  // The operator's edit of the skeleton: a loopback port, and paths inside the scratch root.
  const ctlPort = await freePort();
  const controllerYaml = path.join(etc, 'controller.yaml');
  writeFileSync(
    controllerYaml,
    `listen: 127.0.0.1:${ctlPort}
tls: { ca: certs/ca.crt, cert: certs/controller.crt, key: certs/controller.key }
catalog: ${q(path.join(lib, 'controller/catalog.db'))}
store: ${q(path.join(lib, 'store'))}
concurrency: 2
`,
  );
  const tok = await run(
    [
      process.execPath,
      path.join(opt, 'boxback-controller.mjs'),
      '--config',
      controllerYaml,
      'token',
      'create',
      '--role',
      'admin',
      '--name',
      'ops',
    ],
    { cwd: os.tmpdir() },
  );
  if (tok.code !== 0) throw new Error(`token create failed: ${tok.stderr}`);
  const token = tok.stdout.trim().split('\n').pop()!.trim();
  daemons.push(await start([path.join(opt, 'boxback-controller.mjs'), '--config', controllerYaml], 'controller listening'));

  const addresses: Record<string, string> = {};
  for (const [name, box] of [
    [A, box1],
    [B, box2],
  ] as const) {
    const port = await freePort();
    addresses[name] = `127.0.0.1:${port}`;
    const yaml = path.join(etc, `agent-${name}.yaml`);
    mkdirSync(path.join(lib, 'agent', name), { recursive: true, mode: 0o700 });
    writeFileSync(
      yaml,
      `name: ${name}
listen: 127.0.0.1:${port}
tls: { ca: certs/ca.crt, cert: certs/agents/${name}.crt, key: certs/agents/${name}.key }
store: ${q(path.join(lib, 'store'))}
stateDir: ${q(path.join(lib, 'agent', name))}
plan: ${q(box.planFile)}
allowedRoots: [${q(box.root)}]
identity: { hostname: ${q(box.hostname)}, addresses: [${q(box.address)}] }
`,
    );
    daemons.push(await start([path.join(opt, 'boxback-agent.mjs'), '--config', yaml], 'agent listening'));
  }

  cliConfig = path.join(dir, 'cli.yaml');
  writeFileSync(cliConfig, `controller: 127.0.0.1:${ctlPort}\nca: ${q(path.join(certs, 'ca.crt'))}\ntoken: ${q(token)}\n`, { mode: 0o600 });
  for (const name of [A, B]) await boxback(['--config', cliConfig, 'hosts', 'add', name, '--address', addresses[name]]);
});

afterAll(async () => {
  for (const d of daemons) await stop(d).catch(() => undefined);
  for (const b of [box1, box2]) await b?.stop().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the bundled daemons, from the installed location', () => {
  it('back up a GoCD box and restore it onto a fresh one: the same bytes', async () => {
    const before = snapshot(box1.root, live(box1));
    await boxback(['--config', cliConfig, 'backup', 'create', '--host', A, '--yes']);

    const listed = JSON.parse((await boxback(['--config', cliConfig, 'backups', '--host', A, '--json'])).stdout);
    const backups = Array.isArray(listed) ? listed : listed.backups;
    expect(backups).toHaveLength(1);
    const b = backups[0];
    expect(b.restorable).toBe(true);
    // (dot entries are the agent's own: .journal-farm holds the next backup's prepared link farm)
    expect(readdirSync(path.join(root, 'var/lib/boxback/store', A)).filter((n) => !n.startsWith('.'))).toEqual([
      expect.stringMatching(/^backup_\d{8}-\d{6}$/),
    ]);

    const restored = await boxback(['--config', cliConfig, 'backup', 'restore', b.id, '--target', B, '--yes']);
    // Safety copies of what B held stay beside its targets until the restore is confirmed.
    const job = /boxback restore confirm (\S+)/.exec(restored.stdout + restored.stderr)?.[1];
    expect(job, restored.stdout + restored.stderr).toBeTruthy();
    await boxback(['--config', cliConfig, 'restore', 'confirm', job!]);
    const after = snapshot(box2.root, live(box2));
    const envRel = path.relative(box1.root, box1.envFile);
    const keys = new Set([...Object.keys(before), ...Object.keys(after)]);
    const differ = [...keys].filter((k) => before[k] !== after[k] && k !== envRel);
    expect(differ).toEqual([]);
    expect(Object.keys(before).length).toBeGreaterThan(40);

    const env = readFileSync(box2.envFile, 'utf8');
    expect(env).toContain('gocd-box-2');
    expect(env).toContain('10.20.0.12');
    expect(env).not.toContain('10.20.0.11');
    expect(await box2.healthy()).toBe(true);
  });

  it('the daemons log JSON lines to stdout (for the journal)', () => {
    for (const d of daemons) {
      expect(d.lines.length).toBeGreaterThan(0);
      for (const l of d.lines) expect(() => JSON.parse(l)).not.toThrow();
    }
  });
});
