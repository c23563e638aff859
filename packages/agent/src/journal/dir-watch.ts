/**
 * One inotify watch on one directory, as small as Node allows (the change journal holds one
 * per directory of every watched tree: ~45k at the bench's default size).
 *
 * `fs.watch` wraps each watch in an `FSWatcher` (an EventEmitter with its listener arrays, an
 * `onchange` closure, our listener and error closures): measured on 45,301 directories,
 * +75 MB RSS (26 MB of JS heap) for `fs.watch` against +38 MB (4 MB of JS heap) for the same
 * watches made here straight on Node's `FSEvent` handle, the one `fs.watch` makes inside
 * (docs/design/agent-memory.md). Each handle carries its directory and its sink as two
 * properties and shares one `onchange` function: no closure per directory.
 *
 * `FSEvent` comes from `process.binding('fs_event_wrap')` (allow-listed, documented as
 * deprecated, DEP0111); a Node without it gets plain `fs.watch`, same behaviour, more memory.
 * Either way: `watchDirectory` throws what `fs.watch` throws (an errno error: ENOENT,
 * ENOTDIR, ENOSPC...), and a failure after the start closes the watch and goes to
 * `sink.onError`, as an FSWatcher's 'error' event does.
 */
import { watch } from 'node:fs';
import util from 'node:util';

export interface WatchSink {
  /** An event on watched directory `rel` about its entry `name` ("rename" or "change"). */
  onRaw(rel: string, event: string, name: string | null): void;
  onError(e: NodeJS.ErrnoException): void;
}

export interface DirWatch {
  close(): void;
}

/** Node's internal watch handle (src/fs_event_wrap.cc), as lib/internal/fs/watchers.js uses it. */
interface FsEventHandle {
  start(path: string, persistent: boolean, recursive: boolean, encoding: string): number;
  close(): void;
  onchange: (this: RawWatch, status: number, event: string, name: string | null) => void;
}
interface RawWatch extends FsEventHandle {
  rel: string;
  sink: WatchSink;
}

const FSEvent: (new () => FsEventHandle) | undefined = (() => {
  try {
    const b = (process as unknown as { binding(name: string): { FSEvent?: new () => FsEventHandle } }).binding('fs_event_wrap');
    return typeof b.FSEvent === 'function' ? b.FSEvent : undefined;
  } catch {
    return undefined;
  }
})();

function errnoError(status: number, syscall: string, where: string): NodeJS.ErrnoException {
  const code = util.getSystemErrorName(status);
  const e: NodeJS.ErrnoException = new Error(`${code}: ${syscall} ${where}`);
  Object.assign(e, { errno: status, code, syscall, path: where });
  return e;
}

function onchange(this: RawWatch, status: number, event: string, name: string | null): void {
  if (status < 0) {
    this.close();
    this.sink.onError(errnoError(status, 'watch', this.rel || '.'));
  } else this.sink.onRaw(this.rel, event, name);
}

/** Watch directory `abs` (known to the sink as `rel`); throws as fs.watch does. */
export function watchDirectory(abs: string, rel: string, sink: WatchSink): DirWatch {
  if (!FSEvent) {
    const w = watch(abs, { persistent: true }, (event, name) => sink.onRaw(rel, event, name));
    w.on('error', (err: unknown) => sink.onError(err as NodeJS.ErrnoException));
    return w;
  }
  const h = new FSEvent() as RawWatch;
  h.rel = rel;
  h.sink = sink;
  h.onchange = onchange;
  const err = h.start(abs, true, false, 'utf8');
  if (err < 0) {
    h.close();
    throw errnoError(err, 'watch', abs);
  }
  return h;
}

/** Which implementation this Node gives (tests, logs). */
export const DIR_WATCH_KIND: 'fsevent' | 'fs.watch' = FSEvent ? 'fsevent' : 'fs.watch';
