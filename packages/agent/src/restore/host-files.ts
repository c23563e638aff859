/**
 * Step HOST_FILES (CircleCI's hand edit of /etc/default/replicated*, /etc/sysconfig/*):
 * in ONLY the plan's hostFiles, replace the source box's hostname and addresses recorded
 * in the manifest with this box's: source addresses[i] -> target addresses[i] (the first
 * target address when this box has fewer). One pass over each file with whole-token
 * matches, so 10.0.0.1 never matches inside 10.0.0.11 and swapped values do not chain.
 * The file before the rewrite is kept (hard link) for rollback; the rewrite is atomic.
 * For --dry-run the same rewrite is computed against what the file will hold after the
 * swap, and shown as a unified diff against the file on disk now.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, writeFileAtomic, type Manifest } from '@boxback/common';
import type { AgentConfig } from '../config.js';
import type { JobContext } from '../job.js';
import type { Plan } from '../plan.js';
import { saveRecord, sibling, type RestoreRecord } from './record.js';
import { keepFileCopy } from './swap.js';

export interface Replacement {
  from: string;
  to: string;
}

export function replacements(manifest: Manifest, config: AgentConfig): { list: Replacement[]; warnings: string[] } {
  const list: Replacement[] = [];
  const warnings: string[] = [];
  const src = manifest.source ?? { hostname: '', addresses: [] };
  if (src.hostname && config.hostname && src.hostname !== config.hostname) list.push({ from: src.hostname, to: config.hostname });
  (src.addresses ?? []).forEach((a, i) => {
    const to = config.addresses[i] ?? config.addresses[0];
    if (!to) {
      warnings.push(`this box has no address to put in place of ${a}; host files keep it`);
      return;
    }
    if (a && a !== to && !list.some((r) => r.from === a)) list.push({ from: a, to });
  });
  return { list, warnings };
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Replace whole tokens only: not inside a longer name, number or address. */
export function rewrite(text: string, list: Replacement[]): { text: string; count: number } {
  if (list.length === 0) return { text, count: 0 };
  const byFrom = new Map(list.map((r) => [r.from, r.to]));
  const alts = [...byFrom.keys()]
    .sort((a, b) => b.length - a.length)
    .map((v) =>
      v.includes(':') ? `(?<![0-9A-Fa-f:])${escape(v)}(?![0-9A-Fa-f:])` : `(?<![A-Za-z0-9_.-])${escape(v)}(?![A-Za-z0-9_-])(?!\\.[0-9])`,
    );
  const re = new RegExp(alts.join('|'), 'g');
  let count = 0;
  const out = text.replace(re, (m) => {
    count++;
    return byFrom.get(m) ?? m;
  });
  return { text: out, count };
}

function globToRe(seg: string): RegExp {
  return new RegExp(
    `^${seg
      .split('*')
      .map((p) => p.split('?').map(escape).join('[^/]'))
      .join('[^/]*')}$`,
  );
}

/** Expand the plan's hostFiles (paths, and globs with * and ? in any segment) to existing regular files. */
export async function hostFilePaths(plan: Plan): Promise<string[]> {
  const out = new Set<string>();
  for (const h of plan.hostFiles) {
    if (h.path) {
      out.add(path.resolve(h.path));
      continue;
    }
    const segs = path.resolve(h.glob!).split('/').filter(Boolean);
    let cur = ['/'];
    for (const seg of segs) {
      const next: string[] = [];
      for (const dir of cur) {
        if (!/[*?]/.test(seg)) {
          next.push(path.join(dir, seg));
          continue;
        }
        const re = globToRe(seg);
        try {
          for (const n of await fsp.readdir(dir)) if (re.test(n) && !n.includes('.boxback-')) next.push(path.join(dir, n));
        } catch {
          /* no such directory: no match */
        }
      }
      cur = next;
    }
    for (const p of cur) out.add(p);
  }
  const files: string[] = [];
  for (const p of [...out].sort()) {
    try {
      if ((await fsp.lstat(p)).isFile()) files.push(p);
    } catch {
      /* listed but absent on this box */
    }
  }
  return files;
}

export interface HostFileChange {
  path: string;
  count: number;
}

/** Rewrite the host files in place, keeping each old one for rollback. */
export async function rewriteHostFiles(
  ctx: JobContext,
  rec: RestoreRecord,
  manifest: Manifest,
): Promise<{ changes: HostFileChange[]; warnings: string[] }> {
  const { list, warnings } = replacements(manifest, ctx.config);
  const files = await hostFilePaths(ctx.config.plan);
  ctx.emit({
    phase: 'HOST_FILES',
    state: 'started',
    filesTotal: files.length,
    message: list.map((r) => `${r.from} -> ${r.to}`).join(', '),
  });
  const changes: HostFileChange[] = [];
  let done = 0;
  for (const file of files) {
    const before = await fsp.readFile(file, 'utf8');
    const r = rewrite(before, list);
    if (r.count > 0) {
      const st = await fsp.stat(file);
      const safety = sibling.hostSafety(file, ctx.jobId);
      rec.moves.push({ kind: 'hostfile', target: file, safety, state: 'planned' });
      await saveRecord(ctx.config.stateDir, rec);
      await keepFileCopy(file, safety);
      await writeFileAtomic(file, r.text, st.mode & 0o777);
      await fsp.chown(file, st.uid, st.gid);
      rec.moves[rec.moves.length - 1].state = 'done';
      await saveRecord(ctx.config.stateDir, rec);
      changes.push({ path: file, count: r.count });
      ctx.log.info({ file, replacements: r.count }, 'host file rewritten');
    }
    done++;
    ctx.emit({ phase: 'HOST_FILES', filesDone: done, filesTotal: files.length, message: file });
  }
  ctx.emit({ phase: 'HOST_FILES', state: 'done', filesDone: done, filesTotal: files.length });
  return { changes, warnings };
}

/** A unified diff (3 lines of context) of two texts, '' when they are equal. */
export function unifiedDiff(a: string, b: string, nameA: string, nameB: string): string {
  if (a === b) return '';
  const lines = (t: string) => (t.endsWith('\n') ? t.slice(0, -1) : t).split('\n');
  const x = a === '' ? [] : lines(a);
  const y = b === '' ? [] : lines(b);
  if (x.length * y.length > 4_000_000) return `--- ${nameA}\n+++ ${nameB}\n(files too large to diff)\n`;
  // LCS table from the end.
  const n = x.length;
  const m = y.length;
  const L: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const ops: Array<{ t: ' ' | '-' | '+'; s: string; i: number; j: number }> = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) ops.push({ t: ' ', s: x[i], i: i++, j: j++ });
    else if (i < n && (j >= m || L[i + 1][j] >= L[i][j + 1])) ops.push({ t: '-', s: x[i], i: i++, j });
    else ops.push({ t: '+', s: y[j], i, j: j++ });
  }
  const out = [`--- ${nameA}`, `+++ ${nameB}`];
  const C = 3;
  let k = 0;
  while (k < ops.length) {
    if (ops[k].t === ' ') {
      k++;
      continue;
    }
    const start = Math.max(0, k - C);
    let end = k;
    // Extend the hunk while changes are within 2*C lines of each other.
    for (;;) {
      while (end < ops.length && ops[end].t !== ' ') end++;
      let next = end;
      while (next < ops.length && ops[next].t === ' ') next++;
      if (next < ops.length && next - end <= 2 * C) end = next;
      else break;
    }
    const stop = Math.min(ops.length, end + C);
    const hunk = ops.slice(start, stop);
    const aLen = hunk.filter((o) => o.t !== '+').length;
    const bLen = hunk.filter((o) => o.t !== '-').length;
    // diff -u names the line before an empty range.
    const aStart = hunk[0].i + (aLen ? 1 : 0);
    const bStart = hunk[0].j + (bLen ? 1 : 0);
    out.push(`@@ -${aStart},${aLen} +${bStart},${bLen} @@`);
    for (const o of hunk) out.push(`${o.t}${o.s}`);
    k = stop;
  }
  return `${out.join('\n')}\n`;
}

export async function readIfFile(p: string): Promise<string | undefined> {
  try {
    return await fsp.readFile(p, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new BoxbackError('BOXBACK_ERR_RESTORE_FAILED', `cannot read host file ${p}: ${(err as Error).message}`);
  }
}
