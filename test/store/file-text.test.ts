// file-text.ts: a file's text through one reused buffer gives exactly the file's text (UTF-8
// sequences split across reads included), line by line through readline or fileLinesSync, and
// open errors as fs throws them; and a manifest read a line at a time leaves little garbage in
// the JS heap.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { fileLinesSync, openFileText } from '../../packages/common/src/file-text.js';
import { AGENT_NODE_FLAGS } from '../../packages/agent/src/node-flags.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'boxback-filetext-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('openFileText', () => {
  it('gives the same text and lines as a whole read, with chunks that split UTF-8 sequences', async () => {
    const lines = Array.from({ length: 3000 }, (_, i) => `{"path":"tree/dïr-${i}/ファイル-${'é'.repeat(i % 7)}.txt","n":${i}}`);
    const file = path.join(tmp, 'm.json');
    writeFileSync(file, `${lines.join('\n')}\n`);
    for (const chunk of [7, 1024, 256 * 1024]) {
      let text = '';
      for await (const s of await openFileText(file, chunk)) text += s;
      expect(text).toBe(`${lines.join('\n')}\n`);
      const got: string[] = [];
      for await (const l of createInterface({ input: await openFileText(file, chunk), crlfDelay: Infinity })) got.push(l);
      expect(got).toEqual(lines);
    }
  });

  it('an empty file is an empty stream; a missing one throws ENOENT at open', async () => {
    const empty = path.join(tmp, 'empty');
    writeFileSync(empty, '');
    const got: string[] = [];
    for await (const s of await openFileText(empty)) got.push(s);
    expect(got).toEqual([]);
    await expect(openFileText(path.join(tmp, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it("fileLinesSync gives readline's lines, with or without a last newline, and closes the file when left early", () => {
    const lines = Array.from({ length: 3000 }, (_, i) =>
      i % 11 === 5 ? '' : `{"path":"tree/dïr-${i}/ファイル-${'é'.repeat(i % 7)}.txt","n":${i}}`,
    );
    const file = path.join(tmp, 'lines.json');
    for (const end of ['\n', '']) {
      writeFileSync(file, `${lines.join('\n')}${end}`);
      for (const chunk of [7, 1024, 256 * 1024]) expect([...fileLinesSync(file, chunk)]).toEqual(lines);
    }
    const fds = () => readdirSync('/proc/self/fd').length;
    const before = fds();
    for (let i = 0; i < 20; i++) {
      for (const l of fileLinesSync(file, 1024)) if (l.includes('"n":10}')) break;
    }
    expect(fds()).toBe(before);
    writeFileSync(path.join(tmp, 'empty'), '');
    expect([...fileLinesSync(path.join(tmp, 'empty'))]).toEqual([]);
    expect(() => [...fileLinesSync(path.join(tmp, 'missing'))]).toThrow(/ENOENT/);
  });

  it('reading two 24 MB manifests at once line by line grows the JS heap by little: its chunks die young', () => {
    // A manifest-like file (one JSON line per file), read twice at once through readline in a
    // process with the agent's V8 flags, the heap's growth sampled every 5 ms. A chunk's text is
    // one string: over 128 KiB it would go to V8's large-object space and stay until a major GC
    // (measured: +23.6 MB for 256 KiB chunks, +4.3 MB for the 64 KiB default).
    const file = path.join(tmp, 'big.json');
    const line = (i: number) =>
      `  {"path":"artifacts/pipelines/p-${i % 300}/run-${i >> 3}/job/console-${i}.log","type":"file","size":${1000 + i},"mode":420,"uid":0,"gid":0,"mtimeMs":${1765e9 + i},"sha256":"${'ab'.repeat(32)}"},`;
    writeFileSync(file, Array.from({ length: 120_000 }, (_, i) => line(i)).join('\n'));
    const fileText = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../packages/common/dist/file-text.js');
    const script = `
      import { createInterface } from 'node:readline';
      import v8 from 'node:v8';
      const { openFileText } = await import(${JSON.stringify(fileText)});
      const chunk = Number(process.argv[1]) || undefined;
      globalThis.gc();
      const base = v8.getHeapStatistics().used_heap_size;
      let max = 0;
      const t = setInterval(() => { max = Math.max(max, v8.getHeapStatistics().used_heap_size - base); }, 5);
      let n = 0;
      const one = async () => {
        for await (const l of createInterface({ input: await openFileText(${JSON.stringify(file)}, chunk), crlfDelay: Infinity })) {
          if (l.includes('"type":"file"')) n++;
          await null;
        }
      };
      await Promise.all([one(), one()]);
      clearInterval(t);
      console.log(JSON.stringify({ n, maxMb: max / 1e6 }));
    `;
    const run = (chunk: number) => {
      const r = spawnSync(process.execPath, [...AGENT_NODE_FLAGS, '--input-type=module', '-e', script, String(chunk)], {
        encoding: 'utf8',
      });
      if (r.status !== 0) throw new Error(r.stderr);
      return JSON.parse(r.stdout.trim()) as { n: number; maxMb: number };
    };
    const dflt = run(0);
    const big = run(256 * 1024);
    expect(dflt.n).toBe(240_000);
    expect(big.n).toBe(240_000);
    expect(dflt.maxMb).toBeLessThan(10);
    // The measure tells them apart: 256 KiB chunks pile up in the old generation.
    expect(big.maxMb).toBeGreaterThan(dflt.maxMb + 5);
  });
});
