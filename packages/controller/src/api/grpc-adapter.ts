/**
 * The gRPC adapter: every route-table entry (routes.ts) as its ControllerService RPC.
 * It only moves the call's metadata and request into the Dispatcher and the result (or a
 * BoxbackError, as a gRPC status with its code in the trailer) back out.
 */
import type * as grpc from '@grpc/grpc-js';
import { toServiceError } from '@boxback/common';
import { CALLER_GONE, type Credentials, type Dispatcher } from './dispatch.js';
import { answerProto } from '../status-encoding.js';
import { madeProto } from './answer-bytes.js';
import { SHARED_ANSWERS } from './http-adapter.js';
import { routeList, type Route } from './routes.js';

function credentials(call: { metadata: grpc.Metadata; getPeer(): string }): Credentials {
  const raw = call.metadata.get('authorization')[0];
  return { authorization: typeof raw === 'string' ? raw : '', peer: call.getPeer(), via: 'grpc' };
}

function unaryHandler(d: Dispatcher, route: Route): grpc.handleUnaryCall<unknown, unknown> {
  return (call, cb) => {
    const abort = new AbortController();
    call.on('cancelled', () => abort.abort(CALLER_GONE));
    d.unary(route, credentials(call), call.request, abort.signal).then(
      (res) => cb(null, res),
      (err: unknown) => cb(toServiceError(err) as grpc.ServiceError),
    );
  };
}

function streamHandler(d: Dispatcher, route: Route): grpc.handleServerStreamingCall<unknown, unknown> {
  return (call) => {
    let cancelled = false;
    const abort = new AbortController();
    call.on('cancelled', () => {
      cancelled = true;
      abort.abort(CALLER_GONE);
    });
    void (async () => {
      const it = d.stream(route, credentials(call), call.request, abort.signal);
      try {
        for await (const msg of it) {
          if (cancelled) {
            await it.return(undefined);
            break;
          }
          if (!call.write(msg)) await new Promise((r) => call.once('drain', r));
        }
        call.end();
      } catch (err) {
        if (!cancelled) call.emit('error', toServiceError(err));
      }
    })();
  };
}

/**
 * The service definition with the answers of SHARED_ANSWERS encoded once per answer object: an answer
 * handed to many callers (GetStatus while jobs run, status.ts) is serialized once, not once
 * per call (1000 hosts: ~0.5 MB of protobuf a time, garbage the controller's RSS grew with).
 * An answer whose bytes were made aside (answer-bytes.ts: CreateBackup's jobs) is sent as made.
 */
export function memoizedDefinition(def: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, m] of Object.entries(def as Record<string, grpc.MethodDefinition<unknown, unknown>>)) {
    if (!SHARED_ANSWERS.has(name)) {
      const serialize = m.responseSerialize;
      out[name] = { ...m, responseSerialize: (v: unknown) => madeProto(v) ?? serialize(v) };
      continue;
    }
    const cache = new WeakMap<object, Buffer>();
    const serialize = m.responseSerialize;
    out[name] = {
      ...m,
      responseSerialize: (v: unknown) => {
        if (typeof v !== 'object' || v === null) return serialize(v);
        let b = cache.get(v);
        // a status answer from its hosts' pieces (status-encoding.ts), else as a whole
        if (!b) cache.set(v, (b = answerProto(v, serialize) ?? serialize(v)));
        return b;
      },
    };
  }
  return out as grpc.ServiceDefinition;
}

/** The ControllerService implementation: one handler per entry of the route table. */
export function grpcImplementation(d: Dispatcher): grpc.UntypedServiceImplementation {
  const imp: grpc.UntypedServiceImplementation = {};
  for (const route of routeList()) imp[route.name] = route.kind === 'stream' ? streamHandler(d, route) : unaryHandler(d, route);
  return imp;
}
