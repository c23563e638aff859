/**
 * Who may call this agent, and which part of the store a call may touch. The RPC layer
 * (server.ts) asks here before every handler runs; nothing below it checks again.
 *
 *   1. the caller: its certificate's name (CN) must be one of `allowedClients` (default: the
 *      controller's, "controller"); every other certificate of the fleet CA is refused with
 *      PERMISSION_DENIED naming it. (TLS itself refuses certificates of another CA and
 *      agent certificates, whose extended key usage is serverAuth only.)
 *   2. the backup a call names (a BackupRef parsed from `<host>/backup_<ts>`): its host must
 *      be this agent's own, whatever the request says. The one exception is a restore that
 *      the controller sends with `sourceHost` set: it may read that host's backup, for that
 *      restore only. Verify and delete never reach another host's part.
 */
import { readFileSync } from 'node:fs';
import { BoxbackError, certInfo, refFromPath, type BackupRef } from '@boxback/common';
import type { AgentConfig } from './config.js';

/** The subset of grpc-js's auth context this reads. */
export interface PeerAuth {
  sslPeerCertificate?: { subject?: { CN?: string | string[] } };
}

/** The caller's certificate name, or PERMISSION_DENIED when it may not call this agent. */
export function checkCaller(config: AgentConfig, auth: PeerAuth | undefined): string {
  const raw = auth?.sslPeerCertificate?.subject?.CN;
  const cn = Array.isArray(raw) ? raw[0] : raw;
  if (!cn || !config.allowedClients.includes(cn)) {
    throw new BoxbackError(
      'BOXBACK_ERR_PERMISSION_DENIED',
      `certificate "${cn ?? '(no name)'}" may not call agent ${config.name}: it serves only ${config.allowedClients.join(', ')} (allowedClients in ${config.file})`,
    );
  }
  return cn;
}

export type StoreAccess = 'verify' | 'delete' | 'restore';

/**
 * The backup `rel` names when this agent may `access` it: one of its own host's, or for a
 * restore one of the `sourceHost` the controller named for it.
 */
export function backupRefFor(config: AgentConfig, rel: string, access: StoreAccess, sourceHost = ''): BackupRef {
  const ref = refFromPath(rel); // refuses anything but <host>/backup_<ts>
  const host = ref.host;
  if (host === config.name) return ref;
  if (access === 'restore' && sourceHost !== '' && host === sourceHost) return ref;
  const why =
    access === 'restore'
      ? `a restore reads another host's backup only when the controller names that host as the restore's source (it named ${sourceHost ? `"${sourceHost}"` : 'none'})`
      : `an agent may ${access} only its own host's backups`;
  throw new BoxbackError('BOXBACK_ERR_PERMISSION_DENIED', `agent ${config.name} refuses to ${access} ${rel}: ${why}`);
}

/** A warning when this agent's own certificate could act as a TLS client (issued by an older boxback). */
export function ownCertWarning(config: AgentConfig): string | undefined {
  let info;
  try {
    info = certInfo(readFileSync(config.tls.cert, 'utf8'));
  } catch {
    return undefined; // unreadable: serving fails with its own clear error
  }
  if (!info.clientAuth) return undefined;
  return `this agent's certificate ${config.tls.cert} is also usable as a client certificate (issued by an older boxback); re-issue it with \`boxback certs issue --host ${config.name}\` (see \`boxback certs check\`)`;
}
