// Safe extraction: crafted archives (checksummed into a valid manifest, so only the
// extract step can catch them) are refused before the swap, and the box is untouched.
// Also a GoCD-made backup directory (no boxback extras) restored by archive name.
import { execFileSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runRestore } from '../../packages/agent/src/restore/restore.js';
import { craftZip, S, type CraftEntry } from '../helpers/craft-zip.js';
import { makeBackup, snapshot, writeManifest, type MadeBackup } from '../helpers/make-backup.js';
import { job, restoreBox, restoreReq, type RestoreBox } from '../helpers/restore-box.js';

let dir: string;
let store: string;
let b: RestoreBox;
let base: MadeBackup;
let n = 0;

/** A copy of the base backup with one archive replaced by a crafted one. */
function withArchive(archive: string, entries: CraftEntry[]): MadeBackup {
  const ts = `20261121-15${String(n++).padStart(2, '0')}00`;
  const rel = `gocd4/backup_${ts}`;
  const to = path.join(store, rel);
  execFileSync('cp', ['-a', base.dir, to]);
  craftZip(path.join(to, archive), entries);
  const m = writeManifest(to, { ...base.manifest, id: `gocd4@${ts}`, timestamp: ts });
  return { dir: to, rel, id: m.id, manifest: m };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-unsafe-'));
  store = path.join(dir, 'store');
  b = await restoreBox({
    root: path.join(dir, 'box'),
    name: 'gocd4',
    store,
    stateDir: path.join(dir, 'state'),
    seed: 4,
    artifacts: 5,
    testReports: 2,
  });
  base = makeBackup({ plan: b.config.plan, store, host: 'gocd4', hostname: b.box.hostname, addresses: [b.box.address] });
});

afterAll(async () => {
  await b?.box.stop().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const file = (name: string, data = 'x', mode = S.file | 0o644): CraftEntry => ({ name, data, mode });
const link = (name: string, target: string): CraftEntry => ({ name, data: target, mode: S.link | 0o777 });

const cases: Array<[string, string, CraftEntry[], RegExp]> = [
  ['an absolute path', 'plugins.zip', [file('ok.jar'), file('/tmp/boxback-evil')], /absolute path/],
  ['a ../ path', 'plugins.zip', [file('a/../../boxback-evil')], /climbs out/],
  ['a backslash path', 'plugins.zip', [file('..\\..\\boxback-evil')], /backslash/],
  ['a symlink pointing outside (absolute)', 'plugins.zip', [link('etc', '/etc')], /outside/],
  ['a symlink pointing outside (relative)', 'plugins.zip', [file('sub/x'), link('sub/up', '../../..')], /outside/],
  ['an entry written through a symlink', 'plugins.zip', [link('etc', '/etc'), file('etc/boxback-evil')], /through the symlink/],
  [
    'an entry written through an inside symlink',
    'plugins.zip',
    [file('real/x'), link('alias', 'real'), file('alias/y')],
    /through the symlink/,
  ],
  [
    'a symlink through another symlink',
    'plugins.zip',
    [file('top/x'), link('top/s', '..'), link('l', 'top/s/..')],
    /through another symlink/,
  ],
  ['a character device', 'plugins.zip', [{ name: 'null', mode: S.chr | 0o666 }], /device/],
  ['a fifo', 'plugins.zip', [{ name: 'pipe', mode: S.fifo | 0o644 }], /fifo/],
  ['a duplicate entry', 'plugins.zip', [file('a.jar', 'one'), file('a.jar', 'two')], /duplicate/],
  ['a path in a files dataset', 'env-files.zip', [file('sub/go-server')], /plain file name/],
  ['a symlink in a files dataset', 'env-files.zip', [link('go-server', '/etc/shadow')], /regular files only/],
];

describe('crafted archives are refused before the swap', () => {
  it.each(cases)('%s', async (_what, archive, entries, why) => {
    const bk = withArchive(archive, entries);
    const before = snapshot(b.box.root);
    const r = await runRestore(job(b.config, `r-unsafe-${n}`).ctx, restoreReq(bk.rel));
    expect(r.status).toBe('Failed');
    expect(r.errorCode).toBe('BOXBACK_ERR_UNSAFE_ARCHIVE');
    expect(r.failedStep).toBe('EXTRACT');
    expect(r.errorMessage).toMatch(why);
    expect(r.errorMessage).toContain(archive);
    expect(snapshot(b.box.root)).toEqual(before);
    expect(readdirSync('/tmp').filter((x) => x.startsWith('boxback-evil'))).toEqual([]);
  });
});

describe('damaged archives', () => {
  it('an entry whose CRC-32 does not match is refused at extraction, before the swap', async () => {
    // A zip written wrong at backup time: the manifest's SHA-256 matches it, its CRC does not.
    const bk = withArchive('plugins.zip', [file('good.jar', 'good'), file('bad.jar', 'some bytes')]);
    const zip = path.join(bk.dir, 'plugins.zip');
    const buf = readFileSync(zip);
    const at = buf.indexOf('some bytes');
    buf[at] ^= 0x20;
    writeFileSync(zip, buf);
    writeManifest(bk.dir, bk.manifest);
    const before = snapshot(b.box.root);
    const r = await runRestore(job(b.config, 'r-crc').ctx, restoreReq(bk.rel));
    expect(r.status).toBe('Failed');
    expect(r.errorCode).toBe('BOXBACK_ERR_VERIFY_FAILED');
    expect(r.failedStep).toBe('EXTRACT');
    expect(r.errorMessage).toMatch(/bad\.jar: CRC-32 mismatch/);
    expect(snapshot(b.box.root)).toEqual(before);
  });
});

describe('mode bits', () => {
  it('drops setuid/setgid/sticky from files with a warning naming them (dry run too); directories keep setgid and sticky', async () => {
    const bk = withArchive('plugins.zip', [
      file('bin/tool', '#!/bin/sh\n', S.file | 0o4755),
      file('bin/group-tool', 'g', S.file | 0o2750),
      { name: 'shared/', mode: S.dir | 0o1777 },
      { name: 'team/', mode: S.dir | 0o2775 },
      file('plain.jar', 'j', S.file | 0o640),
      link('current', 'plain.jar'),
    ]);
    const warning =
      /plugins\.zip: setuid\/setgid\/sticky bits dropped from 2 entries \(a restore never puts them on files; directories keep setgid and sticky\): bin\/tool, bin\/group-tool/;
    const dry = await runRestore(job(b.config, 'r-modes-dry').ctx, restoreReq(bk.rel, { dryRun: true }));
    expect(dry.status).toBe('Completed');
    expect(dry.dryRunReport).toMatch(new RegExp(`warning: ${warning.source}`));
    const r = await runRestore(job(b.config, 'r-modes').ctx, restoreReq(bk.rel));
    expect(r.errorMessage).toBe('');
    expect(r.status).toBe('Completed');
    expect(r.warnings.join('\n')).toMatch(warning);
    const mode = (p: string) => lstatSync(path.join(b.box.plugins, p)).mode & 0o7777;
    expect(mode('bin/tool')).toBe(0o755);
    expect(mode('bin/group-tool')).toBe(0o750);
    expect(mode('shared')).toBe(0o1777);
    expect(mode('team')).toBe(0o2775);
    expect(mode('plain.jar')).toBe(0o640);
    expect(lstatSync(path.join(b.box.plugins, 'current')).isSymbolicLink()).toBe(true);
    await b.box.stop();
  });
});

describe('a backup directory made by GoCD itself', () => {
  it('restores db.zip, config-dir.zip and config-repo.zip onto the plan datasets with the same archive', async () => {
    // Laid out as GoCD lays it: db.zip holding cruise.h2.db, config-dir.zip, config-repo.zip,
    // version.txt without a newline; then a manifest as `boxback backup import` writes it.
    const src = path.join(dir, 'gocd-src');
    mkdirSync(path.join(src, 'h2db'), { recursive: true });
    writeFileSync(path.join(src, 'h2db', 'cruise.h2.db'), 'gocd database from a GoCD backup\n');
    mkdirSync(path.join(src, 'config'), { recursive: true });
    writeFileSync(path.join(src, 'config', 'cruise-config.xml'), '<cruise from="gocd"/>\n');
    mkdirSync(path.join(src, 'config.git'), { recursive: true });
    execFileSync('git', ['init', '-q', path.join(src, 'config.git')]);
    const ts = '20261120-101010';
    const rel = `gocd4/backup_${ts}`;
    const bdir = path.join(store, rel);
    mkdirSync(bdir, { recursive: true });
    execFileSync('zip', ['-q', '-r', path.join(bdir, 'db.zip'), '.'], { cwd: path.join(src, 'h2db') });
    execFileSync('zip', ['-q', '-r', path.join(bdir, 'config-dir.zip'), '.'], { cwd: path.join(src, 'config') });
    execFileSync('zip', ['-q', '-r', path.join(bdir, 'config-repo.zip'), '.'], { cwd: path.join(src, 'config.git') });
    writeFileSync(path.join(bdir, 'version.txt'), '22.3.0 (15551-abc)');
    const ds = (name: string, archive: string) => ({ name, archive, kind: 'zip' as const, sources: [], target: '', entries: 0, bytes: 0 });
    writeManifest(bdir, {
      ...base.manifest,
      id: `gocd4@${ts}`,
      timestamp: ts,
      origin: 'gocd-import',
      product: { name: 'gocd', version: '22.3.0 (15551-abc)' },
      source: { hostname: '', addresses: [] },
      datasets: [ds('database', 'db.zip'), ds('config', 'config-dir.zip'), ds('config-repo', 'config-repo.zip')],
      trees: [],
    });
    const artifactsBefore = snapshot(b.box.artifacts);
    const r = await runRestore(job(b.config, 'r-gocd').ctx, restoreReq(rel));
    expect(r.errorMessage).toBe('');
    expect(r.status).toBe('Completed');
    expect(readdirSync(b.box.db).sort()).toContain('cruise.h2.db');
    expect(readFileSync(path.join(b.box.db, 'cruise.h2.db'), 'utf8')).toBe('gocd database from a GoCD backup\n');
    expect(readFileSync(path.join(b.box.configDir, 'cruise-config.xml'), 'utf8')).toBe('<cruise from="gocd"/>\n');
    expect(readdirSync(path.join(b.box.configRepo, '.git'))).toContain('HEAD');
    // What GoCD does not back up stays as it was, with a warning for each.
    expect(snapshot(b.box.artifacts)).toEqual(artifactsBefore);
    expect(r.warnings.join('\n')).toMatch(/plan dataset plugins \(plugins\.zip\) is not in the backup/);
    await b.box.stop();
  });
});
