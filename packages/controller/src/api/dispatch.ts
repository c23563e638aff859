/**
 * The Dispatcher runs one route-table entry (routes.ts) for any adapter, gRPC or HTTP, in
 * the same steps:
 *   1. refuse when shutting down (BOXBACK_ERR_SHUTTING_DOWN),
 *   2. authenticate the bearer token, check the entry's role,
 *   3. run the handler,
 *   4. for audited entries, append who/what/target/result/detail to the audit log
 *      (streams: once they start; a failed call: with its error code); a refused call
 *      (UNAUTHENTICATED, PERMISSION_DENIED) is recorded for every entry, reads too: without a
 *      known, usable token as "(unauthenticated)" with the peer address and the reason,
 *   5. hand the result (or each message of a stream) back; failures are BoxbackErrors
 *      that the adapter turns into a gRPC status or an HTTP status.
 * An adapter only translates transport to (credentials, request) and back.
 */
import { BoxbackError, asBoxbackError } from '@boxback/common';
import type { Authenticator, Caller } from '../auth.js';
import type { Ctx } from '../handlers.js';
import { roleAllows, type Route, type RouteRole, type StreamRoute, type UnaryRoute } from './routes.js';

/** What the transport tells about the caller. */
export interface Credentials {
  /** The `authorization` header or metadata ("Bearer bbx_..."), '' when none. */
  authorization: string;
  /** Peer address, for the log and the audit of refused calls. */
  peer: string;
  /** "grpc" or "http": which adapter took the call. */
  via: 'grpc' | 'http';
}

/**
 * The reason a call's AbortSignal gives when its caller went away (an adapter's cancel or close).
 * One object for every call: `abort()` with no reason makes a DOMException and captures its
 * stack, ~0.2-0.3 s of the controller's CPU over a 1000-host fleet backup (every watch stream
 * the CLI ends, every HTTP response closed).
 */
export const CALLER_GONE: Error = Object.freeze(new Error('the caller cancelled the call or closed the connection'));

const A_OR_AN = (role: RouteRole) => (role === 'admin' || role === 'operator' ? 'an' : 'a');

/** PERMISSION_DENIED unless the caller's role reaches the entry's. */
export function requireRouteRole(caller: Caller, route: Pick<Route, 'role' | 'what'>): void {
  if (roleAllows(caller.role, route.role)) return;
  throw new BoxbackError(
    'BOXBACK_ERR_PERMISSION_DENIED',
    `role ${caller.role} may not ${route.what}; ask an admin for ${A_OR_AN(route.role)} ${route.role} token`,
  );
}

export class Dispatcher {
  constructor(
    readonly ctx: Ctx,
    private readonly auth: Authenticator,
    private readonly closing: () => boolean,
  ) {}

  /** Step 1-2a: who calls (a refusal of their role is then audited under their name). */
  async authenticate(cred: Credentials): Promise<Caller> {
    if (this.closing()) throw new BoxbackError('BOXBACK_ERR_SHUTTING_DOWN', 'the controller is shutting down; retry in a moment');
    return this.auth.authenticate(cred);
  }

  /** Run a unary entry. */
  async unary(route: Route, cred: Credentials, req: unknown, signal: AbortSignal): Promise<unknown> {
    const r = route as unknown as UnaryRoute<'GetJob'>;
    let caller: Caller | undefined;
    try {
      caller = await this.authenticate(cred);
      requireRouteRole(caller, route);
      const res = await r.handler(req as never, { ctx: this.ctx, caller, signal, via: cred.via });
      if (r.audit) await this.audit(caller, route, req, 'ok', r.audit.detail?.(res as never) ?? '');
      return res;
    } catch (err) {
      throw await this.failed(route, caller, req, err, cred);
    }
  }

  /** Run a streaming entry; the caller iterates the messages. */
  async *stream(route: Route, cred: Credentials, req: unknown, signal: AbortSignal): AsyncGenerator<unknown> {
    const r = route as unknown as StreamRoute<'WatchJob'>;
    let caller: Caller | undefined;
    try {
      caller = await this.authenticate(cred);
      requireRouteRole(caller, route);
      if (r.audit) await this.audit(caller, route, req, 'ok');
      yield* r.handler(req as never, { ctx: this.ctx, caller, signal, via: cred.via });
    } catch (err) {
      throw await this.failed(route, caller, req, err, cred);
    }
  }

  private async failed(route: Route, caller: Caller | undefined, req: unknown, err: unknown, cred: Credentials): Promise<BoxbackError> {
    const be = asBoxbackError(err);
    const refused = be.code === 'BOXBACK_ERR_UNAUTHENTICATED' || be.code === 'BOXBACK_ERR_PERMISSION_DENIED';
    if (refused) await this.audit(caller, route, req, be.code, `${caller ? '' : `from ${cred.peer}: `}${be.message}`);
    else if (route.audit && caller) await this.audit(caller, route, req, be.code);
    if (be.code === 'BOXBACK_ERR_INTERNAL' || be.code === 'BOXBACK_ERR_CATALOG')
      this.ctx.log.error({ err, action: route.name }, 'call failed');
    else this.ctx.log.debug({ code: be.code, action: route.name, msg: be.message }, 'call refused');
    return be;
  }

  /** Append to the audit log; a failure to write it is logged, never hides the call's outcome. */
  async audit(caller: Caller | undefined, route: Route, req: unknown, result: string, detail = ''): Promise<void> {
    let target = '';
    try {
      target = route.audit ? route.audit.target(req as never) : '';
    } catch {
      // a malformed request (refused before its handler ran) still gets its entry
    }
    await this.record(caller?.name ?? '(unauthenticated)', route.name, target, result, detail);
  }

  /** One audit entry (also for what is not an RPC: dashboard sign-in and sign-out). */
  async record(who: string, action: string, target: string, result: string, detail = ''): Promise<void> {
    try {
      await this.ctx.catalog.appendAudit({ atMs: Date.now(), who, action, target, result, detail });
    } catch (err) {
      this.ctx.log.error({ err, action }, 'writing the audit log failed');
    }
  }
}
