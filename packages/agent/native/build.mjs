#!/usr/bin/env node
// Builds the journal's inotify addon (inotify.c -> build/Release/boxback_inotify.node) at
// `npm ci`, with the node-gyp that npm ships and this Node's own headers (--nodedir: nothing is
// downloaded). Linux only. A host without a compiler or without Node's headers gets a warning
// and no addon: the journal then uses Node's own watch handles (more memory, same behaviour;
// packages/agent/src/journal/dir-watch.ts).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const say = (m) => process.stderr.write(`boxback inotify addon: ${m}\n`);
const skip = (why) => {
  say(`not built (${why}); the change journal falls back to Node's watch handles`);
  process.exit(0);
};
if (process.platform !== 'linux') skip(`platform ${process.platform}`);
// The prefix this Node was installed under holds its headers (include/node/node_api.h).
const nodedir = path.resolve(path.dirname(process.execPath), '..');
if (!existsSync(path.join(nodedir, 'include/node/node_api.h'))) skip(`no ${nodedir}/include/node/node_api.h`);
const gyp = [
  process.env.npm_config_node_gyp,
  path.join(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
].find((p) => p && existsSync(p));
if (!gyp) skip('node-gyp not found (npm ships it)');
const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`], { cwd: here, stdio: 'inherit' });
if (r.status !== 0) skip(`node-gyp exited with ${r.status ?? r.signal}`);
