// removeTree (common/remove-tree.ts): `rm -rf` of a tree in a child process, with
// fsp.rm({ recursive, force })'s contract: the tree is gone, a symlink in it is removed and not
// followed, a missing path is nothing to do, a file is removed, a failure throws. removeSmallTree
// keeps the same contract, on the JS thread within its budget and by rm -rf past it.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeSmallTree, removeTree } from '../../packages/common/src/remove-tree.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'boxback-removetree-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const WAYS: [string, (p: string) => Promise<void>][] = [
  ['removeTree', removeTree],
  ['removeSmallTree', (p) => removeSmallTree(p)],
  ['removeSmallTree past its budget (10 entries, then rm -rf)', (p) => removeSmallTree(p, 10)],
];

describe.each(WAYS)('%s', (_name, removeTree) => {
  it('removes a tree of files, directories and symlinks without following a symlink out of it', async () => {
    const outside = path.join(tmp, 'outside');
    mkdirSync(outside);
    writeFileSync(path.join(outside, 'keep.txt'), 'kept');
    const tree = path.join(tmp, 'tree');
    for (let i = 0; i < 50; i++) {
      mkdirSync(path.join(tree, `d${i}`, 'sub'), { recursive: true });
      writeFileSync(path.join(tree, `d${i}`, 'sub', 'f'), String(i));
    }
    symlinkSync(outside, path.join(tree, 'link-to-outside'));
    symlinkSync(path.join(outside, 'keep.txt'), path.join(tree, 'd0', 'file-link'));
    await removeTree(tree);
    expect(existsSync(tree)).toBe(false);
    expect(readFileSync(path.join(outside, 'keep.txt'), 'utf8')).toBe('kept');
    rmSync(outside, { recursive: true });
  });

  it('a missing path is nothing to do; a file or a symlink is removed', async () => {
    await expect(removeTree(path.join(tmp, 'missing'))).resolves.toBeUndefined();
    const file = path.join(tmp, 'file');
    writeFileSync(file, 'x');
    await removeTree(file);
    expect(existsSync(file)).toBe(false);
    const link = path.join(tmp, 'dangling');
    symlinkSync(path.join(tmp, 'nowhere'), link);
    await removeTree(link);
    expect(() => readFileSync(link)).toThrow();
  });

  it('throws, naming the path, when rm cannot remove the tree', async (ctx) => {
    // An immutable directory (chattr +i): even root's rm cannot empty it.
    const tree = path.join(tmp, `ro-${Math.random().toString(36).slice(2)}`);
    mkdirSync(path.join(tree, 'd'), { recursive: true });
    writeFileSync(path.join(tree, 'd', 'f'), 'x');
    const { spawnSync } = await import('node:child_process');
    const ro = spawnSync('chattr', ['+i', path.join(tree, 'd')]);
    if (ro.status !== 0) ctx.skip(); // no immutable flag on this filesystem
    try {
      await expect(removeTree(tree)).rejects.toThrow(/rm -rf .*ro-\w+ failed/);
      expect(existsSync(path.join(tree, 'd', 'f'))).toBe(true);
    } finally {
      spawnSync('chattr', ['-i', path.join(tree, 'd')]);
    }
  });
});
