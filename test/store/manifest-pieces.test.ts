// manifest.json written from part files (PUBLISH): the text must be the one manifestToJson gives
// for the same entries, however the parts' lines fall across the chunks they are read in.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MANIFEST_FORMAT, manifestPieces, manifestToJson, parseManifestText, writeFileAtomic, type Manifest } from '@boxback/common';

const root = mkdtempSync(path.join(os.tmpdir(), 'boxback-pieces-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const head = (): Manifest =>
  ({
    format: MANIFEST_FORMAT,
    agentVersion: 'test',
    host: 'h',
    timestamp: '20260101-000000',
    files: [],
    datasets: [],
    trees: [],
    totals: { files: 0, bytes: 0 },
    warnings: [],
  }) as unknown as Manifest;

/** File entries with names of varied lengths (some non-ASCII), as PartWriter's lines. */
function entries(n: number, seed: number) {
  return Array.from({ length: n }, (_, i) => ({
    path: `tree/${'d'.repeat((i * seed) % 37)}/f-${i}-${i % 7 === 0 ? 'é✓' : 'x'}.log`,
    type: 'file' as const,
    size: i * 13,
    sha256: (i * 2654435761).toString(16).padStart(64, '0').slice(0, 64),
    mode: 0o644,
  }));
}

async function written(parts: string[], chunk?: number): Promise<string> {
  const out = path.join(root, `m-${Math.random()}.json`);
  await writeFileAtomic(out, manifestPieces(head(), parts, chunk));
  return readFileSync(out, 'utf8');
}

describe('manifestPieces', () => {
  it('gives manifestToJson text from part files, whatever the chunk size, with empty parts and blank lines', async () => {
    const a = entries(400, 3); // ~76 KB: more than one 64 KiB chunk
    const b = entries(7, 5).map((e) => ({ ...e, path: `other/${e.path}` }));
    const lines = (es: object[]) => es.map((e) => JSON.stringify(e));
    const p1 = path.join(root, 'p1.jsonl');
    const p2 = path.join(root, 'p2.jsonl');
    const p3 = path.join(root, 'p3.jsonl');
    const p4 = path.join(root, 'p4.jsonl');
    writeFileSync(p1, `${lines(a).join('\n')}\n`);
    writeFileSync(p2, ''); // a tree with no entries
    // Blank lines are skipped; no newline at the end.
    writeFileSync(p3, `\n${lines(b).slice(0, 3).join('\n')}\n\n${lines(b).slice(3).join('\n')}`);
    writeFileSync(p4, '\n\n');
    const expected = manifestToJson({ ...head(), files: [...a, ...b] } as Manifest);
    for (const chunk of [undefined, 61, 333, 4096]) expect(await written([p2, p1, p4, p3, p2], chunk), `chunk ${chunk}`).toBe(expected);
    expect(parseManifestText(expected).files).toHaveLength(407);
  });

  it('with no entries at all: an empty file list', async () => {
    const p = path.join(root, 'empty.jsonl');
    writeFileSync(p, '\n');
    expect(await written([p], 3)).toBe(manifestToJson(head()));
    expect(await written([])).toBe(manifestToJson(head()));
  });
});
