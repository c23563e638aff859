// The journal's per-directory inotify watch (journal/dir-watch.ts) on real directories: it
// reports a directory's entries by name as fs.watch does, throws fs.watch's errno errors,
// stops reporting once closed, and costs less memory than fs.watch (the reason it exists);
// and a TreeWatcher's rewatch during a restart waits for the tree to be watched again.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { Logger } from '@boxback/common';
import { DIR_WATCH_KIND, watchDirectory, type WatchSink } from '../../packages/agent/src/journal/dir-watch.js';
import { TreeWatcher } from '../../packages/agent/src/journal/watcher.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'boxback-dirwatch-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function sink(): WatchSink & { events: string[]; errors: string[] } {
  const events: string[] = [];
  const errors: string[] = [];
  return { events, errors, onRaw: (rel, ev, name) => events.push(`${rel}|${ev}|${name}`), onError: (e) => errors.push(String(e.code)) };
}

describe('watchDirectory', () => {
  it("uses Node's bare watch handle on this Node", () => {
    expect(DIR_WATCH_KIND).toBe('fsevent');
  });

  it('reports created, changed and removed entries by name, with the directory the caller named', async () => {
    const dir = path.join(tmp, 'a');
    mkdirSync(dir);
    const s = sink();
    const w = watchDirectory(dir, 'sub/a', s);
    writeFileSync(path.join(dir, 'f.txt'), 'x');
    mkdirSync(path.join(dir, 'd'));
    rmSync(path.join(dir, 'f.txt'));
    await sleep(300);
    expect(s.events).toContain('sub/a|rename|f.txt');
    expect(s.events).toContain('sub/a|change|f.txt');
    expect(s.events).toContain('sub/a|rename|d');
    expect(s.errors).toEqual([]);
    w.close();
    const before = s.events.length;
    writeFileSync(path.join(dir, 'g.txt'), 'y');
    await sleep(300);
    expect(s.events.length).toBe(before);
    w.close(); // a second close is harmless
  });

  it('throws an errno error as fs.watch does for a missing directory', () => {
    expect(() => watchDirectory(path.join(tmp, 'nope'), 'nope', sink())).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('holds 2,000 watches in less memory than fs.watch', () => {
    const root = path.join(tmp, 'many');
    for (let i = 0; i < 2000; i++) mkdirSync(path.join(root, `d${i}`), { recursive: true });
    const here = path.dirname(fileURLToPath(import.meta.url));
    const script = `
      import { watch } from 'node:fs';
      const { watchDirectory } = await import(${JSON.stringify(path.join(here, '../../packages/agent/dist/journal/dir-watch.js'))});
      const s = { onRaw() {}, onError() {} };
      const keep = [];
      gc(); const h0 = process.memoryUsage().heapUsed;
      for (let i = 0; i < 2000; i++) {
        const d = ${JSON.stringify(root)} + '/d' + i;
        keep.push(process.argv[1] === 'raw' ? watchDirectory(d, 'd' + i, s) : watch(d, (e, n) => s.onRaw('d' + i, e, n)).on('error', () => {}));
      }
      gc(); console.log(process.memoryUsage().heapUsed - h0); process.exit(0);`;
    const heap = (mode: string) =>
      Number(spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script, mode], { encoding: 'utf8' }).stdout.trim());
    const raw = heap('raw');
    const fsWatch = heap('fs.watch');
    expect(raw).toBeGreaterThan(0);
    expect(raw).toBeLessThan(fsWatch / 3);
  });
});

describe('TreeWatcher', () => {
  it('a rewatch while the watcher is restarting resolves when the tree is watched again, not before', async () => {
    // A restore's rewatch usually finds the watcher restarting (it saw its root replaced); the
    // daemon collects the scan's garbage when the rewatch resolves, so it must resolve after
    // the scan, with the tree watched.
    const root = path.join(tmp, 'rewatch');
    for (let i = 0; i < 300; i++) mkdirSync(path.join(root, `d${i}`, 'sub'), { recursive: true });
    const quiet = () => undefined;
    const log = { info: quiet, warn: quiet, error: quiet, debug: quiet, child: () => log } as unknown as Logger;
    const untrusted: string[] = [];
    const w = new TreeWatcher({
      tree: 't',
      source: root,
      excludes: [],
      log,
      onChange: quiet,
      onUntrusted: (r) => untrusted.push(r),
      chunkEntries: 50,
    });
    try {
      expect((await w.start()).state).toBe('watching');
      const restarting = w.restartAfter('events were lost');
      await w.rewatch('a restore replaced the tree');
      expect(w.stats().state).toBe('watching');
      expect(w.stats().directories).toBe(601);
      await restarting;
      expect(untrusted).toEqual(['events were lost']);
    } finally {
      await w.close();
    }
  });
});
