/**
 * Rebuilding the catalog from the store (`boxback store scan`, and at start-up when the
 * catalog holds no backup): a controller that lost its catalog file, or a new controller
 * pointed at an existing store, learns the fleet's backups from the store alone.
 *
 *   1. list the hosts the store holds backups of;
 *   2. register each one the catalog does not know, with no agent address (the controller
 *      cannot know where its agent runs: `boxback hosts set NAME --address HOST:PORT`);
 *      a name the controller would refuse is skipped with a warning;
 *   3. reconcile every host (store-agreement.ts `reconcileStore`, the same code that adopts a
 *      backup an agent published after its job was recorded Failed): each complete backup not in
 *      the catalog is added from its manifest (created time, size, consistency, Restorable), a
 *      catalogued Restorable one the store lost is marked.
 *
 * Nothing in the store is written or deleted. A scan run twice adds nothing the second time.
 */
import { checkName, type Logger } from '@boxback/common';
import { newHostRow } from './handlers.js';
import { reconcileStore, type AgreementDeps } from './store-agreement.js';

export interface ScanResult {
  /** Hosts registered by this scan (no address). */
  hostsAdded: string[];
  /** Hosts the store holds backups of. */
  hostsInStore: number;
  adopted: number;
  marked: number;
  location: string;
}

function validName(name: string, log: Logger): boolean {
  try {
    checkName(name);
    return true;
  } catch (err) {
    log.warn({ host: name, err: (err as Error).message }, 'a host directory in the store has a name the controller refuses: skipped');
    return false;
  }
}

/** Register the store's unknown hosts, then adopt every backup the catalog lacks. */
export async function scanStore(d: AgreementDeps): Promise<ScanResult> {
  const location = d.store.describe().location;
  const inStore = (await d.store.listHosts()).filter((h) => validName(h, d.log));
  const known = new Set((await d.catalog.listHosts()).map((h) => h.name));
  const hostsAdded: string[] = [];
  for (const name of inStore) {
    if (known.has(name)) continue;
    await d.catalog.addHost(newHostRow(name, '')); // found only in the store: no address, never seen
    hostsAdded.push(name);
  }
  if (hostsAdded.length) d.log.warn({ hosts: hostsAdded }, 'hosts found in the store registered with no agent address');
  const r = await reconcileStore(d);
  d.log.info({ location, hostsInStore: inStore.length, hostsAdded: hostsAdded.length, ...r }, 'store scanned');
  return { hostsAdded, hostsInStore: inStore.length, adopted: r.adopted, marked: r.marked, location };
}

/**
 * At start-up: scan when the catalog has no backup and the store has some (a lost or new
 * catalog). Returns undefined when there was nothing to do.
 */
export async function scanIfCatalogEmpty(d: AgreementDeps): Promise<ScanResult | undefined> {
  if ((await d.catalog.listBackups()).length > 0) return undefined;
  let hosts: string[];
  try {
    hosts = await d.store.listHosts();
  } catch (err) {
    d.log.warn({ err }, 'the store could not be listed: no catalog rebuild at start-up');
    return undefined;
  }
  if (!hosts.length) return undefined;
  d.log.warn({ location: d.store.describe().location }, 'the catalog has no backups and the store has some: rebuilding it from the store');
  return scanStore(d);
}
