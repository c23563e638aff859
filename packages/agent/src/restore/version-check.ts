/**
 * Step VERSION_CHECK: GoCD's rule, "you cannot restore from a backup whose version is
 * bigger than the version of the server being used". The backup's version comes from its
 * version.txt (GoCD's own file) or else the manifest; the installed one as the plan says.
 * A newer backup is refused unless forced; forcing logs a loud warning and puts one in
 * the result. When either version is unknown, the restore goes on with a warning.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError, type Manifest } from '@boxback/common';
import type { JobContext } from '../job.js';
import { compareVersions, readInstalledVersion } from '../product-version.js';

export interface VersionCheck {
  backup: string | null;
  installed: string | null;
  verdict: 'same-or-older' | 'newer-forced' | 'unknown';
  warnings: string[];
}

export async function backupVersion(backupDir: string, manifest: Manifest): Promise<string | null> {
  try {
    const text = (await fsp.readFile(path.join(backupDir, 'version.txt'), 'utf8')).trim();
    if (text) return text;
  } catch {
    /* no version.txt: fall back on the manifest */
  }
  return manifest.product?.version ?? null;
}

export async function checkVersion(ctx: JobContext, backupDir: string, manifest: Manifest, force: boolean): Promise<VersionCheck> {
  ctx.emit({ phase: 'VERSION_CHECK', state: 'started' });
  const backup = await backupVersion(backupDir, manifest);
  const installed = await readInstalledVersion(ctx.config.plan);
  const warnings: string[] = [];
  let verdict: VersionCheck['verdict'] = 'same-or-older';
  if (!backup || !installed) {
    verdict = 'unknown';
    warnings.push(`version check skipped: ${!backup ? 'the backup has no version' : 'the installed version could not be read'}`);
  } else if (compareVersions(backup, installed) > 0) {
    if (!force) {
      throw new BoxbackError(
        'BOXBACK_ERR_VERSION_NEWER',
        `backup ${manifest.id} is from ${manifest.product?.name ?? 'the product'} ${backup}, newer than the installed ${installed}; upgrade first, or pass --force to restore anyway`,
        { backup, installed },
      );
    }
    verdict = 'newer-forced';
    const msg = `FORCED: restoring a backup from version ${backup} onto older installed version ${installed}; the product may not start or may corrupt its data`;
    ctx.log.warn({ backup, installed }, msg);
    warnings.push(msg);
  }
  ctx.emit({ phase: 'VERSION_CHECK', state: 'done', message: `backup ${backup ?? '?'}, installed ${installed ?? '?'}` });
  return { backup, installed, verdict, warnings };
}
