// A sample services box laid out like a GoCD server, under one root directory, with a
// host plan for it and a stand-in server process that writes to its database.
// Used by `npm run quickstart`, the end-to-end tests and the bench.
//
//   const box = await createSampleBox({ root, port, seed, artifacts: 200 });
//   await box.start(); ... await box.stop();
//
// Layout under ROOT (GoCD's paths, rooted):
//   var/lib/go-server/db/h2db/cruise.mv.db      database (the stand-in appends to it)
//   var/lib/go-server/db/config.git/            config repo (a real git repo)
//   var/lib/go-server/db/shine/                 test reports
//   var/lib/go-server/artifacts/pipelines/...   artifacts
//   var/lib/go-server/plugins/external/, addons/
//   var/lib/go-server/wrapper-config/           wrapper config
//   etc/go/                                     config dir with keystores
//   etc/default/go-server                       env file naming the box's address
//   usr/share/go-server/version.txt             installed product version
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { H2_SCHEMA, h2Query } from './h2-ctl.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const STANDIN_CTL = path.join(here, 'standin-ctl.mjs');
export const H2_CTL = path.join(here, 'h2-ctl.mjs');

/** Deterministic pseudo-random bytes (mulberry32), so a seed gives the same box. */
export function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const bytes = (n, textRatio = 0.5) => {
    const buf = Buffer.allocUnsafe(n);
    const words = ['pipeline', 'stage', 'job', 'passed', 'failed', 'artifact', 'build', 'commit', 'agent', 'upload'];
    let i = 0;
    while (i < n) {
      if (next() < textRatio) {
        const w = `${words[Math.floor(next() * words.length)]} ${Math.floor(next() * 100000)}\n`;
        i += buf.write(w.slice(0, n - i), i, 'latin1');
      } else {
        const run = Math.min(n - i, 64);
        for (let j = 0; j < run; j += 4) buf.writeUInt32LE((next() * 4294967296) >>> 0, i + j > n - 4 ? n - 4 : i + j);
        i += run;
      }
    }
    return buf;
  };
  return { next, bytes, int: (max) => Math.floor(next() * max) };
}

function write(file, data, mode) {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, data, mode ? { mode } : undefined);
}

/**
 * @param {{ root: string, port: number, seed?: number, artifacts?: number, testReports?: number,
 *           dbBytes?: number, version?: string, hostname?: string, address?: string, commits?: number,
 *           h2Port?: number }} o
 * With h2Port, the database is a real H2 TCP server (libh2-java) on that port, a second plan
 * service, backed up with `kind: h2`; the stand-in still serves /health and appends its records
 * elsewhere. start() seeds the builds table the first time (scripts/lib/h2-ctl.mjs).
 */
export async function createSampleBox(o) {
  const root = path.resolve(o.root);
  const r = prng(o.seed ?? 42);
  const gs = path.join(root, 'var/lib/go-server');
  const p = {
    root,
    serverDir: gs,
    db: path.join(gs, 'db/h2db'),
    dbFile: path.join(gs, 'db/h2db/cruise.mv.db'),
    configRepo: path.join(gs, 'db/config.git'),
    shine: path.join(gs, 'db/shine'),
    artifacts: path.join(gs, 'artifacts'),
    plugins: path.join(gs, 'plugins'),
    addons: path.join(gs, 'addons'),
    wrapperConfig: path.join(gs, 'wrapper-config'),
    configDir: path.join(root, 'etc/go'),
    envFile: path.join(root, 'etc/default/go-server'),
    versionFile: path.join(root, 'usr/share/go-server/version.txt'),
    pidFile: path.join(root, 'run/go-server.pid'),
    logFile: path.join(root, 'var/log/go-server.log'),
    planFile: path.join(root, 'plan.yaml'),
  };
  const hostname = o.hostname ?? 'gocd-box-1';
  const address = o.address ?? '10.20.0.11';
  const version = o.version ?? '23.1.0 (16079-a6bf5efa1a2b6d2b5b1c5bbcf0b8f1e3f9e2d0c1)';

  const h2 = o.h2Port
    ? { port: o.h2Port, url: `jdbc:h2:tcp://127.0.0.1:${o.h2Port}/cruise`, pidFile: path.join(root, 'run/h2.pid') }
    : null;
  // With a real H2, the stand-in appends its records beside it, not into H2's file.
  const standinDb = h2 ? path.join(gs, 'db/standin-records.log') : p.dbFile;
  if (h2) mkdirSync(p.db, { recursive: true });
  else {
    write(p.dbFile, r.bytes(o.dbBytes ?? 2 * 1024 * 1024, 0.6));
    write(path.join(p.db, 'cruise.trace.db'), 'trace\n');
  }
  write(
    path.join(p.configDir, 'cruise-config.xml'),
    `<?xml version="1.0" encoding="utf-8"?>\n<cruise schemaVersion="139">\n  <server agentAutoRegisterKey="k-${r.int(1e9)}" siteUrl="https://${hostname}:8154" />\n</cruise>\n`,
  );
  write(path.join(p.configDir, 'keystore'), r.bytes(4096, 0), 0o600);
  write(path.join(p.configDir, 'truststore'), r.bytes(2048, 0), 0o600);
  write(path.join(p.configDir, 'cipher.aes'), r.bytes(32, 0).toString('hex'), 0o600);
  write(path.join(p.wrapperConfig, 'wrapper-properties.conf'), 'wrapper.java.additional.100=-Xmx2g\n');
  write(p.envFile, `GO_SERVER_SYSTEM_PROPERTIES="-Dgo.server.hostname=${hostname} -Dgo.server.ip=${address}"\nGO_SERVER_PORT=8153\n`);
  write(p.versionFile, version);
  write(path.join(p.plugins, 'external/slack-notifier-1.4.jar'), r.bytes(30_000, 0));
  write(path.join(p.addons, 'go-postgresql-1.0.jar'), r.bytes(20_000, 0));

  const nArt = o.artifacts ?? 60;
  for (let i = 0; i < nArt; i++) {
    const pipe = `pipe-${i % 5}`;
    const file = path.join(
      p.artifacts,
      'pipelines',
      pipe,
      String(1 + Math.floor(i / 5)),
      'build',
      'job',
      `out-${i}.${i % 3 === 0 ? 'jar' : 'log'}`,
    );
    const size = r.next() < 0.9 ? 200 + r.int(20_000) : 100_000 + r.int(400_000);
    write(file, r.bytes(size, i % 3 === 0 ? 0.1 : 0.9));
  }
  // A symlink inside the artifact tree, as GoCD's "latest" links do.
  execFileSync('ln', ['-sfn', '1', path.join(p.artifacts, 'pipelines', 'pipe-0', 'latest')]);
  const nRep = o.testReports ?? 20;
  for (let i = 0; i < nRep; i++) {
    write(
      path.join(p.shine, `pipe-${i % 5}`, `${i}`, 'junit.xml'),
      `<testsuite name="s${i}" tests="${r.int(500)}" failures="${r.int(3)}"/>\n`,
    );
  }

  mkdirSync(p.configRepo, { recursive: true });
  const git = (...args) =>
    execFileSync('git', args, {
      cwd: p.configRepo,
      stdio: 'ignore',
      env: {
        ...process.env,
        GIT_AUTHOR_NAME: 'go',
        GIT_AUTHOR_EMAIL: 'go@example.com',
        GIT_COMMITTER_NAME: 'go',
        GIT_COMMITTER_EMAIL: 'go@example.com',
      },
    });
  git('init', '-q', '-b', 'master');
  for (let c = 0; c < (o.commits ?? 5); c++) {
    writeFileSync(path.join(p.configRepo, 'cruise-config.xml'), `<cruise revision="${c}">${r.int(1e9)}</cruise>\n`);
    git('add', '-A');
    git('commit', '-q', '-m', `config change ${c}`);
  }

  mkdirSync(path.dirname(p.pidFile), { recursive: true });
  mkdirSync(path.dirname(p.logFile), { recursive: true });
  const port = o.port;
  const ctlArgs = [
    '--root',
    root,
    '--db',
    standinDb,
    '--config',
    path.join(p.configDir, 'cruise-config.xml'),
    '--pid',
    p.pidFile,
    '--port',
    String(port),
    '--log',
    p.logFile,
  ];
  const startArgv = [process.execPath, STANDIN_CTL, 'start', ...ctlArgs];
  const h2Start = h2 ? [process.execPath, H2_CTL, 'start', p.db, String(h2.port), h2.pidFile] : [];
  const h2Stop = h2 ? [process.execPath, H2_CTL, 'stop', h2.pidFile] : [];
  const stopArgv = [process.execPath, STANDIN_CTL, 'stop', '--pid', p.pidFile];
  const q = (s) => JSON.stringify(s);
  const plan = `# Generated by scripts/lib/sample-box.mjs: a GoCD-like box under ${root}
name: sample-gocd
product: gocd
version:
  file: ${q(p.versionFile)}
services:
  - name: go-server
    start: [${startArgv.map(q).join(', ')}]
    stop: [${stopArgv.map(q).join(', ')}]
    pidFile: ${q(p.pidFile)}
    stopTimeoutSeconds: 20
    startTimeoutSeconds: 20
${
  h2
    ? `  - name: h2
    start: [${h2Start.map(q).join(', ')}]
    stop: [${h2Stop.map(q).join(', ')}]
    pidFile: ${q(h2.pidFile)}
    stopTimeoutSeconds: 20
    startTimeoutSeconds: 60
`
    : ''
}quiesce:
  mode: stop
  leaseSeconds: 120
datasets:
${
  h2
    ? `  - { name: database, kind: h2, archive: db.zip, path: ${q(p.db)}, owner: { user: root, group: root }, h2: { url: ${q(h2.url)} } }`
    : `  - { name: database, archive: db.zip, path: ${q(p.db)}, owner: { user: root, group: root } }`
}
  - { name: config, archive: config-dir.zip, path: ${q(p.configDir)}, owner: { user: root, group: root } }
  - { name: wrapper-config, archive: wrapper-config-dir.zip, path: ${q(p.wrapperConfig)} }
  - { name: config-repo, archive: config-repo.zip, path: ${q(p.configRepo)}, owner: { user: root, group: root } }
  - { name: env, archive: env-files.zip, files: [${q(p.envFile)}], quiesce: false }
  - { name: plugins, archive: plugins.zip, path: ${q(p.plugins)}, quiesce: false }
  - { name: addons, archive: addons.zip, path: ${q(p.addons)}, quiesce: false }
trees:
  - { name: artifacts, source: ${q(p.artifacts)}, phase: SYNC_ARTIFACTS }
  - { name: test-reports, source: ${q(p.shine)}, phase: SYNC_TEST_REPORTS }
hostFiles:
  - path: ${q(p.envFile)}
health:
  http: { url: "http://127.0.0.1:${port}/health", expectStatus: [200] }
  timeoutSeconds: 20
`;
  write(p.planFile, plan);

  const run = (argv) => execFileSync(argv[0], argv.slice(1), { stdio: 'inherit' });
  return {
    ...p,
    hostname,
    address,
    version,
    port,
    startArgv,
    stopArgv,
    h2,
    standinDb,
    /** Start the stand-in server (and H2, seeded the first time; returns once they run). */
    start: async () => {
      run(startArgv);
      if (!h2) return;
      run(h2Start);
      h2Query(h2.url, H2_SCHEMA);
    },
    /** Stop them (returns once they are gone). */
    stop: async () => {
      run(stopArgv);
      if (h2) run(h2Stop);
    },
    /** Is the stand-in answering /health? */
    healthy: async () => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/health`);
        return res.status === 200;
      } catch {
        return false;
      }
    },
  };
}
