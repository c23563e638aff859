/**
 * The --dry-run report: the ordered list of the steps a restore would take on this box,
 * with what each would touch, and the unified diff of every host file (what it holds now
 * against what it would hold after the swap and the rewrite). Reads only.
 */
import { readSmallEntry, type Manifest } from '@boxback/common';
import { driverOf } from '../datasets/registry.js';
import type { JobContext } from '../job.js';
import { droppedBitsWarning, entriesDroppingBits } from './extract.js';
import { hostFilePaths, readIfFile, replacements, rewrite, unifiedDiff } from './host-files.js';
import type { RestoreTargets } from './targets.js';
import type { VerifySummary } from './verify.js';
import type { VersionCheck } from './version-check.js';

const mib = (n: number) => (n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);

export async function dryRunReport(
  ctx: JobContext,
  manifest: Manifest,
  targets: RestoreTargets,
  verified: VerifySummary,
  version: VersionCheck,
  force = false,
): Promise<string> {
  const plan = ctx.config.plan;
  const { list, warnings } = replacements(manifest, ctx.config);
  const lines: string[] = [];
  lines.push(
    `Restore of ${manifest.id} onto ${ctx.config.name} (${ctx.config.hostname}, ${ctx.config.addresses.join(', ') || 'no addresses'}) - DRY RUN, nothing changed`,
  );
  const steps: string[] = [];
  steps.push(
    `VERIFY         ok: ${verified.files} files, ${mib(verified.bytes)} checked against the manifest; ${verified.zipEntries} zip entries${verified.crcChecked ? ' CRC-checked' : ''}`,
  );
  steps.push(`VERSION_CHECK  backup ${version.backup ?? '?'}, installed ${version.installed ?? '?'}: ${version.verdict}`);
  for (const d of targets.datasets) {
    const where = d.kind === 'dir' ? d.target : [...d.files.values()].join(', ');
    steps.push(`EXTRACT        ${d.archive} (${d.entries} entries, ${mib(d.bytes)}) -> staging beside ${where}`);
  }
  for (const t of targets.trees)
    steps.push(`SYNC_TREES     rsync -a ${t.dir}/ (${t.files} files, ${mib(t.bytes)}) -> staging beside ${t.target}`);
  for (const d of targets.datasets) if (d.owner) steps.push(`CHOWN          ${d.name}: chown -R ${d.owner.user}:${d.owner.group}`);
  for (const t of targets.trees) if (t.owner) steps.push(`CHOWN          ${t.name}: chown -R ${t.owner.user}:${t.owner.group}`);
  steps.push(`STOP           ${plan.services.map((s) => s.name).join(', ') || '(no services)'}, and check they are dead`);
  for (const d of targets.datasets) {
    if (d.kind === 'dir') steps.push(`SWAP           ${d.target} (current kept as ${d.target}.boxback-safety-${ctx.jobId})`);
    else for (const f of d.files.values()) steps.push(`SWAP           ${f} (current kept as ${f}.boxback-safety-${ctx.jobId})`);
  }
  for (const t of targets.trees) steps.push(`SWAP           ${t.target} (current kept as ${t.target}.boxback-safety-${ctx.jobId})`);
  const dbWarnings: string[] = [];
  const env = { config: ctx.config, jobId: ctx.jobId, signal: ctx.signal, log: ctx.log, force, emit: () => undefined };
  let databases = 0;
  for (const part of targets.parts) {
    const dryRun = driverOf(part).dryRun;
    if (!dryRun) continue;
    const d = await dryRun(part, plan.datasets[part.index], env);
    steps.push(...d.steps);
    dbWarnings.push(...d.warnings);
    databases++;
  }
  const hostFiles = await hostFilePaths(plan);
  steps.push(
    `HOST_FILES     ${list.map((r) => `${r.from} -> ${r.to}`).join(', ') || 'nothing to replace'} in ${hostFiles.join(', ') || '(no host files)'}`,
  );
  if (plan.restore.cleanup.length === 0) steps.push('CLEANUP        (the plan has no clean-up steps)');
  for (const c of plan.restore.cleanup)
    steps.push(`CLEANUP        ${c.name}: ${c.remove ? `remove ${c.remove.join(', ')}` : c.command!.join(' ')} (onError: ${c.onError})`);
  steps.push(`START          ${plan.services.map((s) => s.name).join(', ') || '(no services)'}`);
  steps.push(
    `HEALTH_CHECK   ${plan.health ? `${plan.health.http?.url ?? plan.health.command!.join(' ')} within ${plan.health.timeoutSeconds}s` : '(the plan has none)'}`,
  );
  steps.push(
    `ROLLBACK       if any step from STOP on fails: safety copies back${databases ? ', safety databases renamed back' : ''}, host files back, services started`,
  );
  steps.forEach((s, i) => lines.push(`${String(i + 1).padStart(3)}. ${s}`));
  const modeWarnings: string[] = [];
  for (const d of targets.datasets) {
    const names = await entriesDroppingBits(d);
    if (names.length) modeWarnings.push(droppedBitsWarning(d.archive, names));
  }
  for (const w of [...targets.warnings, ...modeWarnings, ...version.warnings, ...dbWarnings, ...warnings]) lines.push(`warning: ${w}`);

  lines.push('', 'Host files:');
  for (const file of hostFiles) {
    const now = (await readIfFile(file)) ?? '';
    let afterSwap = now;
    for (const d of targets.datasets) {
      if (d.kind !== 'files') continue;
      for (const [base, target] of d.files) {
        if (target !== file) continue;
        const a = await d.openArchive();
        const buf = await readSmallEntry(a.src, base, undefined, d.archive).finally(() => a.close());
        if (buf) afterSwap = buf.toString('utf8');
      }
    }
    const after = rewrite(afterSwap, list).text;
    const diff = unifiedDiff(now, after, `${file} (now)`, `${file} (after restore)`);
    lines.push(diff ? diff.trimEnd() : `${file}: unchanged`);
  }
  return `${lines.join('\n')}\n`;
}
