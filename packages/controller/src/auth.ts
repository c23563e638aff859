/**
 * Bearer tokens and roles. A token is "bbx_" + 32 random bytes (base64url); the catalog
 * keeps only its SHA-256. The Dispatcher (api/dispatch.ts) authenticates every call:
 *   1. read `authorization: Bearer <token>` (gRPC metadata, or the dashboard's session),
 *   2. look the hash up in the catalog (UNAUTHENTICATED when absent or unknown),
 *   3. then compares the role with the route-table entry's (api/routes.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
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
  if (role !== 'admin' && role !== 'operator' && role !== 'viewer') {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad role "${role}": want viewer, operator or admin`);
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

export class Authenticator {
  private readonly lastTouch = new Map<number, number>();
  constructor(private readonly catalog: Catalog) {}

  /** Who calls: the token's name and role (UNAUTHENTICATED when there is no known token). */
  async authenticate(cred: { authorization: string; peer?: string }): Promise<Caller> {
    const m = /^Bearer\s+(\S+)$/i.exec(cred.authorization);
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
