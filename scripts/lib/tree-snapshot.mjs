// What a person compares after a restore: every file under a root, by path, with its
// permission bits and SHA-256 (symlinks by their target). Two equal snapshots mean the
// same bytes in the same places.
import { createHash } from 'node:crypto';
import { lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';

/**
 * @param {string} root
 * @param {(rel: string) => boolean} [skip] paths (relative to root) to leave out, with everything below them
 * @returns {Record<string, string>} relative path -> "mode sha256" or "-> target"
 */
export function snapshotTree(root, skip = () => false) {
  const out = {};
  const walk = (d) => {
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name);
      const rel = path.relative(root, p);
      if (skip(rel)) continue;
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isSymbolicLink()) out[rel] = `-> ${readlinkSync(p)}`;
      else out[rel] = `${(st.mode & 0o777).toString(8)} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
    }
  };
  walk(root);
  return out;
}

/** Paths whose entries differ between two snapshots, sorted. */
export function diffSnapshots(a, b) {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) => a[k] !== b[k]).sort();
}

/** The parts of a sample box that legitimately change on their own or are boxback's own. */
export function liveParts(box) {
  const dbRel = path.relative(box.root, box.dbFile);
  // A real H2 owns its whole directory (its lock and trace files come and go).
  const h2Dir = box.h2 ? `${path.relative(box.root, path.dirname(box.dbFile))}/` : null;
  const standin = box.standinDb ? path.relative(box.root, box.standinDb) : dbRel;
  return (rel) =>
    rel === dbRel ||
    rel === standin ||
    (h2Dir !== null && (rel.startsWith(h2Dir) || `${rel}/` === h2Dir)) ||
    rel.startsWith('run') ||
    rel.startsWith('var/log') ||
    rel === 'plan.yaml' ||
    rel.includes('.boxback-safety-');
}
