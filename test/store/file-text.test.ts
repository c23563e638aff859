// file-text.ts: a file's text through one reused buffer gives exactly the file's text (UTF-8
// sequences split across reads included), line by line through readline, and open errors as
// fs throws them.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { openFileText } from '../../packages/common/src/file-text.js';

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
});
