/**
 * The HTTP adapter: every route-table entry (routes.ts) over HTTPS for the dashboard and for
 * scripts, run by the same Dispatcher as the gRPC adapter.
 *   - unary entries:  POST /api/v1/<name>, a JSON body -> 200 and the JSON response,
 *   - stream entries: GET  /api/v1/<name>?field=value -> server-sent events (one `message`
 *     event per message, an `error` event on failure), or the bytes as a download when the
 *     entry says so (ExportBackup).
 * The request is decoded exactly as gRPC decodes it: encoded and decoded with the rpc's own
 * proto message, so every field is present with its default and nothing unknown gets through.
 * A failure answers with the code's HTTP status (errors.ts) and {"code", "message"}.
 * Credentials: `authorization: Bearer` (scripts), or the dashboard's session (its token).
 */
import type http from 'node:http';
import { BoxbackError, asBoxbackError, loadServices } from '@boxback/common';
import { CALLER_GONE, type Credentials, type Dispatcher } from './dispatch.js';
import { answerJson } from '../status-encoding.js';
import { madeJson } from './answer-bytes.js';
import { routeFor, routeList, type Route } from './routes.js';

export const API_PREFIX = '/api/v1/';
const MAX_BODY = 1024 * 1024;

/** One HTTP route of the API: what the route-parity test lists. */
export interface HttpRoute {
  method: 'GET' | 'POST';
  path: string;
  route: Route;
}

/** Every HTTP route the adapter serves, one per route-table entry. */
export function httpRoutes(): HttpRoute[] {
  return routeList().map((route) => ({ method: route.kind === 'stream' ? 'GET' : 'POST', path: `${API_PREFIX}${route.name}`, route }));
}

/** The entry an HTTP method and path name, or undefined. */
export function matchApi(method: string, pathname: string): Route | undefined {
  if (!pathname.startsWith(API_PREFIX)) return undefined;
  const route = routeFor(pathname.slice(API_PREFIX.length));
  if (!route) return undefined;
  return (route.kind === 'stream' ? 'GET' : 'POST') === method ? route : undefined;
}

/**
 * JSON bytes per response object: an answer handed to many callers (GetStatus while jobs run,
 * status.ts) is encoded once, text and UTF-8, not once per request (1000 hosts: ~0.8 MB a time).
 */
const encoded = new WeakMap<object, Buffer>();
/** The calls whose answers are shared between callers (never changed once handed out). */
export const SHARED_ANSWERS = new Set<string>(['GetStatus']);
function jsonOf(body: unknown): Buffer {
  if (typeof body !== 'object' || body === null) return Buffer.from(JSON.stringify(body));
  let bytes = encoded.get(body);
  // a status answer from its hosts' pieces (status-encoding.ts), else as a whole
  if (bytes === undefined) encoded.set(body, (bytes = answerJson(body) ?? Buffer.from(JSON.stringify(body))));
  return bytes;
}

interface MethodDef {
  requestSerialize(v: unknown): Buffer;
  requestDeserialize(b: Buffer): unknown;
}

/** A JSON object as the rpc's request message, defaults filled in as gRPC delivers it. */
export function decodeRequest(route: Route, body: unknown): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `${route.name}: the body must be a JSON object`);
  const def = (loadServices().ControllerService.service as unknown as Record<string, MethodDef>)[route.name];
  try {
    return def.requestDeserialize(def.requestSerialize(body));
  } catch (err) {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `${route.name}: ${(err as Error).message}`);
  }
}

/** Query parameters as a request object ("true"/"false" as booleans, repeated keys as lists). */
export function queryObject(q: URLSearchParams): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of new Set(q.keys())) {
    const vals = q.getAll(k).map((v) => (v === 'true' ? true : v === 'false' ? false : v));
    out[k] = vals.length > 1 ? vals : vals[0];
  }
  return out;
}

export async function readJson(req: http.IncomingMessage): Promise<unknown> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY) throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', 'request body over 1 MiB');
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', 'the body is not valid JSON');
  }
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown, shared = false): void {
  // an answer's JSON made aside (answer-bytes.ts) is sent as made
  const text = shared ? jsonOf(body) : (madeJson(body) ?? JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(text);
}

export function sendError(res: http.ServerResponse, err: unknown): void {
  const be = asBoxbackError(err);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, be.httpStatus, { code: be.code, message: be.message });
}

/** Serve one API call: decode, dispatch, answer. */
export async function serveApi(
  d: Dispatcher,
  route: Route,
  cred: Credentials,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  url: URL,
): Promise<void> {
  const abort = new AbortController();
  res.on('close', () => abort.abort(CALLER_GONE));
  try {
    if (route.kind === 'unary') {
      const input = decodeRequest(route, await readJson(req));
      sendJson(res, 200, await d.unary(route, cred, input, abort.signal), SHARED_ANSWERS.has(route.name));
      return;
    }
    await serveStream(d, route, cred, decodeRequest(route, queryObject(url.searchParams)), res, abort.signal);
  } catch (err) {
    sendError(res, err);
  }
}

async function serveStream(d: Dispatcher, route: Route, cred: Credentials, input: unknown, res: http.ServerResponse, signal: AbortSignal) {
  const it = d.stream(route, cred, input, signal);
  // the first message (or the refusal) decides the status line
  const first = await it.next();
  const dl = route.download;
  if (dl) {
    res.writeHead(200, {
      'content-type': dl.contentType,
      'content-disposition': `attachment; filename="${encodeURIComponent(dl.fileName(input as never))}"`,
    });
  } else {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
  }
  const write = async (msg: unknown) => {
    const ok = dl ? res.write(dl.bytes(msg as never)) : res.write(`data: ${JSON.stringify(msg)}\n\n`);
    if (!ok) await new Promise((r) => res.once('drain', r));
  };
  try {
    if (!first.done) await write(first.value);
    for await (const msg of it) {
      if (signal.aborted) break;
      await write(msg);
    }
    if (!dl) res.write('event: end\ndata: {}\n\n');
  } catch (err) {
    const be = asBoxbackError(err);
    if (!dl) res.write(`event: error\ndata: ${JSON.stringify({ code: be.code, message: be.message })}\n\n`);
    else res.destroy();
  }
  res.end();
}
