/**
 * Build a valid boxback backup directory from a plan's paths with the real tools, the way
 * the backup side lays it out: Info-ZIP `zip -r -y` run inside each dataset directory (its
 * content is the zip's top level), `zip -j` for a files: dataset (entries are base names),
 * `rsync -a` for the trees, version.txt, and a manifest.json computed over the result.
 * `writeManifest` recomputes the manifest after a test tampers with or crafts an archive.
 * Also: a box snapshot (path -> mode, owner, SHA-256 / link target) for before/after checks.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { MANIFEST_FORMAT, backupRelPath, type Manifest, type ManifestFile } from '@boxback/common';
import type { Plan } from '../../packages/agent/src/plan.js';

export interface MakeBackupOptions {
  plan: Plan;
  store: string;
  host: string;
  timestamp?: string;
  hostname: string;
  addresses: string[];
  /** version.txt content (default: the plan's installed version file). */
  version?: string;
  /** Leave out manifest.json (a GoCD-made directory). */
  noManifest?: boolean;
}

export interface MadeBackup {
  dir: string;
  rel: string;
  id: string;
  manifest: Manifest;
}

function walk(root: string, rel = '', out: string[] = []): string[] {
  for (const name of readdirSync(path.join(root, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    out.push(r);
    if (lstatSync(path.join(root, r)).isDirectory()) walk(root, r, out);
  }
  return out;
}

function countTree(dir: string): { entries: number; files: number; bytes: number } {
  let entries = 0;
  let files = 0;
  let bytes = 0;
  for (const r of walk(dir)) {
    const st = lstatSync(path.join(dir, r));
    entries++;
    if (st.isFile()) {
      files++;
      bytes += st.size;
    }
  }
  return { entries, files, bytes };
}

const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

export function writeManifest(dir: string, base: Omit<Manifest, 'files' | 'totals'>): Manifest {
  const files: ManifestFile[] = [];
  for (const r of walk(dir)) {
    if (r === 'manifest.json') continue;
    const p = path.join(dir, r);
    const st = lstatSync(p);
    const f: ManifestFile = {
      path: r,
      type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file',
      size: st.isFile() ? st.size : 0,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      mtimeMs: st.mtimeMs,
    };
    if (st.isFile()) f.sha256 = sha(p);
    if (st.isSymbolicLink()) f.target = readlinkSync(p);
    files.push(f);
  }
  const m: Manifest = {
    ...base,
    files,
    totals: { files: files.filter((f) => f.type === 'file').length, bytes: files.reduce((s, f) => s + f.size, 0) },
  };
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m, null, 2));
  return m;
}

export function makeBackup(o: MakeBackupOptions): MadeBackup {
  const ts = o.timestamp ?? '20261121-120000';
  const rel = backupRelPath(o.host, ts);
  const dir = path.join(o.store, rel);
  mkdirSync(dir, { recursive: true });
  const datasets: Manifest['datasets'] = [];
  for (const d of o.plan.datasets) {
    const out = path.join(dir, d.archive);
    if (d.path) {
      execFileSync('zip', ['-q', '-r', '-y', out, '.'], { cwd: d.path });
      const c = countTree(d.path);
      datasets.push({
        name: d.name,
        archive: d.archive,
        kind: 'zip',
        sources: [d.path],
        target: d.path,
        owner: d.owner,
        entries: c.entries,
        bytes: c.bytes,
      });
    } else {
      execFileSync('zip', ['-q', '-j', '-y', out, ...d.files!]);
      const bytes = d.files!.reduce((s, f) => s + lstatSync(f).size, 0);
      datasets.push({
        name: d.name,
        archive: d.archive,
        kind: 'zip',
        sources: d.files!,
        target: '',
        owner: d.owner,
        entries: d.files!.length,
        bytes,
      });
    }
  }
  const trees: Manifest['trees'] = [];
  for (const t of o.plan.trees) {
    const tdir = t.dir ?? t.name;
    execFileSync('rsync', ['-a', `${t.source}/`, `${path.join(dir, tdir)}/`]);
    const c = countTree(path.join(dir, tdir));
    trees.push({
      name: t.name,
      dir: tdir,
      source: t.source,
      owner: t.owner,
      files: c.files,
      bytes: c.bytes,
      linkedFiles: 0,
      syncMode: 'full',
    });
  }
  const version = o.version ?? (o.plan.version?.file ? readFileSync(o.plan.version.file, 'utf8') : '1.0.0');
  writeFileSync(path.join(dir, 'version.txt'), version);
  const now = new Date().toISOString();
  const base: Omit<Manifest, 'files' | 'totals'> = {
    format: MANIFEST_FORMAT,
    id: `${o.host}@${ts}`,
    host: o.host,
    timestamp: ts,
    createdAt: now,
    completedAt: now,
    origin: 'boxback',
    agentVersion: 'test',
    plan: { name: o.plan.name, product: o.plan.product },
    product: { name: o.plan.product, version },
    source: { hostname: o.hostname, addresses: o.addresses },
    consistency: 'quiesced',
    quiesce: { mode: 'stop', windowMs: 0 },
    phases: [],
    datasets,
    trees,
    warnings: [],
  };
  const manifest = o.noManifest ? ({ ...base, files: [], totals: { files: 0, bytes: 0 } } as Manifest) : writeManifest(dir, base);
  return { dir, rel, id: base.id, manifest };
}

/** path -> "type mode uid:gid sha|target" for every entry under root (minus `skip`). */
export function snapshot(root: string, skip: (rel: string) => boolean = () => false): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (rel: string) => {
    const p = rel ? path.join(root, rel) : root;
    let names: string[];
    try {
      names = readdirSync(p).sort();
    } catch {
      return;
    }
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      if (skip(r)) continue;
      const q = path.join(root, r);
      const st = lstatSync(q);
      const meta = `${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
      if (st.isDirectory()) {
        out[r] = `dir ${meta}`;
        visit(r);
      } else if (st.isSymbolicLink()) out[r] = `link ${readlinkSync(q)}`;
      else out[r] = `file ${meta} ${sha(q)}`;
    }
  };
  visit('');
  return out;
}
