// Random trees and random change sequences for the journal tests: a seeded PRNG, a
// mutator that applies one operation to a live tree and says which paths it touched (what
// a perfect journal would record), and a tree snapshot to compare two trees by value.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp, type BigIntStats, type Stats } from 'node:fs';
import path from 'node:path';

export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Entry {
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  size: number;
  uid: number;
  gid: number;
  mtimeMs?: number;
  /** With snapshotTree's `ns`: the mtime to the nanosecond. */
  mtimeNs?: string;
  sha256?: string;
  target?: string;
}

const exists = (p: string) =>
  fsp.lstat(p).then(
    () => true,
    () => false,
  );

/**
 * Every entry of a tree by relative path (the root itself as "."). With `ns`, mtimes to the
 * nanosecond (mtimeNs) instead of the millisecond.
 */
export async function snapshotTree(root: string, opts: { ns?: boolean } = {}): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const time = (st: BigIntStats | Stats) =>
    opts.ns ? { mtimeNs: String((st as BigIntStats).mtimeNs) } : { mtimeMs: Math.floor(Number(st.mtimeMs)) };
  const describe = async (abs: string, st: BigIntStats | Stats): Promise<Entry> => {
    const base = { mode: Number(st.mode) & 0o7777, uid: Number(st.uid), gid: Number(st.gid) };
    if (st.isSymbolicLink()) return { type: 'symlink', ...base, size: 0, target: await fsp.readlink(abs) };
    if (st.isDirectory()) return { type: 'dir', ...base, size: 0, ...time(st) };
    const data = await fsp.readFile(abs);
    return {
      type: 'file',
      ...base,
      size: Number(st.size),
      ...time(st),
      sha256: createHash('sha256').update(data).digest('hex'),
    };
  };
  const walk = async (rel: string): Promise<void> => {
    const abs = path.join(root, rel);
    const st = opts.ns ? await fsp.lstat(abs, { bigint: true }) : await fsp.lstat(abs);
    out.set(rel || '.', await describe(abs, st));
    if (!st.isDirectory()) return;
    for (const n of await fsp.readdir(abs)) await walk(rel ? `${rel}/${n}` : n);
  };
  await walk('');
  return out;
}

/**
 * Differences between two trees. With `source`, a directory's mtime is compared only where
 * the first tree (a full rsync) carries the source's: rsync leaves a directory's mtime alone
 * when source and destination fall in the same second (a directory changed less than a
 * second before the sync), so there the full pass itself is not the source's value.
 */
export function diffTrees(a: Map<string, Entry>, b: Map<string, Entry>, limit = 20, source?: Map<string, Entry>): string[] {
  const diffs: string[] = [];
  for (const k of new Set([...a.keys(), ...b.keys()])) {
    let x = a.get(k);
    let y = b.get(k);
    const s = source?.get(k);
    if (source && x?.type === 'dir' && y?.type === 'dir' && (s?.mtimeMs !== x.mtimeMs || s?.mtimeNs !== x.mtimeNs)) {
      x = { ...x, mtimeMs: 0, mtimeNs: '' };
      y = { ...y, mtimeMs: 0, mtimeNs: '' };
    }
    if (!x || !y) diffs.push(`${k}: ${x ? 'only in first' : 'only in second'}`);
    else if (JSON.stringify(x) !== JSON.stringify(y)) diffs.push(`${k}: ${JSON.stringify(x)} != ${JSON.stringify(y)}`);
    if (diffs.length >= limit) break;
  }
  return diffs;
}

/** A full `rsync -a --delete --numeric-ids --link-dest` pass, as tree-sync.ts runs it. */
export function fullRsync(source: string, dest: string, linkDest: string | undefined, excludes: string[] = []): void {
  const args = [
    '-a',
    '--delete',
    '--numeric-ids',
    '--modify-window=-1',
    ...(linkDest ? [`--link-dest=${linkDest}`] : []),
    ...excludes.map((x) => `--exclude=${x}`),
    `${source}/`,
    `${dest}/`,
  ];
  execFileSync('rsync', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export class Mutator {
  constructor(
    readonly root: string,
    readonly rnd: () => number,
  ) {}

  private pick<T>(xs: T[]): T | undefined {
    return xs.length ? xs[Math.floor(this.rnd() * xs.length)] : undefined;
  }
  private name(prefix: string): string {
    const ext = this.rnd() < 0.1 ? '.tmp' : this.rnd() < 0.5 ? '.log' : '';
    return `${prefix}${Math.floor(this.rnd() * 1e6).toString(36)}${ext}`;
  }
  private bytes(max: number): Buffer {
    const n = Math.floor(this.rnd() * max);
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.rnd() * 256);
    return b;
  }

  /** Every entry (relative paths), split by type. */
  async list(): Promise<{ files: string[]; dirs: string[]; links: string[] }> {
    const files: string[] = [];
    const dirs: string[] = [];
    const links: string[] = [];
    const walk = async (rel: string) => {
      for (const e of await fsp.readdir(path.join(this.root, rel), { withFileTypes: true }).catch(() => [])) {
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) {
          dirs.push(r);
          await walk(r);
        } else if (e.isSymbolicLink()) links.push(r);
        else files.push(r);
      }
    };
    await walk('');
    return { files, dirs, links };
  }

  /** A starting tree: `nDirs` directories (some nested), `nFiles` small files, a few symlinks. */
  async populate(nDirs: number, nFiles: number): Promise<void> {
    const dirs = [''];
    for (let i = 0; i < nDirs; i++) {
      const parent = this.pick(dirs)!;
      const d = parent ? `${parent}/${this.name('d')}` : this.name('d');
      await fsp.mkdir(path.join(this.root, d), { recursive: true });
      dirs.push(d);
    }
    if (this.rnd() < 0.7) await fsp.mkdir(path.join(this.root, 'cache'), { recursive: true });
    for (let i = 0; i < nFiles; i++) {
      const f = path.join(this.root, this.pick(dirs)!, this.name('f'));
      await fsp.writeFile(f, this.bytes(3000));
    }
    await fsp.writeFile(path.join(this.root, 'cache', 'c.bin'), 'cached').catch(() => undefined);
    for (let i = 0; i < 3; i++)
      await fsp.symlink(this.name('target'), path.join(this.root, this.pick(dirs)!, this.name('l'))).catch(() => undefined);
  }

  /** Apply one random operation; returns the paths a journal must record (relative). */
  async step(): Promise<{ op: string; touched: string[] }> {
    const { files, dirs, links } = await this.list();
    const r = this.rnd();
    const rel = (p: string) => path.join(this.root, p);
    const inDir = () => this.pick(['', ...dirs])!;
    const join = (d: string, n: string) => (d ? `${d}/${n}` : n);
    let touched: string[] = [];
    try {
      if (r < 0.16 || files.length === 0) {
        const f = join(inDir(), this.name('f'));
        touched = [f];
        await fsp.writeFile(rel(f), this.bytes(4000));
        return { op: `create ${f}`, touched: [f] };
      }
      if (r < 0.28) {
        const f = this.pick(files)!;
        touched = [f];
        await fsp.appendFile(rel(f), this.bytes(500));
        return { op: `append ${f}`, touched: [f] };
      }
      if (r < 0.38) {
        const f = this.pick(files)!;
        const st = await fsp.lstat(rel(f));
        // Same size, other bytes.
        const b = this.bytes(st.size + 1).subarray(0, st.size);
        touched = [f];
        await fsp.writeFile(rel(f), b);
        return { op: `overwrite ${f}`, touched: [f] };
      }
      if (r < 0.48) {
        const f = this.pick([...files, ...links])!;
        touched = [f];
        await fsp.rm(rel(f));
        return { op: `delete ${f}`, touched: [f] };
      }
      if (r < 0.58) {
        const f = this.pick(files)!;
        const to = join(inDir(), this.name('r'));
        touched = [f, to];
        await fsp.rename(rel(f), rel(to));
        return { op: `rename ${f} -> ${to}`, touched: [f, to] };
      }
      if (r < 0.66 && dirs.length) {
        const d = this.pick(dirs)!;
        const into = this.pick(['', ...dirs.filter((x) => x !== d && !x.startsWith(`${d}/`))])!;
        const to = join(into, this.name('m'));
        touched = [d, to];
        await fsp.rename(rel(d), rel(to));
        return { op: `move dir ${d} -> ${to}`, touched: [d, to] };
      }
      if (r < 0.72) {
        const top = join(inDir(), this.name('n'));
        const deep = `${top}/${this.name('a')}/${this.name('b')}`;
        touched = [top];
        await fsp.mkdir(rel(deep), { recursive: true });
        await fsp.writeFile(rel(`${deep}/${this.name('f')}`), this.bytes(2000));
        await fsp.writeFile(rel(`${top}/${this.name('f')}`), this.bytes(100));
        return { op: `deep new ${deep}`, touched: [top] };
      }
      if (r < 0.78) {
        const l = join(inDir(), this.name('l'));
        const target = this.rnd() < 0.5 ? (this.pick(files) ?? 'x') : `../${this.name('t')}`;
        touched = [l];
        await fsp.symlink(target, rel(l));
        return { op: `symlink ${l} -> ${target}`, touched: [l] };
      }
      if (r < 0.83 && links.length) {
        const l = this.pick(links)!;
        touched = [l];
        await fsp.rm(rel(l));
        await fsp.symlink(this.name('retarget'), rel(l));
        return { op: `retarget ${l}`, touched: [l] };
      }
      if (r < 0.88) {
        const f = this.pick(files)!;
        touched = [f];
        await fsp.chmod(rel(f), this.rnd() < 0.5 ? 0o600 : 0o755);
        return { op: `chmod ${f}`, touched: [f] };
      }
      if (r < 0.91 && dirs.length) {
        const d = this.pick(dirs)!;
        touched = [d];
        await fsp.chmod(rel(d), this.rnd() < 0.5 ? 0o700 : 0o755);
        return { op: `chmod dir ${d}`, touched: [d] };
      }
      if (r < 0.94 && dirs.length) {
        const d = this.pick(dirs)!;
        touched = [d];
        await fsp.rm(rel(d), { recursive: true });
        return { op: `rm -r ${d}`, touched: [d] };
      }
      if (r < 0.97 && dirs.length) {
        // A directory replaced by a file of the same name, or a file by a directory.
        const d = this.pick(dirs)!;
        touched = [d];
        await fsp.rm(rel(d), { recursive: true });
        await fsp.writeFile(rel(d), this.bytes(300));
        return { op: `dir->file ${d}`, touched: [d] };
      }
      const f = this.pick(files)!;
      touched = [f];
      await fsp.rm(rel(f));
      await fsp.mkdir(rel(f));
      await fsp.writeFile(rel(`${f}/inner`), this.bytes(200));
      return { op: `file->dir ${f}`, touched: [f] };
    } catch (err) {
      // A race with a concurrent mutator (or a name taken): nothing changed that matters.
      if (!(await exists(this.root))) throw err;
      return { op: `failed part-way (${(err as NodeJS.ErrnoException).code ?? 'error'})`, touched };
    }
  }
}
