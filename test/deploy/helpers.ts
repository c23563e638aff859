// Shared by the deploy tests: bundle into a temp dir, run deploy/install.sh into a scratch
// root, and describe a tree (path -> mode and content hash) to compare runs.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';

export const repo = path.resolve(import.meta.dirname, '../..');
export const INSTALL = path.join(repo, 'deploy/install.sh');

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

export function sh(argv: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Ran {
  const r = spawnSync(argv[0], argv.slice(1), { cwd: opts.cwd, env: { ...process.env, ...opts.env }, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? 128, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/**
 * A bundle of today's tree in DIR, as `node scripts/bundle.mjs --outdir DIR` makes it: a copy
 * of the run's shared bundle (test/helpers/bundle-setup.ts, built once per run) when there is
 * one, else bundled here. Throws with the bundler's output when it fails.
 */
export async function bundleInto(dir: string): Promise<string> {
  const { inject } = await import('vitest');
  const shared = inject('sharedBundle');
  if (shared) {
    const status = path.join(shared, 'status');
    for (const end = Date.now() + 600_000; !existsSync(status);) {
      if (Date.now() > end) throw new Error("the run's shared bundle was not made within 10 min");
      await new Promise((r) => setTimeout(r, 200));
    }
    const s = readFileSync(status, 'utf8');
    if (s !== 'ok') throw new Error(s);
    const cp = sh(['cp', '-a', path.join(shared, 'bundle'), dir]); // modes and times as bundle.mjs left them
    if (cp.code !== 0) throw new Error(`copying the shared bundle failed: ${cp.stderr}`);
    return dir;
  }
  const r = sh([process.execPath, path.join(repo, 'scripts/bundle.mjs'), '--outdir', dir]);
  if (r.code !== 0) throw new Error(`npm run bundle failed (${r.code}): ${r.stderr}${r.stdout}`);
  return dir;
}

/** deploy/install.sh ARGS --bundle BUNDLE --prefix ROOT (DESTDIR unset unless given). */
export function install(root: string | undefined, bundle: string, args: string[], env: NodeJS.ProcessEnv = {}): Ran {
  const argv = ['bash', INSTALL, ...args, '--bundle', bundle, ...(root ? ['--prefix', root] : [])];
  return sh(argv, { env: { DESTDIR: '', ...env } });
}

/** rel path -> "mode sha256" (files), "mode -> target" (links), "mode dir" (directories). */
export function tree(root: string, skip: (rel: string) => boolean = () => false): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name);
      const rel = path.relative(root, p);
      if (skip(rel)) continue;
      const st = lstatSync(p);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        out[rel] = `${mode} dir`;
        walk(p);
      } else if (st.isSymbolicLink()) out[rel] = `${mode} -> ${readlinkSync(p)}`;
      else out[rel] = `${mode} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
    }
  };
  walk(root);
  return out;
}

export function modeOf(p: string): string {
  return (lstatSync(p).mode & 0o7777).toString(8);
}

/** Is systemd-analyze here? (The unit tests need it; systemd itself need not run.) */
export const haveSystemdAnalyze = sh(['sh', '-c', 'command -v systemd-analyze']).code === 0;
