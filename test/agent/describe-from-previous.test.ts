// Describing a tree from the previous manifest plus the roots a change journal names must
// give, line for line, the manifest part a full walk of the tree gives. Random change
// sequences on a hard-link copy of a described tree: create, append, overwrite, delete,
// rename, directory moves and removals, symlinks, mode changes.
import { execFileSync } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  lstatSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeFileAtomic } from '@boxback/common';
import {
  PartWriter,
  buildManifest,
  collectFiles,
  describeFromPrevious,
  manifestPieces,
  quickEntry,
  readPrevIndex,
  rootsInWalkOrder,
  walkOrder,
} from '@boxback/common';

const root = mkdtempSync(path.join(os.tmpdir(), 'boxback-describe-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Deterministic random numbers (xorshift). */
function rng(seed: number) {
  let x = seed || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

async function describeWalk(dir: string, tree: string, prev?: { dir: string; index: Awaited<ReturnType<typeof readPrevIndex>> }) {
  const out = await PartWriter.create(path.join(root, 'parts', `walk-${Math.random()}.jsonl`));
  const res = await collectFiles({ dir, subdir: tree, known: new Map(), treeDirs: [tree], prev, out });
  await out.close();
  return { res, text: readFileSync(out.file, 'utf8') };
}

async function writeManifest(dir: string, part: string) {
  const m = buildManifest({
    id: 'h@20260101-000000',
    host: 'h',
    timestamp: '20260101-000000',
    createdAt: 'a',
    completedAt: 'b',
    origin: 'boxback',
    plan: { name: 'p', product: 'gocd' },
    product: { name: 'gocd', version: null },
    source: { hostname: 'h', addresses: [] },
    consistency: 'quiesced',
    quiesce: { mode: 'stop', windowMs: 1 },
    phases: [],
    datasets: [],
    trees: [],
    files: [],
    totals: { files: 0, bytes: 0 },
    warnings: [],
  });
  await writeFileAtomic(path.join(dir, 'manifest.json'), manifestPieces(m, [part]));
}

function buildTree(base: string, r: () => number) {
  for (let d = 0; d < 6; d++) {
    const dir = path.join(base, `pipe-${d}`, String(d % 3), 'job');
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 8; f++)
      writeFileSync(path.join(dir, `f-${f}.log`), `pipe ${d} file ${f} ${r()}\n`.repeat(1 + Math.floor(r() * 50)));
  }
  symlinkSync('pipe-0/0/job/f-0.log', path.join(base, 'latest'));
}

/** All paths under base (relative): files, symlinks and directories (not followed through symlinks). */
function listAll(base: string, rel = ''): string[] {
  const out: string[] = [];
  for (const d of readdirSync(path.join(base, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${d.name}` : d.name;
    out.push(p);
    if (d.isDirectory()) out.push(...listAll(base, p));
  }
  return out;
}

/** Apply n random changes under base; return the changed paths, as a journal records them. */
function mutate(base: string, r: () => number, n: number): string[] {
  const changed: string[] = [];
  for (let i = 0; i < n; i++) {
    const all = listAll(base);
    const pick = all[Math.floor(r() * all.length)];
    const abs = path.join(base, pick);
    const isDir = lstatSync(abs).isDirectory();
    const op = Math.floor(r() * 7);
    const parent = isDir ? pick : path.posix.dirname(pick) === '.' ? '' : path.posix.dirname(pick);
    const at = (name: string) => (parent ? `${parent}/${name}` : name);
    if (op === 0) {
      const p = at(`new-${i}-${Math.floor(r() * 1e6)}.log`);
      writeFileSync(path.join(base, p), `new ${r()}\n`);
      changed.push(p);
    } else if (op === 1 && !isDir) {
      // Append: a new inode, as rsync would write it (never through the hard link).
      const old = readFileSync(abs);
      unlinkSync(abs);
      writeFileSync(abs, Buffer.concat([old, Buffer.from(`more ${r()}\n`)]));
      changed.push(pick);
    } else if (op === 2 && !isDir) {
      unlinkSync(abs);
      changed.push(pick);
    } else if (op === 3) {
      const up = path.posix.dirname(pick);
      const to = up === '.' ? `moved-${i}` : `${up}/moved-${i}`;
      renameSync(abs, path.join(base, to));
      changed.push(pick, to);
    } else if (op === 4 && isDir) {
      rmSync(abs, { recursive: true });
      changed.push(pick);
    } else if (op === 5) {
      const d = at(`dir-${i}`);
      mkdirSync(path.join(base, d, 'sub'), { recursive: true });
      writeFileSync(path.join(base, d, 'sub', 'x.txt'), `x ${r()}`);
      symlinkSync('sub/x.txt', path.join(base, d, 'link'));
      changed.push(d);
    } else if (op === 6 && isDir) {
      chmodSync(abs, 0o750);
      changed.push(pick);
    } else {
      appendFileSync(path.join(base, at(`other-${i}.log`)), 'y');
      changed.push(at(`other-${i}.log`));
    }
  }
  return changed;
}

describe('describing a tree from the previous manifest and the changed roots', () => {
  it('orders paths as the walk does and reduces them to roots', () => {
    // A directory's entries first, then each subdirectory's content in name order.
    expect(['a.txt', 'a/b', 'a', 'a-b', 'a/b/c', 'a-b/c', 'a/z'].sort(walkOrder)).toEqual([
      'a',
      'a-b',
      'a.txt',
      'a/b',
      'a/z',
      'a/b/c',
      'a-b/c',
    ]);
    expect(rootsInWalkOrder(['a/b/c', 'a/b', 'x', 'a/b', 'a-b/c'])).toEqual(['x', 'a/b', 'a-b/c']);
  });

  it('reads the path, type and size of a kept line without parsing it, whatever the name holds', () => {
    const names = ['plain/a.log', 'q"uote', 'back\\slash', 'new\nline', 'tab\there', 'ünï cödé/ß', 'emoji-\u{1F600}', 'ctl-\u0001'];
    for (const name of names) {
      for (const e of [
        { path: `artifacts/${name}`, type: 'file', size: 123, mode: 420, uid: 0, gid: 0, mtimeMs: 1, ino: 9, sha256: 'ab'.repeat(32) },
        { path: `artifacts/${name}`, type: 'dir', size: 0, mode: 493, uid: 0, gid: 0, mtimeMs: 2 },
        { path: `artifacts/${name}`, type: 'symlink', size: 0, mode: 511, uid: 0, gid: 0, mtimeMs: 3, target: 'x' },
      ]) {
        const q = quickEntry(JSON.stringify(e));
        expect(q, name).toEqual({ path: e.path, type: e.type, size: e.size });
      }
    }
    // Not in manifestChunks' layout: left to JSON.parse.
    expect(quickEntry('{"type":"file","path":"a","size":1}')).toBeUndefined();
  });

  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]) {
    it(`gives the same lines as a full walk (random changes, seed ${seed})`, async () => {
      const r = rng(seed * 7919);
      const prevDir = path.join(root, `prev-${seed}`);
      const nextDir = path.join(root, `next-${seed}`);
      buildTree(path.join(prevDir, 'artifacts'), r);
      const first = await describeWalk(prevDir, 'artifacts');
      const prevPart = path.join(root, 'parts', `prev-${seed}.jsonl`);
      writeFileSync(prevPart, first.text);
      await writeManifest(prevDir, prevPart);
      const index = await readPrevIndex(prevDir);
      expect(index.byIno.size).toBeGreaterThan(40);
      // The index (read without JSON.parse where the line allows) holds what each line says.
      for (const line of first.text.split('\n').filter(Boolean)) {
        const f = JSON.parse(line) as { type: string; ino?: number; size: number; mtimeMs: number; sha256?: string };
        if (f.type === 'file' && f.ino !== undefined)
          expect(index.byIno.get(f.ino)).toEqual({ size: f.size, mtimeMs: f.mtimeMs, sha256: f.sha256 });
      }

      mkdirSync(nextDir);
      execFileSync('cp', ['-al', path.join(prevDir, 'artifacts'), path.join(nextDir, 'artifacts')]);
      const changed = mutate(path.join(nextDir, 'artifacts'), r, 1 + Math.floor(r() * 12));
      const prev = { dir: prevDir, index };

      const walked = await describeWalk(nextDir, 'artifacts', prev);
      const out = await PartWriter.create(path.join(root, 'parts', `fast-${seed}.jsonl`));
      const fast = await describeFromPrevious({
        dir: nextDir,
        subdir: 'artifacts',
        roots: changed,
        known: new Map(),
        treeDirs: ['artifacts'],
        prev,
        out,
        prevManifest: path.join(prevDir, 'manifest.json'),
        scratch: `${out.file}.roots`,
      });
      await out.close();
      expect(readFileSync(out.file, 'utf8')).toBe(walked.text);
      expect(fast.entries).toBe(walked.text.split('\n').filter(Boolean).length);
      expect({ files: fast.files, bytes: fast.bytes, tree: fast.trees.get('artifacts') }).toEqual({
        files: walked.res.files,
        bytes: walked.res.bytes,
        tree: walked.res.trees.get('artifacts'),
      });
      expect(fast.hashedBytes).toBeLessThan(walked.res.hashedBytes + 1);
    });
  }
});
