// The window's copy (backup/stage.ts, stage-copy.ts): done in the agent's own process, it must
// give what `cp -a` gives for what the archive keeps: every file's bytes and mode, directories'
// modes, symlinks' targets, times to the second; a dataset holding a fifo is copied by cp -a
// instead, and a missing source is the clear error it always was.
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@boxback/common';
import { stageDataset } from '../../packages/agent/src/backup/stage.js';

let dir: string;
const log = createLogger('test', 'silent');
const opts = () => ({ stageRoot: path.join(dir, 'stage'), signal: new AbortController().signal, timeoutMs: 30_000, log });

/** Every entry under `root`: type, mode, size, mtime (s), link target, bytes. */
function describeTree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string) => {
    const p = path.join(root, rel);
    const st = lstatSync(p);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) out[rel] = `link ${readlinkSync(p)}`;
    else if (st.isDirectory()) {
      out[rel] = `dir ${mode} ${Math.floor(st.mtimeMs / 1000)}`;
      for (const n of readdirSync(p)) walk(path.join(rel, n));
    } else if (st.isFIFO()) out[rel] = `fifo ${mode}`;
    else out[rel] = `file ${mode} ${st.size} ${Math.floor(st.mtimeMs / 1000)} ${readFileSync(p).toString('base64').slice(0, 40)}`;
  };
  walk('.');
  return out;
}

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-stage-copy-'));
  const src = path.join(dir, 'src');
  mkdirSync(path.join(src, 'objects/ab'), { recursive: true });
  for (let i = 0; i < 200; i++) writeFileSync(path.join(src, 'objects/ab', `obj-${i}`), `object ${i}\n`.repeat(i + 1));
  writeFileSync(path.join(src, 'config'), '[core]\n');
  chmodSync(path.join(src, 'config'), 0o640);
  writeFileSync(path.join(src, 'run.sh'), '#!/bin/sh\n');
  chmodSync(path.join(src, 'run.sh'), 0o755);
  symlinkSync('objects/ab/obj-1', path.join(src, 'HEAD-link'));
  chmodSync(path.join(src, 'objects'), 0o750);
  utimesSync(path.join(src, 'config'), new Date('2020-01-02T03:04:05Z'), new Date('2020-01-02T03:04:05Z'));
  utimesSync(path.join(src, 'objects'), new Date('2021-05-06T07:08:09Z'), new Date('2021-05-06T07:08:09Z'));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the window copy', () => {
  it('a directory dataset: the stage holds what cp -a gives (bytes, modes, dir times, symlinks)', async () => {
    const src = path.join(dir, 'src');
    execFileSync('cp', ['-a', '-T', src, path.join(dir, 'by-cp')]);
    const staged = await stageDataset({ name: 'config-repo', path: src }, opts());
    expect(staged.dir).toBe(path.join(dir, 'stage', 'config-repo'));
    expect(describeTree(staged.dir!)).toEqual(describeTree(path.join(dir, 'by-cp')));
    expect(Object.keys(describeTree(staged.dir!)).length).toBe(206);
  });

  it('a file dataset: each file into the stage, with its mode', async () => {
    const src = path.join(dir, 'src');
    const staged = await stageDataset({ name: 'env', files: [path.join(src, 'config'), path.join(src, 'run.sh')] }, opts());
    expect(staged.files!.map((f) => path.basename(f))).toEqual(['config', 'run.sh']);
    expect(readFileSync(staged.files![0], 'utf8')).toBe('[core]\n');
    expect(lstatSync(staged.files![1]).mode & 0o777).toBe(0o755);
  });

  it('a dataset holding a fifo is copied by cp -a (the fifo too)', async () => {
    const src = path.join(dir, 'with-fifo');
    mkdirSync(src);
    writeFileSync(path.join(src, 'data'), 'rows\n');
    execFileSync('mkfifo', [path.join(src, 'pipe')]);
    const staged = await stageDataset({ name: 'odd', path: src }, opts());
    expect(describeTree(staged.dir!)['pipe']).toMatch(/^fifo /);
    expect(readFileSync(path.join(staged.dir!, 'data'), 'utf8')).toBe('rows\n');
  });

  it('a missing source is BOXBACK_ERR_ARCHIVE_FAILED naming it', async () => {
    await expect(stageDataset({ name: 'gone', path: path.join(dir, 'nope') }, opts())).rejects.toMatchObject({
      code: 'BOXBACK_ERR_ARCHIVE_FAILED',
      message: expect.stringContaining('nope'),
    });
    await expect(stageDataset({ name: 'gone2', files: [path.join(dir, 'nope.txt')] }, opts())).rejects.toMatchObject({
      code: 'BOXBACK_ERR_ARCHIVE_FAILED',
      message: expect.stringContaining('nope.txt'),
    });
  });
});
