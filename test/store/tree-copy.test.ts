// The local store's tree copy (store/local/tree-copy.ts) by several cp processes at once, as a
// restore runs it, against one cp of the same tree: real files, real cp and touch. What a
// restore keeps must come out the same: contents, types, symlink targets, modes (setgid and
// sticky directories too), numeric owners, mtimes to the nanosecond, for the directories the
// split copy makes itself as for the rest (set by `touch -r`, or by the agent's nanosecond
// mtime setter when it is registered). A split copy names each entry its cp processes copy
// (onCopied, for a restore to check it while the rest is copied) once, and only when it is whole.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { useNanosecondMtimes } from '../../packages/common/src/store/local/incremental-sync.js';
import { copyTree } from '../../packages/common/src/store/local/tree-copy.js';

const work = mkdtempSync(path.join(os.tmpdir(), 'boxback-tree-copy-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Every entry under `root`: type, mode, owner, mtime in ns, and content or link target. */
function listing(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (rel: string) => {
    const p = rel ? path.join(root, rel) : root;
    const st = lstatSync(p, { bigint: true });
    const what = st.isSymbolicLink() ? `-> ${readlinkSync(p)}` : st.isFile() ? readFileSync(p, 'utf8') : 'dir';
    out[rel || '.'] = `${(st.mode & 0o7777n).toString(8)} ${st.uid}:${st.gid} ${st.isSymbolicLink() ? '' : st.mtimeNs} ${what}`;
    if (st.isDirectory()) for (const n of readdirSync(p).sort()) visit(rel ? `${rel}/${n}` : n);
  };
  visit('');
  return out;
}

describe('copyTree by several cp processes', () => {
  it('copies a tree exactly as one cp does: the directories it makes itself get their stored owner, mode and ns times', async () => {
    const src = path.join(work, 'src');
    // Few directories at the top (the split goes down a level), many further down, files at every level.
    mkdirSync(path.join(src, 'pipelines'), { recursive: true });
    writeFileSync(path.join(src, 'top.txt'), 'top\n');
    symlinkSync('top.txt', path.join(src, 'latest'));
    for (let i = 0; i < 12; i++) {
      const d = path.join(src, 'pipelines', `pipe-${i}`, 'stage', `${i}`);
      mkdirSync(d, { recursive: true });
      writeFileSync(path.join(d, 'a.log'), `log ${i}\n`);
      writeFileSync(path.join(src, 'pipelines', `pipe-${i}`, 'b.txt'), `b ${i}\n`);
    }
    writeFileSync(path.join(src, 'pipelines', 'index.json'), '{}\n');
    chmodSync(path.join(src, 'pipelines'), 0o2750);
    chmodSync(src, 0o1775);
    lchownSync(path.join(src, 'pipelines'), 1234, 5678);
    lchownSync(path.join(src, 'top.txt'), 4321, 8765);
    // Times with nanoseconds, on the directories the split makes (set last: creating entries moves them).
    execFileSync('touch', ['-m', '-d', '2020-02-02 02:02:02.123456789', path.join(src, 'pipelines', 'pipe-3')]);
    execFileSync('touch', ['-m', '-d', '2021-03-03 03:03:03.987654321', path.join(src, 'pipelines')]);
    execFileSync('touch', ['-m', '-d', '2022-04-04 04:04:04.111111111', src]);
    const one = path.join(work, 'one');
    const four = path.join(work, 'four');
    await copyTree(src, one);
    await copyTree(src, four, undefined, undefined, 4);
    const want = listing(src);
    expect(listing(one)).toEqual(want);
    expect(listing(four)).toEqual(want);
    expect(want['pipelines']).toMatch(/^2750 1234:5678 \d+987654321 dir$/);
    expect(want['pipelines/pipe-3']).toMatch(/^755 0:0 \d+123456789 dir$/);
    expect(want['.']).toMatch(/^1775 0:0 \d+111111111 dir$/);
    // No hard links into the source.
    expect(lstatSync(path.join(four, 'top.txt')).ino).not.toBe(lstatSync(path.join(src, 'top.txt')).ino);

    // With the agent's nanosecond mtime setter registered (as the daemon does), the directories
    // the split makes get their times from it, not from a `touch -r` each: the same copy.
    const { nativeAddon } = await import('../../packages/agent/src/native.js');
    const setMtime = nativeAddon?.setMtime?.bind(nativeAddon);
    expect(typeof setMtime).toBe('function');
    const set: string[] = [];
    useNanosecondMtimes((p, sec, nsec) => {
      set.push(path.relative(work, p));
      return setMtime!(p, sec, nsec);
    });
    const fourNs = path.join(work, 'four-ns');
    try {
      await copyTree(src, fourNs, undefined, undefined, 4);
    } finally {
      useNanosecondMtimes(undefined);
    }
    expect(listing(fourNs)).toEqual(want);
    expect(set.sort()).toEqual(['four-ns', 'four-ns/pipelines']);
  });

  it('names each entry its cp processes copied once, when it is whole', async () => {
    const src = path.join(work, 'src-parts');
    const names: string[] = [];
    for (let i = 0; i < 24; i++) {
      const d = `pipelines/p-${i}`;
      for (let j = 0; j < 40; j++) {
        mkdirSync(path.join(src, d, `run-${j}`), { recursive: true });
        for (let k = 0; k < 5; k++) writeFileSync(path.join(src, d, `run-${j}`, `out-${k}.log`), `${d} ${j} ${k}\n`.repeat(200));
      }
      names.push(d);
    }
    writeFileSync(path.join(src, 'pipelines', 'index.txt'), 'top file');
    names.push('pipelines/index.txt');
    const dest = path.join(work, 'dest-parts');
    const seen: string[] = [];
    const whole: boolean[] = [];
    await copyTree(src, dest, undefined, undefined, 4, (rels) => {
      for (const rel of rels) {
        seen.push(rel);
        // Whole when named: the same listing as the stored entry's, every file in it.
        whole.push(JSON.stringify(listing(path.join(dest, rel))) === JSON.stringify(listing(path.join(src, rel))));
      }
    });
    expect(seen.sort()).toEqual(names.sort());
    expect(whole.every(Boolean)).toBe(true);
    expect(listing(dest)).toEqual(listing(src));
  });

  it('a cp that fails is SYNC_FAILED naming the tree', async () => {
    const src = path.join(work, 'src-bad');
    for (let i = 0; i < 9; i++) mkdirSync(path.join(src, `d${i}`, 'x'), { recursive: true });
    // A file where one directory's copy must go: that cp fails, the copy with it.
    const dest = path.join(work, 'blocked');
    mkdirSync(dest);
    writeFileSync(path.join(dest, 'd4'), 'in the way');
    await expect(copyTree(src, dest, undefined, undefined, 4)).rejects.toMatchObject({
      code: 'BOXBACK_ERR_SYNC_FAILED',
      message: expect.stringContaining(`copying ${src} to ${dest} failed`),
    });
  });

  it("a source that is gone (a live tree's directory removed) is SYNC_FAILED by several cp as by one", async () => {
    const src = path.join(work, 'src-gone');
    for (const streams of [1, 4])
      await expect(copyTree(src, path.join(work, `gone-${streams}`), undefined, undefined, streams)).rejects.toMatchObject({
        code: 'BOXBACK_ERR_SYNC_FAILED',
        message: expect.stringContaining(src),
      });
  });
});
