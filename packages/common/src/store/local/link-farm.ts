/**
 * Prepared link farms: the O(files) part of a journaled backup, done ahead of time.
 *
 * A journaled backup's tree starts as a hard-link farm of the previous backup's tree: one
 * link() per file (and one inode update each), about a fifth of a full rsync pass for one
 * `cp -al`. A published backup never changes, so the farm for the NEXT backup can be built
 * right after this one is sealed, in the background at idle I/O and CPU priority:
 *
 *   sealed(host/backup_X)  ->  ionice -c3 nice -n19 cp -al <store>/host/backup_X/<dir>/.
 *                                  <store>/host/.journal-farm/<tree>@backup_X.tmp
 *                              then `ionice -c3 sync --file-system` (its directories are new
 *                              inodes: flushed now, so the backup that takes it fsyncs only
 *                              what it changes instead of a syncfs on its critical path),
 *                              then rename to  <store>/host/.journal-farm/<tree>@backup_X
 *   next backup (trusted)  ->  take(tree, host/backup_X): waits for a preparation still
 *                              running (raised to normal priority), then the farm is renamed
 *                              into the new backup (instant)
 * Without a prepared farm the backup builds it itself (linkFarm below: cp processes in parallel).
 *
 * Only a farm made from exactly the previous backup is used; any other is removed. The farm
 * lives on the store's filesystem (hard links), under a dot directory that backup listings
 * and retention ignore. At agent start every farm is removed (the first backup after a
 * start is a full pass anyway).
 */
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
// execa is imported where it runs (`await import('execa')`), not at load: @boxback/common's index loads
// this module into every process, the `boxback` CLI too, and execa's ~100 files were ~a quarter of
// each CLI run's start-up CPU (test suite, session 19).
import type { ResultPromise } from 'execa';
import { BoxbackError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { removeTree } from '../../remove-tree.js';

export const FARM_DIR = '.journal-farm';

export interface LinkFarmOptions {
  cp?: string;
  rsync?: string;
  signal?: AbortSignal;
  /** cp processes linking at once (default: the CPUs, at most 4; 1: a single `cp -al`). */
  jobs?: number;
}

/**
 * The hard-link farm of `prevTree` at `dest` (which must not exist or be empty): every
 * directory new with prevTree's mode, owner and times, every other entry a hard link to
 * prevTree's inode. What `cp -al prevTree/. dest/` makes; that is one link() at a time, and
 * link() mostly waits on the filesystem, so the top of the tree (a "skeleton" of at most a
 * few levels) is made here and the subtrees below it are linked by `jobs` cp processes at
 * once (about 2x faster on 2 CPUs). The skeleton's directories get prevTree's attributes
 * last (creating their entries changed their mtimes), with rsync -d at nanosecond mtimes: the
 * other entries of the skeleton are the very inodes of prevTree, so rsync finds them equal.
 */
/** A cp or rsync run of the farm: throws when it was cancelled; its last error line when it failed, else undefined. */
function failure(r: { isCanceled: boolean; exitCode?: number; stderr?: unknown }, signal?: AbortSignal): string | undefined {
  if (r.isCanceled) {
    signal?.throwIfAborted();
    throw new BoxbackError('BOXBACK_ERR_CANCELLED', 'linking the previous tree was cancelled');
  }
  if (r.exitCode === 0) return undefined;
  return (
    String(r.stderr ?? '')
      .trim()
      .split('\n')
      .pop() ?? ''
  );
}

export async function linkFarm(prevTree: string, dest: string, o: LinkFarmOptions = {}): Promise<void> {
  const from = prevTree.replace(/\/+$/, '');
  const to = dest.replace(/\/+$/, '');
  await fsp.mkdir(to, { recursive: true });
  const jobs = Math.max(1, o.jobs ?? Math.min(4, os.availableParallelism()));
  const plan = jobs > 1 ? await splitTree(from, jobs * 4) : undefined;
  if (!plan) {
    await runLinker(o.cp ?? 'cp', ['-a', '-l', '--', `${from}/.`, `${to}/`], o.signal, from, to);
    return;
  }
  for (const d of plan.skeleton) if (d) await fsp.mkdir(path.join(to, d));
  const queue = [...plan.items];
  let failed: unknown;
  const ac = new AbortController();
  const signal = o.signal ? AbortSignal.any([o.signal, ac.signal]) : ac.signal;
  const worker = async () => {
    for (let it = queue.shift(); it && !failed; it = queue.shift()) {
      try {
        await runLinker(
          o.cp ?? 'cp',
          ['-a', '-l', '-t', path.join(to, it.parent), '--', ...it.names.map((n) => path.join(from, it.parent, n))],
          signal,
          from,
          to,
        );
      } catch (err) {
        failed ??= err;
        ac.abort();
      }
    }
  };
  await Promise.all(Array.from({ length: jobs }, worker));
  if (failed) {
    o.signal?.throwIfAborted();
    throw failed;
  }
  const list = plan.skeleton.map((d) => (d === '' ? '.' : d));
  const rsync = o.rsync ?? 'rsync';
  const { execa } = await import('execa');
  const r = await execa(rsync, ['-a', '-d', '--numeric-ids', '--modify-window=-1', '--files-from=-', '--from0', `${from}/`, `${to}/`], {
    reject: false,
    input: list.map((d) => `${d}\0`).join(''),
    cancelSignal: o.signal,
    forceKillAfterDelay: 3000,
    env: { LC_ALL: 'C' },
  });
  const err = failure(r, o.signal);
  if (err !== undefined) {
    throw new BoxbackError(
      'BOXBACK_ERR_SYNC_FAILED',
      `copying directory attributes of ${from} to ${to} failed (rsync exit ${r.exitCode ?? r.shortMessage}): ${err}`,
    );
  }
}

interface Split {
  /** Directories made here, parents first ('' is the root). */
  skeleton: string[];
  /** What one cp links: entries of the skeleton directory `parent`. */
  items: Array<{ parent: string; names: string[] }>;
}

/**
 * Read the top levels of the tree until there are at least `want` subtrees (or 4 levels,
 * or 4096 skeleton directories): those subtrees and the skeleton's other entries, grouped
 * into about `want` cp runs. Undefined when the tree does not split (a single cp then).
 */
async function splitTree(root: string, want: number): Promise<Split | undefined> {
  const skeleton: string[] = [];
  const loose: Array<{ parent: string; name: string }> = [];
  let frontier = [''];
  for (let depth = 0; depth < 4 && frontier.length < want && skeleton.length < 4096; depth++) {
    const next: string[] = [];
    for (const d of frontier) {
      skeleton.push(d);
      for (const e of await fsp.readdir(path.join(root, d), { withFileTypes: true })) {
        const rel = d ? `${d}/${e.name}` : e.name;
        if (e.isDirectory()) next.push(rel);
        else loose.push({ parent: d, name: e.name });
      }
    }
    frontier = next;
  }
  if (frontier.length < 2) return undefined;
  const units = [
    ...frontier.map((d) => ({ parent: path.posix.dirname(d) === '.' ? '' : path.posix.dirname(d), name: path.posix.basename(d) })),
    ...loose,
  ];
  // Group by parent directory (cp -t takes one target), about `want` runs of at most 1000 names.
  const per = Math.min(1000, Math.max(1, Math.ceil(units.length / want)));
  const byParent = new Map<string, string[]>();
  for (const u of units) {
    const l = byParent.get(u.parent) ?? [];
    l.push(u.name);
    byParent.set(u.parent, l);
  }
  const items: Split['items'] = [];
  for (const [parent, names] of byParent)
    for (let i = 0; i < names.length; i += per) items.push({ parent, names: names.slice(i, i + per) });
  return { skeleton, items };
}

async function runLinker(bin: string, args: string[], signal: AbortSignal | undefined, from: string, to: string): Promise<void> {
  const { execa } = await import('execa');
  const r = await execa(bin, args, {
    reject: false,
    stdin: 'ignore',
    cancelSignal: signal,
    forceKillAfterDelay: 3000,
    env: { LC_ALL: 'C' },
  });
  const err = failure(r, signal);
  if (err !== undefined) {
    const msg = `hard-linking ${from} into ${to} failed (cp exit ${r.exitCode ?? r.shortMessage}): ${err}`;
    if (/No space left on device|Too many links|Disk quota exceeded/i.test(String(r.stderr)))
      throw new BoxbackError('BOXBACK_ERR_DISK_FULL', msg);
    throw new BoxbackError('BOXBACK_ERR_SYNC_FAILED', msg);
  }
}

interface Prep {
  backupRel: string;
  dir: string;
  sub?: ResultPromise;
  done: Promise<boolean>;
  startedAt: number;
  ms?: number;
  /** Flushed to disk once linked (syncfs): the backup need not flush its directories again. */
  durable?: boolean;
}

export class LinkFarms {
  private readonly root: string;
  private readonly preps = new Map<string, Prep>();
  private closed = false;

  constructor(
    private readonly store: string,
    host: string,
    private readonly log: Logger,
    private readonly cp = 'cp',
  ) {
    this.root = path.join(store, host, FARM_DIR);
  }

  /** Remove every farm (agent start). */
  async reset(): Promise<void> {
    await removeTree(this.root);
  }

  farmPath(tree: string, backupRel: string): string {
    return path.join(this.root, `${tree}@${path.basename(backupRel)}`);
  }

  /** Start building the farm of `<store>/<backupRel>/<treeDir>` for the next backup of `tree`. */
  prepare(tree: string, treeDir: string, backupRel: string): void {
    if (this.closed) return;
    void this.drop(tree);
    const from = path.join(this.store, backupRel, treeDir);
    const dir = this.farmPath(tree, backupRel);
    const tmp = `${dir}.tmp`;
    const prep: Prep = { backupRel, dir, startedAt: Date.now(), done: Promise.resolve(false) };
    prep.done = (async () => {
      const { execa } = await import('execa');
      await removeTree(tmp);
      await fsp.mkdir(tmp, { recursive: true });
      const sub = execa('ionice', ['-c3', 'nice', '-n', '19', this.cp, '-a', '-l', '--', `${from}/.`, `${tmp}/`], {
        reject: false,
        stdin: 'ignore',
        env: { LC_ALL: 'C' },
      });
      prep.sub = sub;
      const r = await sub;
      prep.sub = undefined;
      if (r.exitCode !== 0) {
        await removeTree(tmp);
        if (!this.closed && !r.isTerminated)
          this.log.warn(
            { tree, from, err: String(r.stderr ?? '').slice(-500) },
            `preparing the link farm for ${tree}'s next backup failed; it will be built during the backup`,
          );
        return false;
      }
      const flush = execa('ionice', ['-c3', 'sync', '--file-system', tmp], { reject: false, stdin: 'ignore' });
      prep.sub = flush;
      const flushed = await flush;
      prep.sub = undefined;
      prep.durable = flushed.exitCode === 0;
      await fsp.rename(tmp, dir);
      prep.ms = Date.now() - prep.startedAt;
      this.log.info({ tree, from, ms: prep.ms }, `link farm for ${tree}'s next backup prepared`);
      return true;
    })().catch(async (err: unknown) => {
      await removeTree(tmp).catch(() => undefined);
      this.log.warn({ tree, err: (err as Error).message }, 'preparing a link farm failed');
      return false;
    });
    this.preps.set(tree, prep);
  }

  /**
   * The prepared farm of `tree` made from exactly `backupRel` (waits for one still being
   * built), or undefined. The caller renames it into place; it is no longer tracked.
   */
  async take(tree: string, backupRel: string): Promise<{ dir: string; prepareMs: number; durable: boolean } | undefined> {
    const prep = this.preps.get(tree);
    if (!prep || prep.backupRel !== backupRel) {
      await this.drop(tree);
      return undefined;
    }
    this.preps.delete(tree);
    // A backup is waiting for it now: no longer idle priority.
    const pid = prep.sub?.pid;
    if (pid) {
      const t0 = Date.now();
      const { execa } = await import('execa');
      await Promise.all([
        execa('renice', ['-n', '0', '-p', String(pid)], { reject: false, stdin: 'ignore' }),
        execa('ionice', ['-c', '2', '-n', '4', '-p', String(pid)], { reject: false, stdin: 'ignore' }),
      ]);
      const ok = await prep.done;
      this.log.info({ tree, waitedMs: Date.now() - t0, ok }, `the backup waited for ${tree}'s link farm to be prepared`);
      return ok ? { dir: prep.dir, prepareMs: prep.ms ?? 0, durable: prep.durable === true } : undefined;
    }
    const ok = await prep.done;
    return ok ? { dir: prep.dir, prepareMs: prep.ms ?? 0, durable: prep.durable === true } : undefined;
  }

  /** Forget and remove the farm of `tree` (kills a preparation still running). */
  async drop(tree: string): Promise<void> {
    const prep = this.preps.get(tree);
    this.preps.delete(tree);
    if (!prep) return;
    prep.sub?.kill('SIGKILL');
    await prep.done.catch(() => false);
    await removeTree(prep.dir);
    await removeTree(`${prep.dir}.tmp`);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const tree of [...this.preps.keys()]) {
      const prep = this.preps.get(tree);
      prep?.sub?.kill('SIGKILL');
      await prep?.done.catch(() => false);
      if (prep) await removeTree(`${prep.dir}.tmp`);
    }
  }
}
