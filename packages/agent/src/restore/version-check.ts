/**
 * Step VERSION_CHECK: GoCD's rule, "you cannot restore from a backup whose version is
 * bigger than the version of the server being used". The backup's version comes from its
 * version.txt (GoCD's own file) or else the manifest; the installed one as the plan says.
 * A newer backup is refused unless forced; forcing logs a loud warning and puts one in
 * the result. When either version is unknown, the restore goes on with a warning.
 */
import { BoxbackError, type BackupRef, type BackupStore, type Manifest } from '@boxback/common';
import type { JobContext } from '../job.js';
import { compareVersions, readInstalledVersion } from '../product-version.js';

export interface VersionCheck {
  backup: string | null;
  installed: string | null;
  verdict: 'same-or-older' | 'newer-forced' | 'unknown';
  warnings: string[];
}

/** The backup's version.txt (read through the store, at most 4 KiB), else the manifest's product version. */
export async function backupVersion(store: BackupStore, ref: BackupRef, manifest: Manifest): Promise<string | null> {
  try {
    const chunks: Buffer[] = [];
    for await (const c of await store.openFile(ref, 'version.txt', { start: 0, end: 4095 })) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8').trim();
    if (text) return text;
  } catch {
    /* no version.txt: fall back on the manifest */
  }
  return manifest.product?.version ?? null;
}

export async function checkVersion(
  ctx: JobContext,
  store: BackupStore,
  ref: BackupRef,
  manifest: Manifest,
  force: boolean,
): Promise<VersionCheck> {
  ctx.emit({ phase: 'VERSION_CHECK', state: 'started' });
  const backup = await backupVersion(store, ref, manifest);
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
