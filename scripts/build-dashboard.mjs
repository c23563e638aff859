// The dashboard's assets: packages/controller/dashboard/app.ts (with uPlot and its CSS) ->
// packages/controller/dist/assets/app.js + app.css, one ESM file and one stylesheet that the
// controller serves itself (no CDN). Part of `npm run build`; scripts/bundle.mjs calls
// buildDashboard() for dist-bundle/assets. Type-checks the page script first (DOM types).
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export async function buildDashboard(outdir = path.join(repo, 'packages/controller/dist/assets')) {
  await esbuild.build({
    entryPoints: { app: path.join(repo, 'packages/controller/dashboard/app.ts') },
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome110', 'firefox115', 'safari16'],
    minify: true,
    outdir,
    logLevel: 'warning',
    legalComments: 'eof',
  });
  return outdir;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  execFileSync(
    process.execPath,
    [path.join(repo, 'node_modules/typescript/bin/tsc'), '-p', path.join(repo, 'packages/controller/dashboard')],
    {
      stdio: 'inherit',
    },
  );
  console.log(`dashboard assets in ${path.relative(repo, await buildDashboard())}`);
}
