/**
 * Bearer tokens and roles. A token is "bbx_" + 32 random bytes (base64url); the catalog
 * keeps only its SHA-256. Every handler calls `authorize(call, need)` first:
 *   1. read `authorization: Bearer <token>` from the call's metadata,
 *   2. look the hash up in the catalog (UNAUTHENTICATED when absent or unknown),
 *   3. compare the role with what the call needs (PERMISSION_DENIED with an actionable message).
 */
import { createHash, randomBytes } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { BoxbackError } from '@boxback/common';
import type { Catalog, Role, TokenRow } from './catalog/types.js';

export interface Caller {
  name: string;
  role: Role;
}

export function newToken(): string {
  return `bbx_${randomBytes(32).toString('base64url')}`;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function checkRole(role: string): Role {
  if (role !== 'admin' && role !== 'viewer') {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad role "${role}": want admin or viewer`);
  }
  return role;
}

/** Create a token in the catalog; returns the token (shown once) and its row. */
export async function createToken(catalog: Catalog, name: string, role: string): Promise<{ token: string; row: TokenRow }> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$/.test(name)) {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad token name "${name}": use letters, digits, '.', '_', '@' or '-'`);
  }
  const token = newToken();
  const row = await catalog.createToken({ name, role: checkRole(role), hash: hashToken(token), createdAtMs: Date.now() });
  return { token, row };
}

/** What a call does, for the refusal message: "restore backups", "add hosts"... */
export interface Need {
  role: Role;
  what: string;
}

export class Authenticator {
  private readonly lastTouch = new Map<number, number>();
  constructor(private readonly catalog: Catalog) {}

  /** Who calls: the token's name and role (UNAUTHENTICATED when there is no known token). */
  async authenticate(call: { metadata: grpc.Metadata }): Promise<Caller> {
    const raw = call.metadata.get('authorization')[0];
    const header = typeof raw === 'string' ? raw : '';
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) {
      throw new BoxbackError(
        'BOXBACK_ERR_UNAUTHENTICATED',
        'no token given: set BOXBACK_TOKEN or `token:` in cli.yaml (an admin creates one with `boxback tokens create`)',
      );
    }
    const row = await this.catalog.findTokenByHash(hashToken(m[1]));
    if (!row)
      throw new BoxbackError(
        'BOXBACK_ERR_UNAUTHENTICATED',
        'the token is not known to this controller (revoked, or from another controller)',
      );
    const now = Date.now();
    if (now - (this.lastTouch.get(row.id) ?? 0) > 60_000) {
      this.lastTouch.set(row.id, now);
      await this.catalog.touchToken(row.id, now);
    }
    return { name: row.name, role: row.role };
  }
}

/** PERMISSION_DENIED unless the caller's role allows the call. */
export function requireRole(caller: Caller, need: Need): void {
  if (need.role === 'admin' && caller.role !== 'admin') {
    throw new BoxbackError('BOXBACK_ERR_PERMISSION_DENIED', `role ${caller.role} may not ${need.what}; ask an admin for an admin token`);
  }
}
