/**
 * One inotify watch on one directory, as small as this host allows (the change journal holds
 * one per directory of every watched tree: ~40k at the bench's default size).
 *
 * Three implementations, the first one available is used:
 *  1. `inotify`: our addon (packages/agent/native/inotify.c, built by node-gyp at `npm ci`):
 *     one inotify instance for the process, a watch is its watch descriptor and a small
 *     object here. 40,200 directories: +4.9 MB RSS against +27 MB for (2)
 *     (docs/design/agent-memory.md). It also reports the kernel's IN_Q_OVERFLOW, which libuv
 *     drops: `sink.onOverflow` (events were lost, the tree must be re-scanned).
 *  2. `fsevent`: Node's `FSEvent` handle, the one `fs.watch` makes inside, from
 *     `process.binding('fs_event_wrap')` (allow-listed, documented as deprecated, DEP0111),
 *     each handle carrying its directory and its sink and sharing one `onchange` function.
 *  3. `fs.watch`: same behaviour, the most memory.
 * Events are reported as Node reports them (libuv's mapping): an event on watched directory
 * `rel` about its entry `name`, "change" for a write or attribute change, "rename" for anything
 * else; an event about the directory itself carries its base name. `watchDirectory` throws
 * what `fs.watch` throws (an errno error: ENOENT, ENOTDIR, ENOSPC...), and a failure after the
 * start closes the watch and goes to `sink.onError`, as an FSWatcher's 'error' event does.
 */
import { watch } from 'node:fs';
import path from 'node:path';
import util from 'node:util';
import { nativeAddon } from '../native.js';

export interface WatchSink {
  /** An event on watched directory `rel` about its entry `name` ("rename" or "change"). */
  onRaw(rel: string, event: string, name: string | null): void;
  onError(e: NodeJS.ErrnoException): void;
  /** The kernel's event queue overflowed: events of any watch may have been lost (`inotify` only). */
  onOverflow?(): void;
}

export interface DirWatch {
  close(): void;
}

function errnoError(status: number, syscall: string, where: string): NodeJS.ErrnoException {
  const code = util.getSystemErrorName(status);
  const e: NodeJS.ErrnoException = new Error(`${code}: ${syscall} ${where}`);
  Object.assign(e, { errno: status, code, syscall, path: where });
  return e;
}

// ---- 1. the addon ------------------------------------------------------------------------

const IN_MODIFY = 0x2;
const IN_ATTRIB = 0x4;
const IN_Q_OVERFLOW = 0x4000;
const IN_IGNORED = 0x8000;
const IN_ONLYDIR = 0x1000000;
/** What libuv watches for fs.watch: writes, attributes, entries created, deleted, moved; the directory deleted or moved. */
const WATCH_MASK = IN_ATTRIB | IN_MODIFY | 0x40 /* MOVED_FROM */ | 0x80 /* MOVED_TO */ | 0x100 /* CREATE */ | 0x200; /* DELETE */
const MASK = WATCH_MASK | 0x400 /* DELETE_SELF */ | 0x800 /* MOVE_SELF */ | IN_ONLYDIR;

const addon = nativeAddon;

class InotifyWatch implements DirWatch {
  constructor(
    public wd: number,
    readonly rel: string,
    /** The directory's base name for events about itself when `rel` does not end with it (a tree's root). */
    readonly self: string | undefined,
    readonly sink: WatchSink,
  ) {}
  close(): void {
    release(this);
  }
}

/** Live watches by watch descriptor (two paths to one directory share its descriptor). */
const byWd = new Map<number, InotifyWatch | InotifyWatch[]>();
let addonStarted = false;

function release(w: InotifyWatch): void {
  const held = byWd.get(w.wd);
  if (held === undefined) return;
  if (held === w) byWd.delete(w.wd);
  else if (Array.isArray(held) && held.includes(w)) {
    const rest = held.filter((x) => x !== w);
    byWd.set(w.wd, rest.length === 1 ? rest[0] : rest);
    return;
  } else return;
  addon!.rm(w.wd);
  if (byWd.size === 0) addon!.ref(false);
}

function each(held: InotifyWatch | InotifyWatch[], fn: (w: InotifyWatch) => void): void {
  if (Array.isArray(held)) for (const w of [...held]) fn(w);
  else fn(held);
}

function allSinks(): Set<WatchSink> {
  const sinks = new Set<WatchSink>();
  for (const held of byWd.values()) each(held, (w) => sinks.add(w.sink));
  return sinks;
}

/** One read of the inotify fd: struct inotify_event { int wd; u32 mask, cookie, len; char name[len]; }... */
function onInotify(data: Buffer | number): void {
  if (typeof data === 'number') {
    // Reading failed: every watch is in doubt.
    const e = errnoError(data, 'read', 'inotify');
    for (const s of allSinks()) s.onError(e);
    return;
  }
  let overflow = false;
  for (let off = 0; off + 16 <= data.length;) {
    const wd = data.readInt32LE(off);
    const mask = data.readUInt32LE(off + 4);
    const len = data.readUInt32LE(off + 12);
    const start = off + 16;
    off = start + len;
    if (mask & IN_Q_OVERFLOW) {
      overflow = true;
      continue;
    }
    const held = byWd.get(wd);
    if (held === undefined) continue; // closed meanwhile
    let name: string | null = null;
    if (len > 0) {
      const end = data.indexOf(0, start);
      name = data.toString('utf8', start, end < 0 || end > off ? off : end);
    }
    const event = mask & ~(IN_ATTRIB | IN_MODIFY) ? 'rename' : 'change';
    each(held, (w) => w.sink.onRaw(w.rel, event, name ?? w.self ?? w.rel.slice(w.rel.lastIndexOf('/') + 1)));
    // The kernel removed the watch (directory deleted, file system unmounted): its descriptor may be reused.
    if (mask & IN_IGNORED && byWd.get(wd) === held) {
      byWd.delete(wd);
      each(held, (w) => (w.wd = -1));
      if (byWd.size === 0) addon!.ref(false);
    }
  }
  if (overflow) for (const s of allSinks()) s.onOverflow?.();
}

function watchInotify(abs: string, rel: string, sink: WatchSink): DirWatch {
  if (!addonStarted) {
    const rc = addon!.start(onInotify);
    if (rc < 0) throw errnoError(rc, 'inotify_init', abs);
    addonStarted = true;
  }
  const wd = addon!.add(abs, MASK);
  if (wd < 0) throw errnoError(wd, 'watch', abs);
  const self = rel && (abs === rel || abs.endsWith(`/${rel}`)) ? undefined : path.basename(abs);
  const w = new InotifyWatch(wd, rel, self, sink);
  const held = byWd.get(wd);
  if (held === undefined) byWd.set(wd, w);
  else byWd.set(wd, Array.isArray(held) ? [...held, w] : [held, w]);
  if (byWd.size === 1 && held === undefined) addon!.ref(true);
  return w;
}

// ---- 2. Node's FSEvent handle --------------------------------------------------------------

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

function onchange(this: RawWatch, status: number, event: string, name: string | null): void {
  if (status < 0) {
    this.close();
    this.sink.onError(errnoError(status, 'watch', this.rel || '.'));
  } else this.sink.onRaw(this.rel, event, name);
}

/** Watch directory `abs` (known to the sink as `rel`); throws as fs.watch does. */
export function watchDirectory(abs: string, rel: string, sink: WatchSink): DirWatch {
  if (addon) return watchInotify(abs, rel, sink);
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

/** Which implementation this process uses (tests, logs). */
export const DIR_WATCH_KIND: 'inotify' | 'fsevent' | 'fs.watch' = addon ? 'inotify' : FSEvent ? 'fsevent' : 'fs.watch';
