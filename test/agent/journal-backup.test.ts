// The change journal wired into the real agent process (issue 7): the first backup of each
// tree is a full rsync pass and the manifest says why; after changes to the artifacts
// (create, modify, delete, rename a file and a directory) the next backup syncs only the
// journaled paths, and its tree is the source byte for byte with unchanged files hard links
// to the previous backup; an agent restart and a restore each make the next backup full.
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverStream, verifyBackupDir, type JobEvent, type JobResult, type Manifest, type ManifestTree } from '@boxback/common';
import { makeBackupBox, type BackupBox } from '../helpers/backup-box.js';
import { startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { diffTrees, snapshotTree } from '../helpers/journal-trees.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let b: BackupBox;
let agent: AgentProcess | undefined;

const launch = () =>
  startAgent({
    dir: b.dir,
    name: b.name,
    planFile: b.planFile,
    store: b.store,
    allowedRoots: [b.box.root],
    stateDir: b.stateDir,
    identity: { hostname: 'gocd-box-1', addresses: ['10.20.0.11'] },
  });

/** Wait until the agent's log says both trees are watched `times` times in all (a rewatch logs again). */
async function watched(a: AgentProcess, times = 1, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  const count = (tree: string) =>
    a
      .output()
      .split('\n')
      .filter((l) => l.includes(`"msg":"watching ${tree} for the change journal"`)).length;
  while (count('artifacts') < times || count('test-reports') < times) {
    if (Date.now() > end) throw new Error(`trees not watched within ${ms} ms:\n${a.output().slice(-3000)}`);
    await sleep(50);
  }
}

async function job(rpc: 'Backup' | 'Restore', req: object): Promise<JobResult> {
  let result: JobResult | undefined;
  for await (const ev of serverStream<object, JobEvent>(agent!.client, rpc, req)) if (ev.result) result = ev.result;
  if (!result) throw new Error('stream ended without a result');
  return result;
}

async function backup(
  jobId: string,
): Promise<{ result: JobResult; manifest: Manifest; tree: (name: string) => ManifestTree; dir: string }> {
  const result = await job('Backup', { jobId, live: false, initiatedBy: 'alice', initiatedVia: 'cli' });
  expect(result.errorMessage).toBe('');
  expect(result.status).toBe('Completed');
  const manifest = JSON.parse(result.manifestJson) as Manifest;
  return { result, manifest, tree: (name) => manifest.trees.find((t) => t.name === name)!, dir: path.join(b.store, result.backupPath) };
}

beforeAll(async () => {
  b = await makeBackupBox({ artifacts: 40, testReports: 10 });
  agent = await launch();
});

afterAll(async () => {
  await agent?.stop();
  await b?.cleanup();
});

describe('change journal in the agent', () => {
  it('syncs only what changed when the journal is trusted, and falls back to a full pass after a restart and a restore', async () => {
    await watched(agent!);
    const art = b.box.artifacts;
    const one = await backup('jb-1');
    for (const name of ['artifacts', 'test-reports']) {
      expect(one.tree(name).syncMode).toBe('full');
      expect(one.tree(name).syncReason).toMatch(/\w/);
    }
    expect(agent!.output()).toMatch(/tree artifacts: full rsync pass: /);

    // Changes of every kind.
    const p = (rel: string) => path.join(art, 'pipelines', rel);
    mkdirSync(p('pipe-9/1/build/job'), { recursive: true });
    writeFileSync(p('pipe-9/1/build/job/new.log'), 'created after backup 1\n');
    writeFileSync(p('pipe-1/1/build/job/out-1.log'), Buffer.alloc(statSync(p('pipe-1/1/build/job/out-1.log')).size, 'x')); // same size, new bytes
    appendFileSync(p('pipe-2/1/build/job/out-2.log'), 'appended\n');
    rmSync(p('pipe-3/1/build/job/out-3.jar'));
    renameSync(p('pipe-4/1/build/job/out-4.log'), p('pipe-4/1/build/job/renamed.log'));
    renameSync(p('pipe-3/2'), p('pipe-3/2-moved'));
    await sleep(1500); // let the watcher see them (chokidar re-reads a directory at most once a second)

    const two = await backup('jb-2');
    const a2 = two.tree('artifacts');
    expect(a2.syncMode).toBe('journal');
    expect(a2.changedPaths).toBeGreaterThan(0);
    expect(a2.syncReason).toBeUndefined();
    expect(two.tree('test-reports').syncMode).toBe('journal');
    expect(agent!.output()).toMatch(/tree artifacts: \d+ changed paths since /);
    // The tree is the source, byte for byte (modes, owners, mtimes, symlinks too).
    expect(diffTrees(await snapshotTree(art), await snapshotTree(path.join(two.dir, 'artifacts')))).toEqual([]);
    // Unchanged files cost a hard link to backup 1; changed ones are new inodes.
    const ino = (dir: string, rel: string) => statSync(path.join(dir, 'artifacts/pipelines', rel)).ino;
    expect(ino(two.dir, 'pipe-0/1/build/job/out-0.jar')).toBe(ino(one.dir, 'pipe-0/1/build/job/out-0.jar'));
    expect(ino(two.dir, 'pipe-4/1/build/job/renamed.log')).not.toBe(ino(one.dir, 'pipe-4/1/build/job/out-4.log'));
    expect(ino(two.dir, 'pipe-1/1/build/job/out-1.log')).not.toBe(ino(one.dir, 'pipe-1/1/build/job/out-1.log'));
    expect(two.manifest.totals.files).toBeGreaterThan(0);
    // The manifest was made from backup 1's and the journal's roots (no walk), and it is exact:
    // every byte checks, and it lists exactly the entries the tree has.
    expect(agent!.output()).toMatch(/tree artifacts: described from the previous manifest and the journal's roots/);
    expect(agent!.output()).not.toMatch(/described by a full walk instead/);
    const check = await verifyBackupDir(two.dir, two.manifest);
    expect(check.problems).toEqual([]);
    const listed = two.manifest.files.filter((f) => f.path.startsWith('artifacts/')).map((f) => f.path);
    const onDisk = execFileSync('find', ['artifacts', '-mindepth', '1'], { cwd: two.dir, encoding: 'utf8' }).trim().split('\n');
    expect([...listed].sort()).toEqual(onDisk.sort());

    // An agent restart: changes made while it was down are unknown.
    await agent!.stop();
    agent = await launch();
    await watched(agent);
    const three = await backup('jb-3');
    expect(three.tree('artifacts').syncMode).toBe('full');
    expect(three.tree('artifacts').syncReason).toMatch(/agent was restarted/);

    // A restore replaces the trees under the watchers.
    const restored = await job('Restore', { jobId: 'jr-1', backupPath: one.result.backupPath, dryRun: false, force: false, backupId: '' });
    expect(restored.errorMessage).toBe('');
    expect(restored.status).toBe('Completed');
    await watched(agent, 2); // watched again after the restore
    const four = await backup('jb-4');
    expect(four.tree('artifacts').syncMode).toBe('full');
    expect(four.tree('artifacts').syncReason).toMatch(/restore of .*replaced the trees/);
    expect(diffTrees(await snapshotTree(path.join(one.dir, 'artifacts')), await snapshotTree(path.join(four.dir, 'artifacts')))).toEqual(
      [],
    );
  }, 60_000);
});
