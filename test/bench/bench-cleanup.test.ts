/**
 * A killed bench leaves nothing behind: `node bench/bench.mjs --size tiny` is sent SIGTERM
 * while its agent daemon and the stand-in server run (and, when radosgw is installed, again
 * during its S3 section, run alone by `--only s3`, with ceph-mon, ceph-osd and radosgw
 * running); it must exit 143, every
 * process it started (found by its temp dir in their command lines: radosgw's ceph.conf is
 * inside it) must be gone, and its temp dir removed. Needs `npm run build` first (the bench
 * imports the built packages).
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, test } from 'vitest';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-bench-kill-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Live (not zombie) processes whose command line mentions `needle`. */
function processesMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (cmd.includes(needle) && !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) out.push(Number(name));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Start the bench, SIGTERM it once `marker` is on its stderr; it must leave nothing behind. */
async function killDuring(marker: string, argv: string[], atLeast: number): Promise<void> {
  const bench = spawn(process.execPath, ['bench/bench.mjs', '--size', 'tiny', ...argv, '--json', '--dir', dir], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    bench.once('exit', (code, signal) => resolve({ code, signal })),
  );
  // Progress reaches stderr even with --json; wait until the step is under way.
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`the bench did not reach "${marker}":\n${err}`)), 240_000);
    bench.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes(marker)) {
        clearTimeout(t);
        resolve();
      }
    });
    void exited.then(() => reject(new Error(`the bench exited early:\n${err}`)));
  });
  const started = processesMentioning(dir).filter((p) => p !== bench.pid);
  expect(started.length).toBeGreaterThanOrEqual(atLeast);
  bench.kill('SIGTERM');
  const { code } = await exited;
  expect(code).toBe(143);
  expect(err).toContain('terminated (SIGTERM); stopping what it started');
  expect(processesMentioning(dir)).toEqual([]);
  expect(readdirSync(dir)).toEqual([]);
}

test('SIGTERM during a bench run stops the daemon and the stand-in server and removes the temp dir', async () => {
  // The agent daemon and the stand-in server (a detached daemon of its own) at least.
  await killDuring('full backup: boxback', ['--no-restic', '--no-journal', '--no-daemon-rss', '--no-s3'], 2);
}, 150_000);

const hasRadosgw = (() => {
  try {
    execFileSync('sh', ['-c', 'command -v radosgw && command -v ceph-osd && command -v ceph-mon'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

test.runIf(hasRadosgw)(
  'SIGTERM during the S3 section stops radosgw, ceph-osd and ceph-mon by pid too',
  async () => {
    // ceph-mon, ceph-osd, radosgw, the agent daemon and box A's stand-in server. `--only s3`:
    // the section alone, under bench.mjs's own signal handling (steps 1-7 before it, which the
    // test above kills, took ~75 of this test's 104 s in CI).
    await killDuring('s3: full backup, boxback', ['--no-restic', '--only', 's3'], 5);
  },
  300_000,
);
