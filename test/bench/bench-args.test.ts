/**
 * The bench scripts' command lines (bench/lib/cli-args.mjs): `--help` prints the script's usage
 * (its header comment) and exits 0; an option it does not know is one line on stderr naming the
 * option, exit status 2, and no stack trace.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SCRIPTS = [
  'bench.mjs',
  'restore-bench.mjs',
  'lib/s3-section.mjs',
  'fleet-bench.mjs',
  'journal-bench.mjs',
  'agent-rss.mjs',
  'status-build-bench.mjs',
  'prof-summary.mjs',
];

test.each(SCRIPTS)('%s: --help prints its usage; an unknown option is one line and exit 2', (script) => {
  const run = (...args: string[]) =>
    spawnSync(process.execPath, [path.join(repo, 'bench', script), ...args], { encoding: 'utf8', timeout: 60_000 });
  const help = run('--help');
  expect(help.status, help.stderr).toBe(0);
  expect(help.stdout.length).toBeGreaterThan(80);
  expect(help.stdout).not.toMatch(/^\/\//m);
  const bad = run('--no-such-option');
  expect(bad.status).toBe(2);
  expect(bad.stderr).toMatch(new RegExp(`^${path.basename(script).replace('.', '\\.')}: Unknown option '--no-such-option'`));
  expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  expect(bad.stdout).toBe('');
});

test('bench.mjs --rounds takes 1 to 9: anything else is one line and exit 2, before any work', () => {
  for (const v of ['0', '10', 'two']) {
    const r = spawnSync(process.execPath, [path.join(repo, 'bench', 'bench.mjs'), '--rounds', v], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe(`--rounds takes 1 to 9, not ${v}`);
  }
});
