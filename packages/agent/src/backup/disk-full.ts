/**
 * The message of a backup that ran out of space in the store (BOXBACK_ERR_DISK_FULL): which
 * store, how large it is, the step that hit it, and what to do next. The tool's own words
 * (cp's or rsync's stderr, often a long command line) are cut to their end; the agent's log
 * keeps them whole.
 */
import { statfsSync } from 'node:fs';

const RAW_LIMIT = 200;

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** "(a 5.0 MiB filesystem, 12 KiB free)", or '' when the store cannot be asked. */
export function storeSpace(store: string): string {
  try {
    const s = statfsSync(store);
    return ` (a ${bytes(s.blocks * s.bsize)} filesystem, ${bytes(s.bavail * s.bsize)} free)`;
  } catch {
    return '';
  }
}

/**
 * `store S is full (a 5.0 MiB filesystem, 0 B free) at SYNC_ARTIFACTS: <tool's words>; free space
 * in it or delete old backups (...), then run the backup again; services were resumed; partial backup removed`.
 */
export function diskFullMessage(o: { store: string; host: string; step: string; raw: string; resumed: string }): string {
  const raw = o.raw.length > RAW_LIMIT ? `…${o.raw.slice(-RAW_LIMIT)}` : o.raw;
  const at = o.step ? ` at ${o.step}` : '';
  return (
    `store ${o.store} is full${storeSpace(o.store)}${at}: ${raw}; ` +
    `free space in it or delete old backups (\`boxback backups --host ${o.host}\`, \`boxback backup delete ID\`), then run the backup again` +
    `${o.resumed}; partial backup removed`
  );
}
