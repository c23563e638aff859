/**
 * The dashboard: an HTTPS server (the controller's own certificate) for people and scripts.
 * Per request:
 *   1. /assets/*: the bundled script and styles (built by scripts/build-dashboard.mjs; no CDN),
 *   2. /login (GET form, POST token -> session cookie), /logout (POST, CSRF-checked),
 *   3. /api/v1/<rpc>: the HTTP adapter (api/http-adapter.ts) over the route table; with the
 *      session cookie every POST needs the session's CSRF token (x-csrf-token), a refusal is
 *      403 and audited,
 *   4. /events: server-sent events with the running jobs' progress (one timer, every client),
 *   5. pages (fleet, host, backup, job, audit), rendered on the server from route-table calls
 *      under the session's token; no session (or an expired one) goes back to sign-in.
 */
import { readFileSync, existsSync } from 'node:fs';
import https from 'node:https';
import type http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BoxbackError, asBoxbackError, type Logger } from '@boxback/common';
import type { Credentials, Dispatcher } from '../api/dispatch.js';
import { decodeRequest, matchApi, sendError, serveApi } from '../api/http-adapter.js';
import { ROUTES, roleAllows, type RpcName } from '../api/routes.js';
import { type PageCtx } from './html.js';
import { auditPage, errorPage, fleetPage, loginPage } from './pages/fleet.js';
import { backupPage, jobPage } from './pages/backup.js';
import { hostPage } from './pages/host.js';
import { csrfMatches, Sessions, type Session } from './sessions.js';

export interface DashboardOptions {
  listen: string;
  tls: { cert: string; key: string };
  sessionSeconds: number;
  defaultRpoSeconds: number;
}

const ASSET_TYPES: Record<string, string> = { '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'strict-transport-security': 'max-age=31536000',
};

/** Where the bundled assets are: $BOXBACK_ASSETS_DIR, beside a bundle, or packages/controller/dist/assets. */
function assetsDir(): string {
  if (process.env.BOXBACK_ASSETS_DIR) return process.env.BOXBACK_ASSETS_DIR;
  const here = path.dirname(fileURLToPath(import.meta.url));
  // a bundle (assets/ beside it), dist/dashboard/ (dist/assets), or src/dashboard/ under tests (dist/assets)
  const candidates = [path.join(here, 'assets'), path.resolve(here, '../assets'), path.resolve(here, '../../dist/assets')];
  return candidates.find((c) => existsSync(path.join(c, 'app.js'))) ?? candidates[1];
}

export class Dashboard {
  private server?: https.Server;
  private readonly sessions: Sessions;
  private readonly assets = new Map<string, Buffer>();
  private readonly feeds = new Set<{ res: http.ServerResponse; session: Session }>();
  private feedTimer?: NodeJS.Timeout;
  private lastFeed = '';
  port = 0;

  constructor(
    private readonly d: Dispatcher,
    private readonly o: DashboardOptions,
    private readonly log: Logger,
  ) {
    this.sessions = new Sessions(o.sessionSeconds * 1000);
  }

  async start(): Promise<number> {
    const dir = assetsDir();
    for (const f of ['app.js', 'app.css']) {
      const p = path.join(dir, f);
      if (!existsSync(p))
        throw new BoxbackError('BOXBACK_ERR_CONFIG_INVALID', `http.listen: the dashboard's ${f} is missing from ${dir} (npm run build)`);
      this.assets.set(f, readFileSync(p));
    }
    this.server = https.createServer({ cert: readFileSync(this.o.tls.cert), key: readFileSync(this.o.tls.key) }, (req, res) => {
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
      this.handle(req, res).catch((err: unknown) => {
        this.log.error({ err }, 'dashboard request failed');
        sendError(res, err);
      });
    });
    const [host, port] = splitListen(this.o.listen);
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, host, () => resolve());
    });
    this.port = (this.server.address() as { port: number }).port;
    return this.port;
  }

  async close(): Promise<void> {
    clearInterval(this.feedTimer);
    for (const f of this.feeds) f.res.end();
    this.feeds.clear();
    if (!this.server) return;
    await new Promise<void>((resolve) => {
      this.server!.close(() => resolve());
      this.server!.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://dashboard.invalid');
    const method = req.method ?? 'GET';
    if (url.pathname.startsWith('/assets/')) return this.asset(url.pathname.slice(8), res);
    if (url.pathname === '/login') return method === 'POST' ? this.signIn(req, res) : this.html(res, 200, loginPage(loginMessage(url)));
    const bearer = req.headers.authorization;
    const session = this.sessions.fromCookie(req.headers.cookie);
    const api = matchApi(method, url.pathname);
    if (api) {
      if (bearer) return serveApi(this.d, api, { authorization: bearer, peer: peerOf(req), via: 'http' }, req, res, url);
      if (!session) return sendError(res, new BoxbackError('BOXBACK_ERR_UNAUTHENTICATED', 'no session: sign in again'));
      if (api.kind === 'unary' && !(await this.csrfOk(req, session, api.name))) {
        return sendError(res, new BoxbackError('BOXBACK_ERR_PERMISSION_DENIED', 'missing or wrong CSRF token: reload the page'));
      }
      return serveApi(this.d, api, this.cred(req, session), req, res, url);
    }
    if (!session) return redirect(res, req.headers.cookie?.includes('boxback_session=') ? '/login?expired=1' : '/login');
    if (url.pathname === '/logout' && method === 'POST') return this.signOut(req, res, session);
    if (url.pathname === '/events' && method === 'GET') return this.feed(res, session);
    if (method !== 'GET') return sendError(res, new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no ${method} ${url.pathname}`));
    return this.page(url, req, res, session);
  }

  private cred(req: http.IncomingMessage, s: Session): Credentials {
    return { authorization: `Bearer ${s.token}`, peer: peerOf(req), via: 'http' };
  }

  private async page(url: URL, req: http.IncomingMessage, res: http.ServerResponse, session: Session): Promise<void> {
    const p: PageCtx = {
      session,
      url,
      defaultRpoSeconds: this.o.defaultRpoSeconds,
      call: async (name, body) => {
        const route = ROUTES[name as RpcName];
        return this.d.unary(route, this.cred(req, session), decodeRequest(route, body), new AbortController().signal) as never;
      },
    };
    const [, kind, rest] = /^\/(hosts|backups|jobs|audit)?\/?(.*)$/.exec(url.pathname) ?? [];
    const arg = decodeURIComponent(rest ?? '');
    try {
      let out: string | Buffer = '';
      if (!kind && !arg) out = await fleetPage(p);
      else if (kind === 'hosts' && arg) out = await hostPage(p, arg);
      else if (kind === 'backups' && arg) out = await backupPage(p, arg);
      else if (kind === 'jobs' && arg) out = await jobPage(p, arg);
      else if (kind === 'audit' && !arg) out = await auditPage(p);
      if (!out) throw new BoxbackError('BOXBACK_ERR_NOT_FOUND', `nothing at ${url.pathname}`);
      this.html(res, 200, out);
    } catch (err) {
      const be = asBoxbackError(err);
      if (be.code === 'BOXBACK_ERR_UNAUTHENTICATED') return redirect(res, '/login?expired=1');
      this.html(res, be.httpStatus, errorPage(p, be.httpStatus, be.code, be.message));
    }
  }

  /** Same-origin and the session's CSRF token; a refusal is audited under the session's name. */
  private async csrfOk(req: http.IncomingMessage, s: Session, action: string): Promise<boolean> {
    const header = req.headers['x-csrf-token'];
    const ok = csrfMatches(s, Array.isArray(header) ? header[0] : header) && sameOrigin(req);
    if (!ok)
      await this.d.record(s.caller.name, action, '', 'BOXBACK_ERR_PERMISSION_DENIED', 'refused: missing or wrong CSRF token (dashboard)');
    return ok;
  }

  private async signIn(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const form = new URLSearchParams(await readText(req));
    const token = (form.get('token') ?? '').trim();
    if (!sameOrigin(req))
      return this.html(res, 403, loginPage('The sign-in came from another site; open the dashboard and sign in there.'));
    try {
      const caller = await this.d.authenticate({ authorization: `Bearer ${token}`, peer: peerOf(req), via: 'http' });
      const s = this.sessions.create(token, caller);
      await this.d.record(caller.name, 'DashboardSignIn', peerOf(req), 'ok', `${caller.role}, session ${this.o.sessionSeconds}s`);
      res.writeHead(303, { location: '/', 'set-cookie': this.sessions.cookie(s) });
      res.end();
    } catch (err) {
      const be = asBoxbackError(err);
      await this.d.record('(unauthenticated)', 'DashboardSignIn', peerOf(req), be.code);
      this.html(res, be.httpStatus, loginPage(`Sign-in refused: ${be.message}`));
    }
  }

  private async signOut(req: http.IncomingMessage, res: http.ServerResponse, s: Session): Promise<void> {
    const form = new URLSearchParams(await readText(req));
    if (!csrfMatches(s, form.get('csrf') ?? undefined))
      return sendError(res, new BoxbackError('BOXBACK_ERR_PERMISSION_DENIED', 'missing or wrong CSRF token'));
    this.sessions.drop(s.id);
    await this.d.record(s.caller.name, 'DashboardSignOut', peerOf(req), 'ok');
    res.writeHead(303, { location: '/login', 'set-cookie': this.sessions.cookie(undefined) });
    res.end();
  }

  private asset(name: string, res: http.ServerResponse): void {
    const body = this.assets.get(name);
    if (!body) return sendError(res, new BoxbackError('BOXBACK_ERR_NOT_FOUND', `no asset ${name}`));
    res.writeHead(200, { 'content-type': ASSET_TYPES[path.extname(name)] ?? 'application/octet-stream', 'cache-control': 'no-cache' });
    res.end(body);
  }

  private html(res: http.ServerResponse, status: number, body: string | Buffer): void {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(body);
  }

  /** /events: running jobs' progress for the fleet and host pages (viewer, as GetStatus). */
  private feed(res: http.ServerResponse, session: Session): void {
    if (!roleAllows(session.caller.role, ROUTES.GetStatus.role))
      return sendError(res, new BoxbackError('BOXBACK_ERR_PERMISSION_DENIED', 'no'));
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store' });
    res.write(`data: ${this.snapshot()}\n\n`);
    const f = { res, session };
    this.feeds.add(f);
    res.on('close', () => this.feeds.delete(f));
    this.feedTimer ??= setInterval(() => this.tick(), 1000);
    this.feedTimer.unref();
  }

  private snapshot(): string {
    const jobs = this.d.ctx.jobs.activeJobs().map((a) => ({
      id: a.row.id,
      host: a.row.host,
      kind: a.row.kind,
      state: a.row.state,
      phase: a.progress?.phase ?? a.row.phase,
      bytesDone: a.progress?.bytesDone ?? 0,
      bytesTotal: a.progress?.bytesTotal ?? 0,
    }));
    return JSON.stringify({ jobs });
  }

  private tick(): void {
    if (!this.feeds.size) return;
    const snap = this.snapshot();
    const now = Date.now();
    for (const f of this.feeds) {
      if (f.session.expiresAtMs <= now) {
        f.res.end('event: expired\ndata: {}\n\n');
        this.feeds.delete(f);
      } else if (snap !== this.lastFeed) f.res.write(`data: ${snap}\n\n`);
    }
    this.lastFeed = snap;
  }
}

function splitListen(listen: string): [string, number] {
  const i = listen.lastIndexOf(':');
  return [listen.slice(0, i).replace(/^\[|\]$/g, ''), Number(listen.slice(i + 1))];
}

function peerOf(req: http.IncomingMessage): string {
  return `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? 0}`;
}

/** A browser's POST names its origin; it must be this dashboard (scripts send none). */
function sameOrigin(req: http.IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (!origin) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

function loginMessage(url: URL): string {
  return url.searchParams.has('expired') ? 'Your session has expired; sign in again.' : '';
}

function redirect(res: http.ServerResponse, to: string): void {
  res.writeHead(303, { location: to });
  res.end();
}

async function readText(req: http.IncomingMessage): Promise<string> {
  let s = '';
  for await (const c of req as AsyncIterable<Buffer>) {
    s += c.toString('utf8');
    if (s.length > 64 * 1024) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', 'form over 64 KiB');
  }
  return s;
}
