// Host-file rewriting: whole tokens only, one pass, index-matched addresses; and the
// dry-run diff is the same unified diff GNU diff -u prints.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Manifest } from '@boxback/common';
import type { AgentConfig } from '../../packages/agent/src/config.js';
import { replacements, rewrite, unifiedDiff } from '../../packages/agent/src/restore/host-files.js';

const manifest = (hostname: string, addresses: string[]) => ({ source: { hostname, addresses } }) as unknown as Manifest;
const config = (hostname: string, addresses: string[]) => ({ hostname, addresses }) as unknown as AgentConfig;

describe('host-file rewrite', () => {
  it('replaces whole tokens only', () => {
    const { list } = replacements(manifest('ci-1', ['10.0.0.1', '192.168.1.5']), config('ci-2', ['10.9.9.9', '172.16.0.7']));
    const text = [
      'PRIVATE_ADDRESS=10.0.0.1',
      'OTHER=10.0.0.11 10.0.0.1.5 110.0.0.1',
      'PUBLIC=192.168.1.5:8800',
      'HOST=ci-1 URL=https://ci-1:8154/go ci-1.example.com ci-10 my-ci-1',
    ].join('\n');
    const r = rewrite(text, list);
    expect(r.text).toBe(
      [
        'PRIVATE_ADDRESS=10.9.9.9',
        'OTHER=10.0.0.11 10.0.0.1.5 110.0.0.1',
        'PUBLIC=172.16.0.7:8800',
        'HOST=ci-2 URL=https://ci-2:8154/go ci-2.example.com ci-10 my-ci-1',
      ].join('\n'),
    );
    expect(r.count).toBe(5);
  });

  it('swaps values in one pass, and uses the first target address when there are fewer', () => {
    const { list } = replacements(manifest('a', ['10.0.0.1', '10.0.0.2']), config('a', ['10.0.0.2']));
    expect(rewrite('x=10.0.0.1 y=10.0.0.2', list).text).toBe('x=10.0.0.2 y=10.0.0.2');
    const swap = rewrite('x=10.0.0.1 y=10.0.0.2', [
      { from: '10.0.0.1', to: '10.0.0.2' },
      { from: '10.0.0.2', to: '10.0.0.1' },
    ]);
    expect(swap.text).toBe('x=10.0.0.2 y=10.0.0.1');
  });

  it('handles IPv6 addresses as tokens', () => {
    const r = rewrite('listen [fd00::1]:80 and fd00::10', [{ from: 'fd00::1', to: 'fd00::2' }]);
    expect(r.text).toBe('listen [fd00::2]:80 and fd00::10');
  });

  it('warns when this box has no address', () => {
    const r = replacements(manifest('a', ['10.0.0.1']), config('b', []));
    expect(r.list).toEqual([{ from: 'a', to: 'b' }]);
    expect(r.warnings[0]).toMatch(/no address/);
  });
});

describe('unified diff', () => {
  it('matches diff -u', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-diff-'));
    try {
      const a = Array.from({ length: 40 }, (_, i) => `line ${i}`);
      const b = [...a];
      b[2] = 'changed 2';
      b.splice(10, 1);
      b.splice(20, 0, 'inserted');
      b[35] = 'changed 35';
      b[b.length - 1] = 'last changed';
      const ta = `${a.join('\n')}\n`;
      const tb = `${b.join('\n')}\n`;
      writeFileSync(path.join(dir, 'a'), ta);
      writeFileSync(path.join(dir, 'b'), tb);
      let gnu = '';
      try {
        execFileSync('diff', ['-u', path.join(dir, 'a'), path.join(dir, 'b')], { encoding: 'utf8' });
      } catch (err) {
        gnu = (err as { stdout: string }).stdout;
      }
      const ours = unifiedDiff(ta, tb, 'a', 'b');
      const body = (s: string) => s.split('\n').slice(2).join('\n').replace(/\n+$/, '');
      expect(body(ours)).toBe(body(gnu).replace(/\n\\ No newline at end of file/g, ''));
      expect(unifiedDiff(ta, ta, 'a', 'b')).toBe('');
      expect(unifiedDiff('', 'new\n', 'a', 'b')).toBe('--- a\n+++ b\n@@ -0,0 +1,1 @@\n+new\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
