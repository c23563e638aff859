/**
 * Bearer tokens and roles. A token is "bbx_" + 32 random bytes (base64url); the catalog
 * keeps only its SHA-256. The Dispatcher (api/dispatch.ts) authenticates every call:
 *   1. read `authorization: Bearer <token>` (gRPC metadata, or the dashboard's session),
 *   2. look the hash up in the catalog (UNAUTHENTICATED when absent, unknown, revoked or
 *      expired: the message says which),
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

/**
 * Create a token in the catalog; returns the token (shown once) and its row. `expiresInSeconds`
 * (0: never) makes it stop working that long from now.
 */
export async function createToken(
  catalog: Catalog,
  name: string,
  role: string,
  expiresInSeconds = 0,
): Promise<{ token: string; row: TokenRow }> {
  if (!Number.isInteger(expiresInSeconds) || expiresInSeconds < 0) {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad expiry "${expiresInSeconds}": want a positive duration such as 90d`);
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$/.test(name)) {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `bad token name "${name}": use letters, digits, '.', '_', '@' or '-'`);
  }
  const token = newToken();
  const now = Date.now();
  const expiresAtMs = expiresInSeconds ? now + expiresInSeconds * 1000 : 0;
  const row = await catalog.createToken({ name, role: checkRole(role), hash: hashToken(token), createdAtMs: now, expiresAtMs });
  return { token, row };
}

/** Revoke a token by name or ID (NOT_FOUND when there is none); calls with it fail from now on. */
export async function revokeToken(catalog: Catalog, nameOrId: string): Promise<TokenRow> {
  const row = nameOrId ? await catalog.revokeToken(nameOrId, Date.now()) : undefined;
  if (!row) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no token named or numbered "${nameOrId}" (see \`boxback tokens list\`)`);
  return row;
}

const isoMinute = (ms: number) => new Date(ms).toISOString().slice(0, 16).replace('T', ' ') + 'Z';

/** UNAUTHENTICATED when a token was revoked or has expired, saying which and when. */
export function checkTokenUsable(row: TokenRow, now = Date.now()): void {
  if (row.revokedAtMs) {
    throw new BoxbackError(
      'BOXBACK_ERR_UNAUTHENTICATED',
      `token "${row.name}" was revoked at ${isoMinute(row.revokedAtMs)}; ask an admin for a new one (\`boxback tokens create\`)`,
    );
  }
  if (row.expiresAtMs && now >= row.expiresAtMs) {
    throw new BoxbackError(
      'BOXBACK_ERR_UNAUTHENTICATED',
      `token "${row.name}" expired at ${isoMinute(row.expiresAtMs)}; ask an admin for a new one (\`boxback tokens create --expires 90d\`)`,
    );
  }
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
    checkTokenUsable(row, now);
    if (now - (this.lastTouch.get(row.id) ?? 0) > 60_000) {
      this.lastTouch.set(row.id, now);
      await this.catalog.touchToken(row.id, now);
    }
    return { name: row.name, role: row.role };
  }
}
