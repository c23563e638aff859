// vitest globalSetup: one `node scripts/bundle.mjs` per run, shared by the deploy tests
// (install, units, bundled-quickstart), each of which used to bundle for itself (~35 s each on
// a loaded 2-core box). It starts here without being awaited, beside the first test files;
// bundleInto (test/deploy/helpers.ts) waits for it and copies the result, so each file still
// gets a bundle of its own to install from, change or remove. It runs only when the run may
// need it: no file filter on the command line (the whole suite), or a filter naming a deploy
// test; otherwise bundleInto bundles itself.
import { spawn } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The run's bundle: DIR/bundle, ready once DIR/status says "ok" (else it holds the error). */
    sharedBundle: string | null;
  }
}

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function runNeedsBundle(): boolean {
  const args = process.argv.slice(2).filter((a) => !a.startsWith('-') && a !== 'run' && a !== 'watch');
  const filters = args.filter((a) => /[/.]|test/.test(a));
  return filters.length === 0 || filters.some((f) => /deploy/i.test(f));
}

let dir: string | null = null;
let done: Promise<void> = Promise.resolve();

export function setup(project: TestProject): void {
  if (!runNeedsBundle()) {
    project.provide('sharedBundle', null);
    return;
  }
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-shared-bundle-'));
  const status = path.join(dir, 'status');
  const finish = (text: string) => {
    writeFileSync(`${status}.tmp`, text);
    renameSync(`${status}.tmp`, status); // whole or absent for bundleInto
  };
  const child = spawn(process.execPath, [path.join(repo, 'scripts/bundle.mjs'), '--outdir', path.join(dir, 'bundle')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  done = new Promise((resolve) => {
    child.once('error', (err) => {
      finish(`bundle.mjs did not start: ${err.message}`);
      resolve();
    });
    child.once('close', (code, signal) => {
      finish(code === 0 ? 'ok' : `npm run bundle failed (${code ?? signal}): ${out}`);
      resolve();
    });
  });
  project.provide('sharedBundle', dir);
}

export async function teardown(): Promise<void> {
  await done;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = null;
}
