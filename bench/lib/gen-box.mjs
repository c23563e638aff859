// Bench data: a GoCD-like services box of a given size, deterministic for a seed.
//
//   tiny      4 MiB database,    300 artifact files,  60 test reports,   3 config commits (tests)
//   small    64 MiB database,   5k artifact files, 1k test reports,  40 config commits
//   default   1 GiB database, 100k artifact files, 20k test reports, 300 config commits
//   large     4 GiB database, 300k artifact files, 60k test reports, 1000 config commits
//   files    the default's file counts with a 64 MiB database and 0.5-4 KiB artifacts (~1 GB
//            instead of ~4.6 GB): for what scales with files, not bytes (the agent's memory)
//
// The layout, plan and stand-in server come from scripts/lib/sample-box.mjs; this adds bulk
// quickly: file contents are slices of a 4 MiB pool of seeded bytes (half text, half random),
// so the box compresses like real CI data (logs compress, jars do not) without generating
// gigabytes byte by byte. Artifact sizes are mixed, about 30 KiB on average: 78% 1-16 KiB
// logs, 20.5% 16-96 KiB reports, 1.5% 0.25-1.25 MiB jars (random bytes, stored by zip).
// simulateCiDay() applies a day of change: new pipeline runs (2% more artifacts), new test
// reports, database growth (+2%) and a few config commits.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, writeSync, appendFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createSampleBox, prng } from '../../scripts/lib/sample-box.mjs';

export const SIZES = {
  /** For the bench's own test (signals and cleanup): seconds, not minutes. */
  tiny: { dbBytes: 4 << 20, artifacts: 300, testReports: 60, commits: 3 },
  small: { dbBytes: 64 << 20, artifacts: 5_000, testReports: 1_000, commits: 40 },
  default: { dbBytes: 1 << 30, artifacts: 100_000, testReports: 20_000, commits: 300 },
  large: { dbBytes: 4 << 30, artifacts: 300_000, testReports: 60_000, commits: 1_000 },
  files: { dbBytes: 64 << 20, artifacts: 100_000, testReports: 20_000, commits: 300, smallFiles: true },
};

const POOL_BYTES = 4 << 20;

function makePool(seed) {
  const r = prng(seed);
  const text = r.bytes(POOL_BYTES / 2, 1);
  const rand = r.bytes(POOL_BYTES / 2, 0);
  return { r, text, rand };
}

function slice(pool, n, textual) {
  const src = textual ? pool.text : pool.rand;
  if (n <= src.length) {
    const off = pool.r.int(src.length - n + 1);
    return src.subarray(off, off + n);
  }
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i += src.length) src.copy(out, i, 0, Math.min(src.length, n - i));
  return out;
}

/** Mixed sizes averaging about 30 KiB (ECOSYSTEM.md's 60k-file box): logs, reports, a few big jars. */
function artifactSize(r) {
  const x = r.next();
  if (x < 0.78) return { size: 1024 + r.int(15 * 1024), jar: false };
  if (x < 0.985) return { size: 16 * 1024 + r.int(80 * 1024), jar: false };
  return { size: 256 * 1024 + r.int(1024 * 1024), jar: true };
}

function writeArtifacts(box, pool, from, count, run, smallFiles = false) {
  let bytes = 0;
  const dirs = new Set();
  for (let i = from; i < from + count; i++) {
    const pipe = `pipe-${i % 50}`;
    const counter = 1 + Math.floor(i / 50 / 20) + (run ?? 0);
    const a = artifactSize(pool.r);
    const { jar } = a;
    const size = smallFiles ? 512 + (a.size % 3584) : a.size;
    const dir = path.join(box.artifacts, 'pipelines', pipe, String(counter), 'build', `job-${i % 20}`);
    if (!dirs.has(dir)) {
      mkdirSync(dir, { recursive: true });
      dirs.add(dir);
    }
    const file = path.join(dir, jar ? `out-${i}.jar` : `out-${i}.log`);
    writeFileSync(file, slice(pool, size, !jar));
    bytes += size;
  }
  return bytes;
}

function writeReports(box, pool, from, count) {
  const dirs = new Set();
  for (let i = from; i < from + count; i++) {
    const dir = path.join(box.shine, `pipe-${i % 50}`, String(Math.floor(i / 50)));
    if (!dirs.has(dir)) {
      mkdirSync(dir, { recursive: true });
      dirs.add(dir);
    }
    const body = slice(pool, 512 + pool.r.int(4096), true)
      .toString('latin1')
      .replace(/[<&]/g, ' ');
    writeFileSync(
      path.join(dir, `TEST-${i}.xml`),
      `<testsuite name="s${i}" tests="${pool.r.int(500)}"><system-out>${body}</system-out></testsuite>\n`,
    );
  }
}

function growDb(file, pool, bytes) {
  const fd = openSync(file, 'a');
  try {
    const chunk = 8 << 20;
    for (let done = 0; done < bytes; done += chunk) {
      const n = Math.min(chunk, bytes - done);
      // A database page mix: 60% text-like rows, 40% binary.
      writeSync(fd, slice(pool, n, pool.r.next() < 0.6));
    }
  } finally {
    closeSync(fd);
  }
}

function gitCommits(repo, r, n, start) {
  const env = {
    ...process.env,
    GIT_AUTHOR_NAME: 'go',
    GIT_AUTHOR_EMAIL: 'go@example.com',
    GIT_COMMITTER_NAME: 'go',
    GIT_COMMITTER_EMAIL: 'go@example.com',
  };
  const lines = [];
  for (let c = start; c < start + n; c++) {
    lines.push(`<pipeline name="p${c}" counter="${r.int(1e6)}"/>`);
    writeFileSync(path.join(repo, 'cruise-config.xml'), `<cruise revision="${c}">\n${lines.slice(-400).join('\n')}\n</cruise>\n`);
    execFileSync('git', ['commit', '-q', '-a', '-m', `config change ${c}`], { cwd: repo, env, stdio: 'ignore' });
  }
}

/** Generate the box under `root`. Returns the sample box plus what was generated. */
export async function generateBox({ root, port, size = 'small', seed = 42 }) {
  const s = SIZES[size];
  if (!s) throw new Error(`unknown size ${size}: ${Object.keys(SIZES).join(', ')}`);
  const box = await createSampleBox({ root, port, seed, artifacts: 1, testReports: 1, dbBytes: 1 << 20, commits: 1 });
  const pool = makePool(seed);
  growDb(box.dbFile, pool, s.dbBytes - (1 << 20));
  const artifactBytes = writeArtifacts(box, pool, 0, s.artifacts, undefined, s.smallFiles);
  writeReports(box, pool, 0, s.testReports);
  gitCommits(box.configRepo, pool.r, s.commits, 1);
  execFileSync('git', ['gc', '-q'], { cwd: box.configRepo, stdio: 'ignore' });
  return { box, pool, spec: s, artifactBytes };
}

/**
 * A day of CI: new pipeline runs, new test reports, database growth, config changes. Day 2, 3...
 * (the bench's further rounds) add runs, reports and commits of their own after the day before's.
 */
export function simulateCiDay(gen, day = 1) {
  const { box, pool, spec } = gen;
  const newArtifacts = Math.max(50, Math.round(spec.artifacts * 0.02));
  const newReports = Math.max(20, Math.round(spec.testReports * 0.02));
  writeArtifacts(box, pool, spec.artifacts + (day - 1) * newArtifacts, newArtifacts, 1000 + (day - 1), spec.smallFiles);
  writeReports(box, pool, spec.testReports + (day - 1) * newReports, newReports);
  growDb(box.dbFile, pool, Math.round(spec.dbBytes * 0.02));
  appendFileSync(path.join(box.configDir, 'cruise-config.xml'), '<!-- changed -->\n');
  gitCommits(box.configRepo, pool.r, 5, spec.commits + 1 + (day - 1) * 5);
  return { newArtifacts };
}
