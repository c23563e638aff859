/**
 * Dashboard sessions. Signing in with an API token makes a session: a random id in a cookie
 * (HttpOnly, Secure, SameSite=Strict, Path=/, Max-Age) and, on the server only, the token,
 * its name and role, a CSRF token and the expiry. Every request re-authenticates the token
 * through the Dispatcher, so a revoked token ends its sessions at once. Sessions live in
 * memory: a controller restart signs everyone out (nothing to steal from disk).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Caller } from '../auth.js';

export const COOKIE = 'boxback_session';

export interface Session {
  id: string;
  token: string;
  caller: Caller;
  csrf: string;
  expiresAtMs: number;
}

export class Sessions {
  private readonly byId = new Map<string, Session>();
  constructor(private readonly ttlMs: number) {}

  create(token: string, caller: Caller, now = Date.now()): Session {
    this.sweep(now);
    const s: Session = {
      id: randomBytes(32).toString('base64url'),
      token,
      caller,
      csrf: randomBytes(24).toString('base64url'),
      expiresAtMs: now + this.ttlMs,
    };
    this.byId.set(s.id, s);
    return s;
  }

  /** The live session of a Cookie header, or undefined (an expired one is dropped). */
  fromCookie(header: string | undefined, now = Date.now()): Session | undefined {
    const id = cookieValue(header, COOKIE);
    if (!id) return undefined;
    const s = this.byId.get(id);
    if (!s) return undefined;
    if (s.expiresAtMs <= now) {
      this.byId.delete(id);
      return undefined;
    }
    return s;
  }

  drop(id: string): void {
    this.byId.delete(id);
  }

  /** Set-Cookie for a session (or for clearing it). */
  cookie(s: Session | undefined): string {
    // the browser keeps it an hour past the server-side expiry, so a late visit hears "expired"
    if (!s) return `${COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0`;
    return `${COOKIE}=${s.id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=${Math.floor(this.ttlMs / 1000) + 3600}`;
  }

  private sweep(now: number): void {
    for (const [id, s] of this.byId) if (s.expiresAtMs <= now) this.byId.delete(id);
  }
}

/** True when the request's CSRF token is the session's (constant time). */
export function csrfMatches(s: Session, given: string | undefined): boolean {
  if (!given) return false;
  const a = Buffer.from(s.csrf);
  const b = Buffer.from(given);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}
