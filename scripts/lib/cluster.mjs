// A boxback installation on loopback in a scratch directory: certificates, one controller
// and any number of agents as real child processes (the built dist/ of each package),
// driven through the real `boxback` CLI. Used by `npm run quickstart` and the e2e tests.
//
//   const c = await startCluster({ dir });
//   const a = await c.addAgent({ name: 'gocd1', box });      // box from createSampleBox
//   await c.cli(['hosts', 'add', 'gocd1', '--address', a.address]);
//   ...
//   await c.stop();
import { spawn } from 'node:child_process';
import { AGENT_NODE_FLAGS } from '../../packages/agent/dist/node-flags.js';
import { CONTROLLER_NODE_FLAGS } from '../../packages/controller/dist/node-flags.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = {
  agent: path.join(repo, 'packages/agent/dist/main.js'),
  controller: path.join(repo, 'packages/controller/dist/main.js'),
  cli: path.join(repo, 'packages/controller/dist/cli/main.js'),
};

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const q = (s) => JSON.stringify(s);

/** Run a program to completion; resolves { code, stdout, stderr, ms }. */
export function run(argv, opts = {}) {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(argv[0], argv.slice(1), { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
      opts.onStdout?.(String(d));
    });
    child.stderr.on('data', (d) => {
      stderr += d;
      opts.onStderr?.(String(d));
    });
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), signal, stdout, stderr, ms: Date.now() - started }));
  });
}

/** A daemon child process whose JSON log lines are kept; resolves once `readyMsg` is logged. */
function startDaemon(name, argv, logFile, readyMsg) {
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  let stderr = '';
  const d = {
    name,
    child,
    lines,
    get stderr() {
      return stderr;
    },
    exited: new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal }))),
  };
  const logs = [];
  child.stdout.on('data', (chunk) => {
    const text = String(chunk);
    logs.push(text);
    for (const l of text.split('\n').filter(Boolean)) lines.push(l);
  });
  child.stderr.on('data', (c) => (stderr += c));
  d.flushLog = () => writeFileSync(logFile, logs.join(''));
  d.ready = new Promise((resolve, reject) => {
    // 60 s: on a loaded 2-core machine a daemon's start (TLS, catalog, first poll) has taken 20 s and more
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 60s:\n${stderr}${lines.slice(-5).join('\n')}`)), 60_000);
    const check = () => {
      if (lines.some((l) => l.includes(readyMsg))) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', check);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited with ${code} before it was ready:\n${stderr}${lines.slice(-5).join('\n')}`));
    });
  });
  /** Stop with a signal and wait for the exit. */
  d.stop = async (signal = 'SIGTERM') => {
    if (child.exitCode !== null || child.signalCode !== null) return d.exited;
    child.kill(signal);
    const r = await d.exited;
    d.flushLog();
    return r;
  };
  return d;
}

/**
 * @param {{ dir: string, concurrency?: number, controllerExtra?: string, storeYaml?: string, dashboard?: boolean | { sessionTimeout?: string | number } }} o
 * storeYaml: the `store:` value of the controller's and (default) the agents' configs, as YAML
 * (a flow mapping such as `{ kind: s3, ... }`); default the local directory `store`.
 * dashboard: the controller also serves the dashboard on a free loopback port (cluster.dashboardUrl).
 */
export async function startCluster(o) {
  const dir = path.resolve(o.dir);
  const certs = path.join(dir, 'certs');
  const store = path.join(dir, 'store');
  mkdirSync(store, { recursive: true });
  mkdirSync(path.join(dir, 'logs'), { recursive: true });
  const cliConfig = path.join(dir, 'cli.yaml');
  const daemons = [];

  const cliRaw = (args, opts = {}) => run([process.execPath, BIN.cli, ...args], { cwd: dir, ...opts });
  const init = await cliRaw(['certs', 'init', '--dir', certs]);
  if (init.code !== 0) throw new Error(`boxback certs init failed: ${init.stderr}`);

  const ctlPort = await freePort();
  const httpPort = o.dashboard ? await freePort() : 0;
  const session = typeof o.dashboard === 'object' && o.dashboard.sessionTimeout !== undefined ? o.dashboard.sessionTimeout : '8h';
  const controllerYaml = path.join(dir, 'controller.yaml');
  writeFileSync(
    controllerYaml,
    `listen: 127.0.0.1:${ctlPort}
tls: { ca: certs/ca.crt, cert: certs/controller.crt, key: certs/controller.key }
catalog: catalog.db
store: ${o.storeYaml ?? 'store'}
concurrency: ${o.concurrency ?? 4}
${httpPort ? `http: { listen: 127.0.0.1:${httpPort}, sessionTimeout: ${q(session)} }\n` : ''}${o.controllerExtra ?? ''}`,
  );
  const tok = await run([
    process.execPath,
    BIN.controller,
    '--config',
    controllerYaml,
    'token',
    'create',
    '--role',
    'admin',
    '--name',
    'quickstart-admin',
  ]);
  if (tok.code !== 0) throw new Error(`creating the admin token failed: ${tok.stderr}`);
  const token = tok.stdout.trim().split('\n').pop().trim();
  writeFileSync(cliConfig, `controller: 127.0.0.1:${ctlPort}\nca: certs/ca.crt\ntoken: ${q(token)}\n`, { mode: 0o600 });

  const startController = async () => {
    const d = startDaemon(
      'controller',
      [process.execPath, ...CONTROLLER_NODE_FLAGS, BIN.controller, '--config', controllerYaml],
      path.join(dir, 'logs/controller.log'),
      httpPort ? 'dashboard listening' : 'controller listening',
    );
    daemons.push(d);
    await d.ready;
    return d;
  };
  let controller = await startController();

  const cluster = {
    dir,
    certs,
    store,
    token,
    controllerYaml,
    cliConfig,
    /** https://127.0.0.1:PORT/ when started with `dashboard` (the controller's certificate; CA in certs/ca.crt). */
    dashboardUrl: httpPort ? `https://127.0.0.1:${httpPort}/` : '',
    get controller() {
      return controller;
    },
    agents: {},
    /** Run the boxback CLI against this cluster. */
    cli: (args, opts = {}) => cliRaw(['--config', cliConfig, ...args], opts),
    /** Restart the controller (after a crash test, say). */
    restartController: async () => {
      controller = await startController();
      return controller;
    },
    /**
     * Start an agent for a sample box. `box` comes from createSampleBox.
     * @param {{ name: string, box: any, allowedRoots?: string[], extra?: string, store?: string }} a (store: the agent's own view of the store, default the controller's)
     */
    addAgent: async (a) => {
      const iss = await cliRaw(['certs', 'issue', '--dir', certs, '--host', a.name]);
      if (iss.code !== 0) throw new Error(`boxback certs issue failed: ${iss.stderr}`);
      const port = await freePort();
      const agentDir = path.join(dir, 'agents', a.name);
      mkdirSync(agentDir, { recursive: true });
      const yaml = path.join(agentDir, 'agent.yaml');
      writeFileSync(
        yaml,
        `name: ${a.name}
listen: 127.0.0.1:${port}
tls: { ca: ${q(path.join(certs, 'ca.crt'))}, cert: ${q(path.join(certs, 'agents', `${a.name}.crt`))}, key: ${q(path.join(certs, 'agents', `${a.name}.key`))} }
store: ${a.store ? q(a.store) : (o.storeYaml ?? q(store))}
stateDir: ${q(path.join(agentDir, 'state'))}
plan: ${q(a.box.planFile)}
allowedRoots: [${(a.allowedRoots ?? [a.box.root]).map(q).join(', ')}]
identity: { hostname: ${q(a.box.hostname)}, addresses: [${q(a.box.address)}] }
${a.extra ?? ''}`,
      );
      const start = async () => {
        const d = startDaemon(
          `agent ${a.name}`,
          [process.execPath, ...AGENT_NODE_FLAGS, BIN.agent, '--config', yaml],
          path.join(dir, 'logs', `agent-${a.name}.log`),
          'agent listening',
        );
        daemons.push(d);
        await d.ready;
        return d;
      };
      const agent = { name: a.name, address: `127.0.0.1:${port}`, port, config: yaml, box: a.box, daemon: await start() };
      agent.restart = async () => (agent.daemon = await start());
      cluster.agents[a.name] = agent;
      return agent;
    },
    /** Stop every daemon it started (SIGTERM, then wait). */
    stop: async () => {
      await Promise.all(daemons.map((d) => d.stop('SIGTERM').catch(() => undefined)));
    },
  };
  return cluster;
}
