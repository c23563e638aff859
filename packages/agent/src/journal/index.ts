/**
 * The change journals of the plan's trees, as the rest of the agent uses them:
 *
 *   const journals = await createJournals(config, log);     // at agent start-up
 *   const snap = await journals.snapshot('artifacts', prevBackupRelPath);   // backup, per tree
 *   snap.trusted ? syncTreeIncremental({ ..., changed: snap.changed,
 *                    farm: await journals.takeLinkFarm('artifacts', prevBackupRelPath) })
 *                : syncTree(...)
 *   await journals.sealed('artifacts', backupRelPath);       // after PUBLISH (starts preparing
 *                                                            // the next backup's link farm)
 *   journals.abandoned('artifacts');                         // the backup failed
 *   journals.invalidateAll('restore of host@ts');            // after a restore swapped the trees:
 *                                                            // untrusted, and the trees watched again
 *   await journals.close();                                  // shutdown
 *
 * Watchers start in the background: `createJournals` returns at once, and until a tree is
 * fully watched its journal is untrusted (the first backup after a start is a full pass
 * anyway: changes made while the agent was down are unknown).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '@boxback/common';
import type { AgentConfig } from '../config.js';
import { TreeJournal, type JournalSnapshot } from './journal.js';
import { LinkFarms } from '@boxback/common';
import { releaseMemorySoon } from '../memory.js';
import { journalSettings } from './plan-extension.js';
import { TreeWatcher, type WatcherStats } from './watcher.js';

export { syncTreeIncremental, type IncrementalSyncOptions, type IncrementalSyncResult } from '@boxback/common';
export { journalPlanSchema, JOURNAL_PLAN_DEFAULTS, type JournalPlan } from './plan-extension.js';
export type { JournalSnapshot } from './journal.js';

export interface TreeSnapshot {
  trusted: boolean;
  /** Why the backup must make a full pass (empty when trusted): for the manifest and the log. */
  reason: string;
  changed: string[];
  since: string;
}

export interface Journals {
  readonly epoch: string;
  snapshot(tree: string, previousBackup: string | undefined): Promise<TreeSnapshot>;
  /** After PUBLISH: the journal now follows this backup; its tree's link farm is prepared for the next one. */
  sealed(tree: string, backupRelPath: string): Promise<void>;
  /** For a trusted snapshot: the link farm prepared from `previousBackup` (pass as `farm`), or undefined. */
  takeLinkFarm(tree: string, previousBackup: string): Promise<string | undefined>;
  abandoned(tree: string): void;
  /**
   * A restore is about to swap the trees: every journal untrusted, every watcher's watches
   * closed, no re-scan until invalidateAll (which the restore calls when it ends, swapped or
   * rolled back).
   */
  hold(reason: string): void;
  invalidateAll(reason: string): void;
  status(): WatcherStats[];
  /** Resolves when every watcher has finished starting (tests, bench). */
  ready(): Promise<void>;
  close(): Promise<void>;
}

export interface JournalsOptions {
  /** Test hooks: a tiny watch limit, a fixed epoch, faster flushes. */
  maxWatches?: number;
  reserveWatches?: number;
  /** Entries per chunk of the watcher's first scan (see watcher.ts). */
  chunkEntries?: number;
  epoch?: string;
  flushMs?: number;
  carryMs?: number;
  /**
   * Prepare the next link farm after each seal, here (the journal bench, tests of the farm
   * itself). Off by default: the agent's backups take their farms from the store, which
   * prepares them (BackupStore.prepareNext) in its own `.journal-farm/` entries.
   */
  prepareFarms?: boolean;
}

type ConfigPart = Pick<AgentConfig, 'stateDir' | 'plan'> & Partial<Pick<AgentConfig, 'name'>> & { store?: AgentConfig['store'] | string };

/** A fresh id for this agent run: journals written by another run are never trusted. */
export function newEpoch(): string {
  return `${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(4).toString('hex')}`;
}

export async function createJournals(config: ConfigPart, log: Logger, o: JournalsOptions = {}): Promise<Journals> {
  const settings = journalSettings(config.plan);
  const epoch = o.epoch ?? newEpoch();
  const entries = new Map<string, { journal: TreeJournal; watcher?: TreeWatcher; started: Promise<unknown> }>();
  // Prepared link farms need the store (same filesystem as the backups).
  const root = typeof config.store === 'string' ? config.store : config.store?.kind === 'local' ? config.store.path : undefined;
  const farms = root && config.name && o.prepareFarms === true ? new LinkFarms(root, config.name, log) : undefined;
  await farms?.reset();
  let previousStart: Promise<unknown> = Promise.resolve();
  const treeDir = new Map(config.plan.trees.map((t) => [t.name, (t as { dir?: string }).dir ?? t.name]));
  for (const t of config.plan.trees) {
    const journal = await TreeJournal.open({
      stateDir: config.stateDir,
      tree: t.name,
      epoch,
      log,
      fullPassEvery: settings.fullPassEvery,
      flushMs: o.flushMs,
      carryMs: o.carryMs,
    });
    if (!settings.enabled) {
      journal.markUntrusted('the plan turns the change journal off (journal.enabled: false)');
      entries.set(t.name, { journal, started: Promise.resolve() });
      continue;
    }
    const watcher = new TreeWatcher({
      tree: t.name,
      source: t.source,
      excludes: t.excludes,
      log,
      maxWatches: o.maxWatches,
      reserveWatches: o.reserveWatches,
      chunkEntries: o.chunkEntries,
      onChange: (rel) => journal.record(rel),
      onUntrusted: (reason) => journal.markUntrusted(reason),
      onWatching: (on, why) => journal.setWatching(on, why),
    });
    // Trees start one after another (a watcher counts its own inotify watches as it starts).
    const prev = previousStart;
    const started = prev
      .then(() => watcher.start())
      // The first scan's garbage (~100 MiB of old space at 200k files) is collected at once.
      .then(() => releaseMemorySoon(log, `watcher of ${t.name} started`))
      .catch((err: unknown) => journal.markUntrusted(`the watcher of ${t.name} failed to start: ${(err as Error).message}`));
    previousStart = started;
    entries.set(t.name, { journal, watcher, started });
  }
  const get = (tree: string) => {
    const e = entries.get(tree);
    if (!e) throw new Error(`no journal for tree ${tree}`);
    return e;
  };
  return {
    epoch,
    async snapshot(tree, previousBackup) {
      const e = entries.get(tree);
      if (!e) return { trusted: false, reason: `tree ${tree} has no change journal`, changed: [], since: '' };
      // Let events already queued in the kernel reach the journal before the cut (changes
      // that arrive later are not lost: they land in the next segment). inotify queues an
      // event within the syscall that made the change, libuv reads the queue dry in each poll
      // phase, and fs.watch calls its listener synchronously: a poll phase between two check phases
      // (two setImmediate turns) is enough.
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      const s: JournalSnapshot = await e.journal.snapshotForBackup(previousBackup);
      const out = { trusted: s.trusted, reason: s.reason, changed: s.changedPaths, since: s.since };
      log.info(
        { tree, trusted: s.trusted, reason: s.reason || undefined, changed: s.changedPaths.length, since: s.since },
        s.trusted
          ? `tree ${tree}: journal trusted, syncing ${s.changedPaths.length} changed paths`
          : `tree ${tree}: full rsync pass (${s.reason})`,
      );
      return out;
    },
    async sealed(tree, backupRelPath) {
      await get(tree).journal.sealed(backupRelPath);
      farms?.prepare(tree, treeDir.get(tree) ?? tree, backupRelPath);
    },
    async takeLinkFarm(tree, previousBackup) {
      return (await farms?.take(tree, previousBackup))?.dir;
    },
    abandoned(tree) {
      entries.get(tree)?.journal.abandoned();
    },
    hold(reason) {
      for (const e of entries.values()) {
        e.journal.markUntrusted(reason, true);
        e.watcher?.hold(reason);
      }
    },
    invalidateAll(reason) {
      for (const e of entries.values()) {
        e.journal.markUntrusted(reason, true);
        // A restore renames the tree's directory aside and puts another in its place: the
        // old watches follow the old inodes, so watch the path again, once the restore's
        // garbage is collected (the GC after a job: the scan does not pile onto it).
        const watcher = e.watcher;
        if (watcher)
          e.started = new Promise<void>((resolve) => releaseMemorySoon(log, 'before re-watching the trees', resolve))
            .then(() => watcher.rewatch(reason))
            .then(() => releaseMemorySoon(log, 'trees watched again'))
            .catch((err: unknown) => e.journal.markUntrusted(`re-watching failed: ${(err as Error).message}`));
      }
    },
    status() {
      return [...entries.values()].flatMap((e) => (e.watcher ? [e.watcher.stats()] : []));
    },
    async ready() {
      await Promise.all([...entries.values()].map((e) => e.started));
    },
    async close() {
      await farms?.close();
      for (const e of entries.values()) {
        await e.watcher?.close();
        await e.journal.close();
      }
    },
  };
}
