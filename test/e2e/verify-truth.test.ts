// Verify tells the truth about zips, through the real CLI, controller and agent:
//   - import refuses a GoCD backup whose zip is truncated, or whose entry data no longer
//     matches its CRC-32, with one clear line and exit 5; nothing lands in the store or
//     the catalog;
//   - a backup whose files match their manifest but whose zip is CRC-damaged (an import an
//     older boxback accepted) fails `boxback backup verify` (exit 5, the entry named), both
//     when the controller reads the store itself and when it asks the host's agent, and
//     fails the agent's restore dry run;
//   - a sound import verifies ok with its zip entries counted;
//   - a restore of an archive with a 5000-character entry name fails with the unsafe-archive
//     error (the name cut short in the message, not a raw ENAMETOOLONG), and the CLI ends with
//     one `boxback: CODE: message` line on stderr.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startCluster } from '../../scripts/lib/cluster.mjs';
import { createSampleBox } from '../../scripts/lib/sample-box.mjs';
import { craftZip } from '../helpers/craft-zip.js';

type Box = Awaited<ReturnType<typeof createSampleBox>>;
type Cluster = Awaited<ReturnType<typeof startCluster>>;

let dir: string;
let cluster: Cluster;
let box: Box;
let agentStore: string;

/** A GoCD-made backup directory: real zips (Info-ZIP, deflated), version.txt, no manifest. */
function gocdDir(name: string): string {
  const d = path.join(dir, 'gocd-made', name);
  mkdirSync(d, { recursive: true });
  const zipDir = (src: string, zip: string) => execFileSync('zip', ['-q', '-r', '-y', path.join(d, zip), '.'], { cwd: src });
  zipDir(box.db, 'db.zip');
  zipDir(box.configDir, 'config-dir.zip');
  zipDir(box.configRepo, 'config-repo.zip');
  writeFileSync(path.join(d, 'version.txt'), '22.3.0 (15301-abcdef)');
  return d;
}

/** config-dir.zip with one stored entry, and the offset of that entry's data. */
function storedZip(file: string): number {
  const name = 'cruise-config.xml';
  craftZip(file, [{ name, data: '<cruise>'.padEnd(4000, 'x') + '</cruise>\n' }]);
  return 30 + Buffer.byteLength(name);
}

function flipByte(file: string, at: number): void {
  const b = readFileSync(file);
  b[at] ^= 0xff;
  writeFileSync(file, b);
}

/** Make the manifest agree with the (damaged) file again, as an older import would have. */
function rehash(backupDir: string, rel: string): void {
  const mf = path.join(backupDir, 'manifest.json');
  const m = JSON.parse(readFileSync(mf, 'utf8'));
  const f = m.files.find((x: { path: string }) => x.path === rel);
  const data = readFileSync(path.join(backupDir, rel));
  f.sha256 = createHash('sha256').update(data).digest('hex');
  f.size = data.length;
  writeFileSync(mf, JSON.stringify(m, null, 2));
}

const storeEntries = (host: string) => (existsSync(path.join(cluster.store, host)) ? readdirSync(path.join(cluster.store, host)) : []);

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-crc-'));
  box = await createSampleBox({ root: path.join(dir, 'box'), port: await freePort(), seed: 3, hostname: 'gocd-v', address: '10.1.0.9' });
  cluster = await startCluster({ dir });
  agentStore = path.join(dir, 'agent-store');
  mkdirSync(agentStore);
  // gocd-w's agent sees its own store: a backup the controller's store lacks is verified there.
  await cluster.addAgent({ name: 'gocd-v', box });
  await cluster.addAgent({ name: 'gocd-w', box, store: agentStore });
  for (const n of ['gocd-v', 'gocd-w']) {
    const r = await cluster.cli(['hosts', 'add', n, '--address', cluster.agents[n].address]);
    expect(r.code, r.stderr).toBe(0);
  }
});

afterAll(async () => {
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('import opens and CRC-checks every zip', () => {
  it('refuses a truncated zip: exit 5, one line naming the archive, nothing imported', async () => {
    const src = gocdDir('backup_20250301-010101');
    const db = path.join(src, 'db.zip');
    truncateSync(db, Math.floor(readFileSync(db).length / 2));
    const r = await cluster.cli(['backup', 'import', src, '--host', 'gocd-v']);
    expect(r.code).toBe(5);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^boxback: .*is damaged, nothing was imported.*db\.zip.*(unreadable|not a readable) zip/);
    expect(r.stderr).not.toContain('.import-');
    expect(storeEntries('gocd-v').filter((n) => n.startsWith('backup_'))).toEqual([]);
    const list = await cluster.cli(['--json', 'backups', '--host', 'gocd-v']);
    expect(JSON.parse(list.stdout)).toEqual([]);
  });

  it('refuses an entry whose data does not match its CRC-32, naming the entry', async () => {
    const src = gocdDir('backup_20250301-020202');
    const at = storedZip(path.join(src, 'config-dir.zip'));
    flipByte(path.join(src, 'config-dir.zip'), at + 100);
    const r = await cluster.cli(['backup', 'import', src, '--host', 'gocd-v']);
    expect(r.code).toBe(5);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/config-dir\.zip: entry cruise-config\.xml: CRC-32 mismatch \(archive damaged\)/);
    expect(storeEntries('gocd-v').filter((n) => n.startsWith('backup_'))).toEqual([]);
  });
});

describe('backup verify reads every zip entry', () => {
  let id: string;
  it('a sound import verifies ok, its zip entries counted', async () => {
    const src = gocdDir('backup_20250302-030303');
    const imp = await cluster.cli(['--json', 'backup', 'import', src, '--host', 'gocd-v']);
    expect(imp.code, imp.stderr).toBe(0);
    id = JSON.parse(imp.stdout).id;
    const v = await cluster.cli(['backup', 'verify', id]);
    expect(v.code, v.stderr).toBe(0);
    expect(v.stdout).toMatch(/: ok, 4 files, .* checked, [1-9]\d* zip entries CRC-checked/);
  });

  it('a CRC-damaged zip whose SHA-256 matches the manifest fails verify (controller reads the store)', async () => {
    const bdir = path.join(cluster.store, 'gocd-v', `backup_${id.split('@')[1]}`);
    const zip = path.join(bdir, 'config-dir.zip');
    const at = storedZip(zip);
    flipByte(zip, at + 7);
    rehash(bdir, 'config-dir.zip');
    const v = await cluster.cli(['backup', 'verify', id]);
    expect(v.code).toBe(5);
    expect(v.stdout).toMatch(/1 problem\(s\); it is no longer Restorable/);
    expect(v.stdout).toMatch(/config-dir\.zip: entry cruise-config\.xml: CRC-32 mismatch/);
    const b = JSON.parse((await cluster.cli(['--json', 'backup', 'get', id])).stdout);
    expect(b.restorable).toBe(false);
  });

  it('the agent checks CRCs too: verify through the agent, and the restore dry run', async () => {
    // imported at the controller, then moved to the agent's own view of the store only
    const src = gocdDir('backup_20250303-040404');
    const imp = await cluster.cli(['--json', 'backup', 'import', src, '--host', 'gocd-w']);
    expect(imp.code, imp.stderr).toBe(0);
    const wid = JSON.parse(imp.stdout).id as string;
    const rel = path.join('gocd-w', `backup_${wid.split('@')[1]}`);
    cpSync(path.join(cluster.store, rel), path.join(agentStore, rel), { recursive: true });
    rmSync(path.join(cluster.store, rel), { recursive: true });
    const zip = path.join(agentStore, rel, 'config-dir.zip');
    flipByte(zip, storedZip(zip) + 9);
    rehash(path.join(agentStore, rel), 'config-dir.zip');

    const dry = await cluster.cli(['backup', 'restore', wid, '--dry-run']);
    expect(dry.code).toBe(5);
    expect(dry.stdout + dry.stderr).toMatch(/config-dir\.zip: entry cruise-config\.xml: CRC-32 mismatch/);

    const v = await cluster.cli(['backup', 'verify', wid]);
    expect(v.code).toBe(5);
    expect(v.stdout).toMatch(/config-dir\.zip: entry cruise-config\.xml: CRC-32 mismatch/);
  });
});

describe('a failed restore says why in one line', () => {
  it('a 5000-character entry name is an unsafe archive, shown cut short, as the last stderr line', async () => {
    const src = gocdDir('backup_20250304-050505');
    const long = 'n'.repeat(5000);
    craftZip(path.join(src, 'config-dir.zip'), [
      { name: 'cruise-config.xml', data: '<cruise/>' },
      { name: long, data: 'x' },
    ]);
    const imp = await cluster.cli(['--json', 'backup', 'import', src, '--host', 'gocd-v']);
    expect(imp.code, imp.stderr).toBe(0);
    const id = JSON.parse(imp.stdout).id as string;
    const r = await cluster.cli(['backup', 'restore', id, '--yes']);
    expect(r.code).toBe(5);
    const lines = r.stderr.trim().split('\n');
    expect(lines.filter((l) => l.startsWith('boxback:'))).toHaveLength(1);
    expect(lines.at(-1)).toMatch(
      /^boxback: BOXBACK_ERR_UNSAFE_ARCHIVE: job \S+ ended Failed at EXTRACT: config-dir\.zip: entry "n{60}…n{40} \(5000 chars\)" has a path segment of 5000 bytes \(a file name holds at most 255\); refusing the archive, nothing was changed$/,
    );
    expect(r.stdout + r.stderr).not.toContain('ENAMETOOLONG');
    expect(r.stdout + r.stderr).not.toContain('n'.repeat(200));
    // nothing was changed: the config dir is what it was
    expect(readdirSync(box.configDir)).not.toContain(long.slice(0, 255));
  });
});
