/**
 * Step CHOWN (GoCD: "chown -R go:go"), done on the STAGED copies, before the services are
 * stopped, so a failure here changes nothing on the box.
 *   - A tree with an owner (the plan's, else the manifest's) gets `chown -R -h` to that
 *     user:group, the names resolved on THIS box (getent), so ids that differ between boxes
 *     come out right. A zip dataset's owner is resolved the same way before EXTRACT, which
 *     sets it on each entry as it writes it (datasets/zip.ts): no second walk.
 *   - Without an owner, the numeric ids that came with the backup (a tree's files as rsync
 *     kept them, a zip entry's Info-ZIP "ux" ids) are mapped through the plan's
 *     restore.uidMap/gidMap ("source id": target id); unmapped ids stay as they are.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { BoxbackError } from '@boxback/common';
import type { JobContext } from '../job.js';
import type { Plan } from '../plan.js';
import { runCommand } from '../run-command.js';
import type { Owner } from './targets.js';

export interface Ids {
  uid: number;
  gid: number;
}

export interface IdMaps {
  uid: Map<number, number>;
  gid: Map<number, number>;
}

export function idMaps(plan: Plan): IdMaps {
  const conv = (m: Record<string, number>) => new Map(Object.entries(m).map(([k, v]) => [Number(k), v] as [number, number]));
  return { uid: conv(plan.restore.uidMap), gid: conv(plan.restore.gidMap) };
}

async function getent(db: 'passwd' | 'group', name: string): Promise<number | undefined> {
  if (/^\d+$/.test(name)) return Number(name);
  const r = await runCommand(['getent', db, name], { timeoutMs: 10_000 });
  if (!r.ok) return undefined;
  const id = Number(r.outputTail.split('\n')[0]?.split(':')[2]);
  return Number.isInteger(id) ? id : undefined;
}

const resolved = new Map<string, Ids>();

/** user:group names -> ids on this box. Throws when either does not exist here. */
export async function resolveOwner(owner: Owner): Promise<Ids> {
  const key = `${owner.user}:${owner.group}`;
  const hit = resolved.get(key);
  if (hit) return hit;
  const [uid, gid] = await Promise.all([getent('passwd', owner.user), getent('group', owner.group)]);
  if (uid === undefined)
    throw new BoxbackError(
      'BOXBACK_ERR_RESTORE_FAILED',
      `user ${owner.user} does not exist on this box; create it or fix the plan's owner`,
    );
  if (gid === undefined)
    throw new BoxbackError(
      'BOXBACK_ERR_RESTORE_FAILED',
      `group ${owner.group} does not exist on this box; create it or fix the plan's owner`,
    );
  const ids = { uid, gid };
  resolved.set(key, ids);
  return ids;
}

/** `chown -R -h uid:gid` (symlinks themselves, never what they point at). */
export async function chownTree(p: string, ids: Ids, signal?: AbortSignal): Promise<void> {
  const argv = ['chown', '-R', '-h', `${ids.uid}:${ids.gid}`, '--', p];
  const r = await runCommand(argv, { timeoutMs: 3_600_000, signal });
  if (!r.ok) throw new BoxbackError('BOXBACK_ERR_RESTORE_FAILED', `chown of ${p} failed: ${r.outputTail.split('\n').pop() ?? r.exitCode}`);
}

/** Map every entry's uid/gid under `root` through the maps (lchown only what changes). */
export async function mapTreeIds(root: string, maps: IdMaps): Promise<number> {
  if (maps.uid.size === 0 && maps.gid.size === 0) return 0;
  let changed = 0;
  const visit = async (p: string): Promise<void> => {
    const st = await fsp.lstat(p);
    const uid = maps.uid.get(st.uid) ?? st.uid;
    const gid = maps.gid.get(st.gid) ?? st.gid;
    if (uid !== st.uid || gid !== st.gid) {
      await fsp.lchown(p, uid, gid);
      // chown clears setuid/setgid on files; restore's extract already dropped them.
      changed++;
    }
    if (st.isDirectory()) for (const n of await fsp.readdir(p)) await visit(path.join(p, n));
  };
  await visit(root);
  return changed;
}

export interface ChownWork {
  /** Staged path (a directory or a single file). */
  path: string;
  owner?: Owner;
  /** Apply the id maps to what the backup brought (trees, files without an owner). */
  mapIds: boolean;
  label: string;
}

export async function applyOwnership(ctx: JobContext, work: ChownWork[]): Promise<void> {
  const maps = idMaps(ctx.config.plan);
  ctx.emit({ phase: 'CHOWN', state: 'started', filesTotal: work.length });
  let done = 0;
  for (const w of work) {
    if (w.owner) {
      const ids = await resolveOwner(w.owner);
      await chownTree(w.path, ids, ctx.signal);
      ctx.log.info({ path: w.path, owner: `${w.owner.user}:${w.owner.group}`, ...ids }, 'chowned staged copy');
    } else if (w.mapIds) {
      const n = await mapTreeIds(w.path, maps);
      if (n) ctx.log.info({ path: w.path, changed: n }, 'mapped uids/gids');
    }
    done++;
    ctx.emit({ phase: 'CHOWN', filesDone: done, filesTotal: work.length, message: w.label });
  }
  ctx.emit({ phase: 'CHOWN', state: 'done', filesDone: done, filesTotal: work.length });
}
