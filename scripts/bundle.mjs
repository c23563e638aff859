#!/usr/bin/env node
// `npm run bundle`: the packaged build a server installs without the source tree.
//
//   dist-bundle/
//     boxback-agent.mjs        the agent daemon        (packages/agent/src/main.ts)
//     boxback-controller.mjs   the controller daemon   (packages/controller/src/main.ts)
//     boxback.mjs              the CLI                 (packages/controller/src/cli/main.ts)
//     assets/                  the dashboard's app.js and app.css (scripts/build-dashboard.mjs)
//     proto/                   boxback's .proto files, plus grpc.health.v1 (grpc-health-check's)
//     node_modules/            better-sqlite3 (its .node file, lib/, package.json) and its
//                              run-time deps bindings and file-uri-to-path: the only package
//                              kept outside the bundles, because it is a native addon
//     native/                  boxback_inotify.node: the agent's inotify addon (Node-API, any
//                              Node >= 20.19; packages/agent/native), when npm ci built it: the
//                              agent falls back to Node's own watch handles without it
//     lib/plan-info.mjs        deploy/install.sh's helper: allowedRoots and the systemd drop-in
//                              for a plan (scripts/deploy/plan-info.ts)
//     lib/agent-worker.mjs     the controller's agents' thread (packages/controller/src/agent-worker.ts),
//                              started by the controller bundle from lib/ beside it
//     deploy/, docs/           install.sh, the systemd units and plans; operating.md, errors.md
//     BUILD-INFO.json          version, Node version and ABI it was built with, entry points
//
// Steps: 1. esbuild each entry (ESM, platform node, target node20.19) straight from the
// TypeScript sources, with a banner that checks the Node version first and defines
// `require`, `__filename`, `__dirname` for the CommonJS code inside (protobufjs, node-forge...);
// 2. copy proto/ and the native addon; 3. write BUILD-INFO.json.
//
// Options: --outdir DIR (default dist-bundle), --only agent,controller,cli (a subset).
// The bundles run on the system's Node >= 20.19. better-sqlite3's .node file is built for the
// ABI of the Node that built it (process.versions.modules); a bundle that loads it checks
// the ABI at start and says what to do when it differs.
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as esbuild from 'esbuild';
import { buildDashboard } from './build-dashboard.mjs';

export const MIN_NODE = '20.19';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const ENTRIES = {
  agent: { src: 'packages/agent/src/main.ts', out: 'boxback-agent.mjs', name: 'boxback-agent' },
  controller: { src: 'packages/controller/src/main.ts', out: 'boxback-controller.mjs', name: 'boxback-controller' },
  cli: { src: 'packages/controller/src/cli/main.ts', out: 'boxback.mjs', name: 'boxback' },
};

/** Helpers deploy/install.sh runs from the bundle (built with the agent). */
const HELPERS = {
  'plan-info': { src: 'scripts/deploy/plan-info.ts', out: 'lib/plan-info.mjs', name: 'plan-info' },
};

/** Worker threads the controller bundle starts (built with the controller; agent-thread.ts finds lib/ beside it). */
const CONTROLLER_WORKERS = {
  'agent-worker': { src: 'packages/controller/src/agent-worker.ts', out: 'lib/agent-worker.mjs', name: 'boxback-controller agents thread' },
};

/** The native addon and what it requires at run time (checked against its package.json below). */
const NATIVE = ['better-sqlite3', 'bindings', 'file-uri-to-path'];

/**
 * First lines of every bundle. Static imports of node: builtins are hoisted but exist on
 * every Node; the version check is the first code that runs.
 */
function banner(name, abi) {
  const [maj, min] = MIN_NODE.split('.').map(Number);
  const lines = [
    `// ${name}: bundled by scripts/bundle.mjs; needs Node.js >= ${MIN_NODE}`,
    `import { createRequire as __bbCreateRequire } from 'node:module';`,
    `import { fileURLToPath as __bbFileURLToPath } from 'node:url';`,
    `import { dirname as __bbDirname } from 'node:path';`,
    `{ const [__M, __m] = process.versions.node.split('.').map(Number);`,
    `  if (__M < ${maj} || (__M === ${maj} && __m < ${min})) {`,
    `    process.stderr.write(\`${name}: Node.js >= ${MIN_NODE} is required, this is v\${process.versions.node} (\${process.execPath}); install a newer Node.js or point BOXBACK_NODE at one\\n\`);`,
    `    process.exit(2); } }`,
  ];
  if (abi) {
    lines.push(
      `if (process.versions.modules !== '${abi}') {`,
      `  process.stderr.write(\`${name}: this bundle's better-sqlite3 was built for Node ABI ${abi} (Node ${process.versions.node.split('.')[0]}.x), this Node \${process.version} has ABI \${process.versions.modules}; run it with Node ${process.versions.node.split('.')[0]}.x or rebuild the bundle with this Node (npm run bundle)\\n\`);`,
      `  process.exit(2); }`,
    );
  }
  lines.push(
    `const require = __bbCreateRequire(import.meta.url);`,
    `const __filename = __bbFileURLToPath(import.meta.url);`,
    `const __dirname = __bbDirname(__filename);`,
  );
  return lines.join('\n');
}

/**
 * grpc-health-check loads health.proto from `${__dirname}/../../proto` at import time; in a
 * bundle that is the bundle's own proto/ directory (or $BOXBACK_PROTO_DIR).
 */
const healthProtoPlugin = {
  name: 'grpc-health-check-proto',
  setup(build) {
    build.onLoad({ filter: /grpc-health-check[\\/]build[\\/]src[\\/]health\.js$/ }, (args) => {
      const src = readFileSync(args.path, 'utf8');
      const dir = '(process.env.BOXBACK_PROTO_DIR || require("node:path").join(__dirname, "proto"))';
      const out = src
        .replaceAll('`${__dirname}/../../proto`', dir)
        .replaceAll(
          "path.resolve(__dirname, '../../proto/health/v1/health.proto')",
          `require("node:path").join(${dir}, "health/v1/health.proto")`,
        );
      if (out === src) throw new Error('grpc-health-check changed: its proto path is no longer where scripts/bundle.mjs expects it');
      return { contents: out, loader: 'js' };
    });
  },
};

/** Bundle the workspace packages from their TypeScript sources (no `tsc` needed first). */
const workspaceSourcePlugin = {
  name: 'workspace-sources',
  setup(build) {
    // '@boxback/common' -> its src/index.ts, '@boxback/common/rpc' -> src/rpc.ts (never dist/: one copy of each module)
    build.onResolve({ filter: /^@boxback\/(common|agent|controller)(\/[a-z-]+)?$/ }, (args) => {
      const [, pkg, sub] = args.path.split('/');
      return { path: path.join(repo, 'packages', pkg, 'src', `${sub ?? 'index'}.ts`) };
    });
  },
};

function esbuildOptions(entry, outfile, bannerText, write) {
  return {
    entryPoints: [path.join(repo, entry.src)],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20.19',
    external: ['better-sqlite3'],
    banner: { js: bannerText },
    plugins: [workspaceSourcePlugin, healthProtoPlugin],
    legalComments: 'none',
    sourcemap: false,
    metafile: true,
    write,
    logLevel: 'warning',
  };
}

function copyNative(outdir) {
  const nm = path.join(repo, 'node_modules');
  const bs = path.join(nm, 'better-sqlite3');
  const addon = path.join(bs, 'build/Release/better_sqlite3.node');
  if (!existsSync(addon)) throw new Error(`${addon} is missing: run npm ci (better-sqlite3 compiles with node-gyp)`);
  const deps = Object.keys(JSON.parse(readFileSync(path.join(bs, 'package.json'), 'utf8')).dependencies ?? {});
  // prebuild-install only downloads binaries at install time; bindings is what lib/ requires.
  const unexpected = deps.filter((d) => !NATIVE.includes(d) && d !== 'prebuild-install');
  if (unexpected.length)
    throw new Error(`better-sqlite3 now depends on ${unexpected.join(', ')}: add them to NATIVE in scripts/bundle.mjs`);
  const dest = path.join(outdir, 'node_modules');
  mkdirSync(path.join(dest, 'better-sqlite3/build/Release'), { recursive: true });
  cpSync(addon, path.join(dest, 'better-sqlite3/build/Release/better_sqlite3.node'));
  cpSync(path.join(bs, 'lib'), path.join(dest, 'better-sqlite3/lib'), { recursive: true });
  for (const f of ['package.json', 'LICENSE'])
    if (existsSync(path.join(bs, f))) cpSync(path.join(bs, f), path.join(dest, 'better-sqlite3', f));
  for (const dep of NATIVE.slice(1)) {
    const from = path.join(nm, dep);
    if (!existsSync(from)) throw new Error(`${from} is missing: run npm ci`);
    cpSync(from, path.join(dest, dep), { recursive: true, filter: (p) => !/[\\/](test|\.github)$/.test(p) });
  }
}

export async function bundle({ outdir = path.join(repo, 'dist-bundle'), only } = {}) {
  const names = only ?? Object.keys(ENTRIES);
  const missing = names.filter((n) => !existsSync(path.join(repo, ENTRIES[n].src)));
  if (missing.length) {
    throw new Error(`entry point(s) not there yet: ${missing.map((n) => ENTRIES[n].src).join(', ')} (use --only to bundle the others)`);
  }
  rmSync(outdir, { recursive: true, force: true });
  mkdirSync(outdir, { recursive: true });
  const abi = process.versions.modules;
  const built = {};
  for (const n of names) {
    const e = ENTRIES[n];
    const outfile = path.join(outdir, e.out);
    // Pass 1 (in memory): does this bundle load the native addon? Then its banner checks the ABI.
    const probe = await esbuild.build(esbuildOptions(e, outfile, banner(e.name), false));
    const usesSqlite = Object.values(probe.metafile.outputs).some((o) => o.imports.some((i) => i.path === 'better-sqlite3'));
    const r = await esbuild.build(esbuildOptions(e, outfile, banner(e.name, usesSqlite ? abi : undefined), true));
    chmodSync(outfile, 0o755);
    built[e.out] = { entry: e.src, bytes: Object.values(r.metafile.outputs)[0].bytes, nativeAddon: usesSqlite };
  }
  if (names.includes('agent')) {
    for (const h of Object.values(HELPERS)) {
      const outfile = path.join(outdir, h.out);
      await esbuild.build(esbuildOptions(h, outfile, banner(h.name), true));
    }
  }
  if (names.includes('controller')) {
    for (const w of Object.values(CONTROLLER_WORKERS)) {
      const outfile = path.join(outdir, w.out);
      await esbuild.build(esbuildOptions(w, outfile, banner(w.name), true));
    }
  }
  cpSync(path.join(repo, 'proto'), path.join(outdir, 'proto'), { recursive: true });
  // the dashboard's script and styles, served by the controller bundle from assets/ beside it
  if (names.includes('controller')) await buildDashboard(path.join(outdir, 'assets'));
  const health = path.join(repo, 'node_modules/grpc-health-check/proto/health');
  cpSync(health, path.join(outdir, 'proto/health'), { recursive: true });
  copyNative(outdir);
  const inotify = path.join(repo, 'packages/agent/native/build/Release/boxback_inotify.node');
  if (names.includes('agent') && existsSync(inotify)) {
    mkdirSync(path.join(outdir, 'native'), { recursive: true });
    cpSync(inotify, path.join(outdir, 'native/boxback_inotify.node'));
  } else if (names.includes('agent'))
    process.stderr.write(`bundle: warning: ${inotify} was not built (npm ci): the agent will use more memory per watched directory\n`);
  // What installs it (deploy/install.sh, units, plans) and the operator's docs, so the
  // bundle directory is the whole release.
  for (const d of ['deploy/install.sh', 'deploy/systemd', 'deploy/plans', 'docs/operating.md', 'docs/errors.md']) {
    if (existsSync(path.join(repo, d))) cpSync(path.join(repo, d), path.join(outdir, d), { recursive: true });
  }
  const version = JSON.parse(readFileSync(path.join(repo, 'package.json'), 'utf8')).version;
  const info = {
    version,
    minNode: MIN_NODE,
    builtWithNode: process.version,
    nodeAbi: abi,
    platform: `${process.platform}-${process.arch}`,
    builtAt: new Date().toISOString(),
    bundles: built,
  };
  writeFileSync(path.join(outdir, 'BUILD-INFO.json'), `${JSON.stringify(info, null, 2)}\n`);
  return info;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { outdir: { type: 'string' }, only: { type: 'string' } } });
  const only = values.only?.split(',').map((s) => s.trim());
  const bad = only?.filter((n) => !(n in ENTRIES));
  if (bad?.length) {
    process.stderr.write(`bundle: unknown --only ${bad.join(', ')} (want ${Object.keys(ENTRIES).join(', ')})\n`);
    process.exit(2);
  }
  try {
    const t = Date.now();
    const outdir = path.resolve(values.outdir ?? path.join(repo, 'dist-bundle'));
    const info = await bundle({ outdir, only });
    for (const [f, b] of Object.entries(info.bundles))
      process.stdout.write(
        `${path.join(path.relative(process.cwd(), outdir) || '.', f)}  ${(b.bytes / 1024 / 1024).toFixed(1)} MiB${b.nativeAddon ? '  (loads better-sqlite3, ABI ' + info.nodeAbi + ')' : ''}\n`,
      );
    process.stdout.write(`bundled boxback ${info.version} for Node >= ${MIN_NODE} in ${Date.now() - t} ms\n`);
  } catch (err) {
    process.stderr.write(`bundle: ${err.message}\n`);
    process.exit(1);
  }
}
