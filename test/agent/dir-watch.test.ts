// The journal's per-directory inotify watch (journal/dir-watch.ts) on real directories: it
// reports a directory's entries by name as fs.watch does, throws fs.watch's errno errors,
// stops reporting once closed, and costs less memory than fs.watch (the reason it exists);
// our addon reports a queue overflow and a TreeWatcher re-scans on it; a TreeWatcher's
// rewatch during a restart waits for the tree to be watched again.
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
const distDirWatch = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../packages/agent/dist/journal/dir-watch.js');
const addonPath = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../packages/agent/native/build/Release/boxback_inotify.node');

function sink(): WatchSink & { events: string[]; errors: string[] } {
  const events: string[] = [];
  const errors: string[] = [];
  return { events, errors, onRaw: (rel, ev, name) => events.push(`${rel}|${ev}|${name}`), onError: (e) => errors.push(String(e.code)) };
}

describe('watchDirectory', () => {
  it("uses our inotify addon (built by npm ci), and Node's bare watch handle without it", () => {
    expect(DIR_WATCH_KIND, 'packages/agent/native is built by npm ci (or: npm rebuild -w @boxback/agent)').toBe('inotify');
    const kind = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', `console.log((await import(${JSON.stringify(distDirWatch)})).DIR_WATCH_KIND)`],
      { encoding: 'utf8', env: { ...process.env, BOXBACK_INOTIFY_ADDON: 'off' } },
    );
    expect(kind.stdout.trim()).toBe('fsevent');
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

  it('reports a directory deleted, with its own name, and then nothing more', async () => {
    const dir = path.join(tmp, 'gone');
    mkdirSync(dir);
    const s = sink();
    const w = watchDirectory(dir, 'x/gone', s);
    rmSync(dir, { recursive: true });
    await sleep(300);
    expect(s.events).toContain('x/gone|rename|gone');
    w.close(); // after the kernel dropped the watch: harmless
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'f'), 'x');
    await sleep(200);
    expect(s.events.filter((e) => e.endsWith('|f'))).toEqual([]);
  });

  it('throws ENOTDIR for a file', () => {
    writeFileSync(path.join(tmp, 'plain'), 'x');
    expect(() => watchDirectory(path.join(tmp, 'plain'), 'plain', sink())).toThrow(expect.objectContaining({ code: 'ENOTDIR' }));
  });

  it('reports a queue overflow (events lost) that libuv would have dropped', async () => {
    const dir = path.join(tmp, 'flood');
    mkdirSync(dir);
    let overflows = 0;
    const s = { ...sink(), onOverflow: () => overflows++ };
    const w = watchDirectory(dir, 'flood', s);
    // More events than the kernel queues (fs.inotify.max_queued_events) while JS cannot read them.
    const max = Number(readFileSync('/proc/sys/fs/inotify/max_queued_events', 'utf8'));
    for (let i = 0; i <= max; i++) closeSync(openSync(path.join(dir, `f${i}`), 'w'));
    await sleep(500);
    w.close();
    expect(overflows).toBe(1);
    expect(s.events.length).toBeLessThanOrEqual(max);
  });

  it("holds 10,000 watches in a fraction of the native memory of Node's bare handles", () => {
    const root = path.join(tmp, 'rss');
    for (let i = 0; i < 10_000; i++) mkdirSync(path.join(root, `d${i}`), { recursive: true });
    // What 10,000 watches kept in a map add: native memory (anonymous RSS outside the JS heap's
    // resident pages: heapTotal counts pages V8 reserved but never touched, and it moved by more
    // than the handles' 5 MB once the agent's native module imports @boxback/common) and JS heap in use.
    // Both readings follow a malloc_trim (the addon loaded by path, also when the agent may not use
    // it): without it, the handles filled pages glibc had freed but kept, and Node's measured 2.2 MB.
    const script = `
      import { readFileSync } from 'node:fs';
      import { createRequire } from 'node:module';
      import v8 from 'node:v8';
      const { watchDirectory } = await import(${JSON.stringify(distDirWatch)});
      const addon = createRequire(import.meta.url)(${JSON.stringify(addonPath)});
      const at = () => {
        gc();
        addon.trim();
        const anon = Number(readFileSync('/proc/self/status', 'utf8').match(/RssAnon:\\s+(\\d+)/)[1]) * 1024;
        const h = v8.getHeapStatistics();
        return { native: anon - h.total_physical_size, heap: h.used_heap_size };
      };
      const s = { onRaw() {}, onError() {} };
      const keep = new Map();
      const a = at();
      for (let i = 0; i < 10000; i++) keep.set('d' + i, watchDirectory(${JSON.stringify(root)} + '/d' + i, 'd' + i, s));
      const b = at();
      console.log(JSON.stringify({ native: b.native - a.native, heap: b.heap - a.heap })); process.exit(0);`;
    const grow = (addon: string): { native: number; heap: number } =>
      JSON.parse(
        spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
          encoding: 'utf8',
          env: { ...process.env, BOXBACK_INOTIFY_ADDON: addon },
        }).stdout,
      );
    const fsevent = grow('off');
    // The lower of two runs: what else the process allocates meanwhile (V8's code, libuv) only adds.
    const [i1, i2] = [grow(''), grow('')];
    const inotify = i1.native <= i2.native ? i1 : i2;
    expect(fsevent.native).toBeGreaterThan(3e6); // ~500 B a directory (measured 4.8-6.1 MB after the trim; 2.2 MB once without it)
    expect(inotify.native).toBeLessThan(fsevent.native / 3); // measured 0.3-1.4 MB a run
    expect(inotify.heap).toBeLessThan(2.5e6); // the watch objects and the maps: ~120 B a directory
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
    // Node's bare handle (the fallback without our addon) against fs.watch.
    const heap = (mode: string) =>
      Number(
        spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script, mode], {
          encoding: 'utf8',
          env: { ...process.env, BOXBACK_INOTIFY_ADDON: 'off' },
        }).stdout.trim(),
      );
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

  it('an inotify queue overflow makes the journal untrusted and the tree is watched again', async () => {
    const root = path.join(tmp, 'overflow');
    for (let i = 0; i < 20; i++) mkdirSync(path.join(root, `d${i}`), { recursive: true });
    const quiet = () => undefined;
    const log = { info: quiet, warn: quiet, error: quiet, debug: quiet, child: () => log } as unknown as Logger;
    const untrusted: string[] = [];
    const watching: boolean[] = [];
    const w = new TreeWatcher({
      tree: 't',
      source: root,
      excludes: [],
      log,
      onChange: quiet,
      onUntrusted: (r) => untrusted.push(r),
      onWatching: (on) => watching.push(on),
    });
    try {
      expect((await w.start()).state).toBe('watching');
      const max = Number(readFileSync('/proc/sys/fs/inotify/max_queued_events', 'utf8'));
      // A new directory whose creation event is lost in the overflow: only a re-scan watches it.
      for (let i = 0; i <= max; i++) closeSync(openSync(path.join(root, 'd0', `f${i}`), 'w'));
      mkdirSync(path.join(root, 'd1', 'new'));
      for (let t = 0; t < 100 && !(untrusted.length && w.stats().state === 'watching' && watching.at(-1)); t++) await sleep(100);
      expect(untrusted).toHaveLength(1);
      expect(untrusted[0]).toMatch(/overflow/);
      expect(w.stats().state).toBe('watching');
      expect(w.stats().directories).toBe(22);
      expect(watching).toEqual([true, false, true]);
    } finally {
      await w.close();
    }
  });
});
