// Nothing outside packages/common/src/store/ builds a store path or touches stored bytes
// (docs/design/store-interface.md): callers are handed a BackupStore and name backups by
// BackupRef. This test reads every source file of the daemons and refuses the ways a store
// path gets built: the local backend's layout helpers, the layout's names spelled out, a
// path joined onto a store directory. ALLOWED lists what has not moved behind the interface
// yet; an entry that is no longer needed fails the test too, so the list only shrinks.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');

/** The local backend's internals: only store/ and the registry may call them. */
const LAYOUT_HELPERS = [
  'resolveInStore',
  'hostDir',
  'backupDir',
  'storedPath',
  'removeStaleTemps',
  'createTempDir',
  'removeTemp',
  'freeTimestamp',
  'syncToDisk',
  'publish',
  'previousBackup',
  'deleteBackupDir',
  'uniqueBytes',
  'listBackupRefs',
  'hasBackup',
  'LinkFarms',
  'linkFarm',
  'syncTreeIncremental',
  'readPrevIndex',
  'describeFromPrevious',
  'TEMP_PREFIX',
  'FARM_DIR',
];

/** The layout's names, spelled out in code (not in comments). */
const LAYOUT_SPELLINGS: [string, RegExp][] = [
  ['backup_${...} directory name', /backup_\$\{/],
  ['.tmp-backup_ staging name', /\.tmp-backup_/],
  ['.journal-farm', /\.journal-farm/],
  ['a path joined onto the store directory', /path\.(join|resolve)\(\s*((config|ctx|d|o|this)\.(config\.)?)?store\b/],
  ['the local store directory (storeRoot, until backup and restore use the interface)', /\bstoreRoot\(/],
  ['node:fs on the store directory', /fsp?\.\w+\(\s*((config|ctx|d|o|this)\.(config\.)?)?store\b/],
];

/** file (from the repository root) -> findings still allowed (see the header). */
const ALLOWED: Record<string, string[]> = {
  // the journal bench's own link farms (bench/journal-bench.mjs); the agent's come from the store
  'packages/agent/src/journal/index.ts': ['imports LinkFarms'],
  // the local directories GoCD's post-backup hook variables name (empty for kind: s3)
  'packages/agent/src/store.ts': ['a path joined onto the store directory', 'backup_${...} directory name'],
};

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Code without comments (block and line comments), good enough for these patterns. */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

function findings(file: string): string[] {
  const text = code(readFileSync(file, 'utf8'));
  const out = new Set<string>();
  for (const m of text.matchAll(/import\s*(?:type\s*)?\{([^}]*)\}\s*from\s*'@boxback\/common'/g)) {
    for (const name of m[1].split(',').map(
      (s) =>
        s
          .trim()
          .replace(/^type\s+/, '')
          .split(/\s+as\s+/)[0],
    )) {
      if (LAYOUT_HELPERS.includes(name)) out.add(`imports ${name}`);
    }
  }
  for (const [what, re] of LAYOUT_SPELLINGS) if (re.test(text)) out.add(what);
  if (/from 'node:fs'|from 'node:fs\/promises'/.test(text) && /resolveInStore|\bstoreDir\b/.test(text)) out.add('fs on a store path');
  return [...out].sort();
}

describe('store confinement', () => {
  const files = ['packages/agent/src', 'packages/controller/src'].flatMap((d) => sources(path.join(root, d)));

  it('finds the daemons sources', () => {
    expect(files.length).toBeGreaterThan(50);
  });

  it('no daemon source builds a store path or calls the local backend directly', () => {
    const got: Record<string, string[]> = {};
    for (const f of files) {
      const rel = path.relative(root, f);
      const fs = findings(f);
      if (fs.length) got[rel] = fs;
    }
    expect(got).toEqual(ALLOWED);
  });

  it('catches what it is meant to catch', () => {
    const sample = [
      "import { resolveInStore, type BackupRef } from '@boxback/common';",
      'const d = path.join(config.store, host, `backup_${ts}`); // a comment: path.join(store)',
      'await fsp.readdir(store);',
    ].join('\n');
    const text = code(sample);
    expect(/import\s*(?:type\s*)?\{([^}]*)\}\s*from\s*'@boxback\/common'/.exec(text)?.[1]).toContain('resolveInStore');
    expect(LAYOUT_SPELLINGS.filter(([, re]) => re.test(text)).map(([w]) => w)).toEqual([
      'backup_${...} directory name',
      'a path joined onto the store directory',
      'node:fs on the store directory',
    ]);
  });
});
