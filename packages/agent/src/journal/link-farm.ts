/**
 * Prepared link farms: the O(files) part of a journaled backup, done ahead of time.
 *
 * A journaled backup's tree starts as a hard-link farm of the previous backup's tree: one
 * link() per file (and one inode update each), which on a large tree costs about as much as
 * rsync's own pass. A published backup never changes, so the farm for the NEXT backup can be
 * built right after this one is sealed, in the background at idle I/O and CPU priority:
 *
 *   sealed(host/backup_X)  ->  ionice -c3 nice -n19 cp -al <store>/host/backup_X/<dir>/.
 *                                  <store>/host/.journal-farm/<tree>@backup_X.tmp
 *                              then rename to  <store>/host/.journal-farm/<tree>@backup_X
 *   next backup (trusted)  ->  take(tree, host/backup_X): waits for a preparation still
 *                              running, then the farm is renamed into the new backup (instant)
 *
 * Only a farm made from exactly the previous backup is used; any other is removed. The farm
 * lives on the store's filesystem (hard links), under a dot directory that backup listings
 * and retention ignore. At agent start every farm is removed (the first backup after a
 * start is a full pass anyway).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import type { Logger } from '@boxback/common';

export const FARM_DIR = '.journal-farm';

interface Prep {
  backupRel: string;
  dir: string;
  sub?: ResultPromise;
  done: Promise<boolean>;
  startedAt: number;
  ms?: number;
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
    await fsp.rm(this.root, { recursive: true, force: true });
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
      await fsp.rm(tmp, { recursive: true, force: true });
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
        await fsp.rm(tmp, { recursive: true, force: true });
        if (!this.closed && !r.isTerminated)
          this.log.warn(
            { tree, from, err: String(r.stderr ?? '').slice(-500) },
            `preparing the link farm for ${tree}'s next backup failed; it will be built during the backup`,
          );
        return false;
      }
      await fsp.rename(tmp, dir);
      prep.ms = Date.now() - prep.startedAt;
      this.log.info({ tree, from, ms: prep.ms }, `link farm for ${tree}'s next backup prepared`);
      return true;
    })().catch(async (err: unknown) => {
      await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      this.log.warn({ tree, err: (err as Error).message }, 'preparing a link farm failed');
      return false;
    });
    this.preps.set(tree, prep);
  }

  /**
   * The prepared farm of `tree` made from exactly `backupRel` (waits for one still being
   * built), or undefined. The caller renames it into place; it is no longer tracked.
   */
  async take(tree: string, backupRel: string): Promise<{ dir: string; prepareMs: number } | undefined> {
    const prep = this.preps.get(tree);
    if (!prep || prep.backupRel !== backupRel) {
      await this.drop(tree);
      return undefined;
    }
    this.preps.delete(tree);
    const ok = await prep.done;
    return ok ? { dir: prep.dir, prepareMs: prep.ms ?? 0 } : undefined;
  }

  /** Forget and remove the farm of `tree` (kills a preparation still running). */
  async drop(tree: string): Promise<void> {
    const prep = this.preps.get(tree);
    this.preps.delete(tree);
    if (!prep) return;
    prep.sub?.kill('SIGKILL');
    await prep.done.catch(() => false);
    await fsp.rm(prep.dir, { recursive: true, force: true });
    await fsp.rm(`${prep.dir}.tmp`, { recursive: true, force: true });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const tree of [...this.preps.keys()]) {
      const prep = this.preps.get(tree);
      prep?.sub?.kill('SIGKILL');
      await prep?.done.catch(() => false);
      if (prep) await fsp.rm(`${prep.dir}.tmp`, { recursive: true, force: true });
    }
  }
}
