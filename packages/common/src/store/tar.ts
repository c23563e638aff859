/**
 * A stored backup as a tar stream, read through BackupStore (any backend): the layout
 * `backup export` has always written and `backup import` reads back:
 *
 *   backup_<ts>/                 the backup's directory
 *   backup_<ts>/<every entry>    in manifest order: directories, files (streamed from the
 *                                store with openFile), symlinks; modes, owners, mtimes as stored
 *   backup_<ts>/manifest.json    last
 *
 * Headers are node-tar's (ustar, with a pax header for long names or large sizes).
 */
import { Readable } from 'node:stream';
import { Header, Pax } from 'tar';
import { parseManifestText, type ManifestFile } from '../manifest.js';
import type { BackupRef, BackupStore } from './backup-store.js';
import { refId } from './ref.js';

const BLOCK = 512;

interface TarEntry {
  path: string;
  type: 'File' | 'Directory' | 'SymbolicLink';
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  linkpath?: string;
}

function header(e: TarEntry): Buffer {
  const h = new Header({ ...e, size: e.type === 'File' ? e.size : 0 });
  const block = Buffer.alloc(BLOCK);
  const needPax = h.encode(block, 0);
  if (!needPax) return block;
  const pax = new Pax({ path: e.path, linkpath: e.linkpath, size: e.type === 'File' ? e.size : 0, mtime: e.mtime, uid: e.uid, gid: e.gid });
  return Buffer.concat([pax.encode(), block]);
}

const padding = (size: number) => Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);

function entryOf(top: string, f: ManifestFile): TarEntry {
  const type = f.type === 'dir' ? 'Directory' : f.type === 'symlink' ? 'SymbolicLink' : 'File';
  return {
    path: `${top}/${f.path}${f.type === 'dir' ? '/' : ''}`,
    type,
    size: f.size,
    mode: f.mode,
    uid: f.uid,
    gid: f.gid,
    mtime: new Date(f.mtimeMs),
    linkpath: f.target,
  };
}

async function* tarChunks(store: BackupStore, ref: BackupRef): AsyncGenerator<Buffer> {
  const text = await store.readManifestText(ref);
  const m = parseManifestText(text, `the manifest of ${refId(ref)}`);
  const top = `backup_${ref.timestamp}`;
  const now = new Date();
  yield header({ path: `${top}/`, type: 'Directory', size: 0, mode: 0o755, uid: 0, gid: 0, mtime: now });
  for (const f of m.files) {
    const e = entryOf(top, f);
    yield header(e);
    if (e.type !== 'File') continue;
    let n = 0;
    for await (const chunk of await store.openFile(ref, f.path)) {
      n += (chunk as Buffer).length;
      yield chunk as Buffer;
    }
    if (n !== f.size) throw new Error(`${refId(ref)}: ${f.path} has ${n} bytes, its manifest says ${f.size}`);
    yield padding(n);
  }
  const body = Buffer.from(text);
  yield header({ path: `${top}/manifest.json`, type: 'File', size: body.length, mode: 0o644, uid: 0, gid: 0, mtime: now });
  yield body;
  yield padding(body.length);
  yield Buffer.alloc(BLOCK * 2);
}

/** The backup as a tar stream (never buffered whole). */
export function backupTar(store: BackupStore, ref: BackupRef): Readable {
  return Readable.from(tarChunks(store, ref), { objectMode: false });
}
