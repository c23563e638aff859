/**
 * Loading the gRPC contracts in proto/boxback/v1 with @grpc/proto-loader.
 * Fields are camelCased (keepCase: false), int64 come back as JS numbers,
 * and default values are filled in, so a missing field is 0, "" or false.
 *
 * protobufjs decodes int64 straight to numbers, without long.js: with it (found in
 * node_modules, not in a bundle), every int64 of a message became a Long object that
 * toObject then turned into a number, and decoding a 1000-host status answer (~20 int64 per
 * host) took 2.3x the CPU (12.7 -> 5.4 ms). `longs: Number` gave numbers either way; values
 * past 2^53 (none here: milliseconds, bytes, counts) lose precision either way.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { plainDecoder } from './plain-decoder.js';
import { plainEncoder, type PlainEncoder } from './plain-encoder.js';

export { plainEncoder, type PlainEncoder } from './plain-encoder.js';

/** int64 as numbers in protobufjs' reader and writer (see above); before any message type is used. */
function withoutLongJs(): void {
  if (!protobuf.util.Long) return;
  protobuf.util.Long = undefined as unknown as typeof protobuf.util.Long;
  protobuf.configure();
}

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/**
 * Where the .proto files are: $BOXBACK_PROTO_DIR, else `proto/` beside a bundled file,
 * else the repository's `proto/` (from packages/common/dist or src).
 */
export function protoDir(): string {
  const env = process.env.BOXBACK_PROTO_DIR;
  if (env) return env;
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.join(here, 'proto'), path.resolve(here, '../../../proto'), path.resolve(here, '../proto')];
  for (const c of candidates) if (existsSync(path.join(c, 'boxback/v1/agent.proto'))) return c;
  return candidates[1];
}

export interface BoxbackServices {
  AgentService: grpc.ServiceClientConstructor;
  ControllerService: grpc.ServiceClientConstructor;
}

let cached: BoxbackServices | undefined;

const PROTO_FILES = ['boxback/v1/agent.proto', 'boxback/v1/controller.proto'];

/** The contracts' types, loaded by protobufjs as proto-loader loads them (plain codecs, messageEncoder). */
let typesRoot: protobuf.Root | undefined;

/**
 * Each method's answer decoded in one pass into the objects proto-loader would give
 * (plain-decoder.ts) and encoded in one pass into the bytes proto-loader would give
 * (plain-encoder.ts), where the answer's type allows it; before the client constructors are
 * made, since they capture the deserializers.
 */
function withPlainCodecs(def: protoLoader.PackageDefinition, dir: string): void {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(dir, target);
  root.loadSync(PROTO_FILES, { keepCase: LOADER_OPTIONS.keepCase });
  root.resolveAll();
  typesRoot = root;
  for (const name of ['AgentService', 'ControllerService']) {
    const service = root.lookupService(`boxback.v1.${name}`);
    const methods = def[`boxback.v1.${name}`] as protoLoader.ServiceDefinition;
    for (const [m, method] of Object.entries(service.methods)) {
      const type = method.resolvedResponseType;
      if (!methods[m] || !type) continue;
      const one = methods[m] as { responseDeserialize: (b: Buffer) => unknown; responseSerialize: (v: unknown) => Buffer };
      const decode = plainDecoder(type);
      if (decode) one.responseDeserialize = decode;
      const enc = plainEncoder(type);
      if (enc) one.responseSerialize = (v) => enc.encode(v as object);
    }
  }
}

/**
 * The one-pass encoder of a message type of the contracts (`boxback.v1.HostStatus`), or
 * undefined when plain-encoder.ts does not encode its field kinds: the controller encodes a
 * status answer's host entries with it (status-encoding.ts).
 */
export function messageEncoder(fullName: string): PlainEncoder | undefined {
  loadServices();
  return plainEncoder(typesRoot!.lookupType(fullName));
}

export function loadServices(): BoxbackServices {
  if (cached) return cached;
  withoutLongJs();
  const dir = protoDir();
  const def = protoLoader.loadSync(PROTO_FILES, { ...LOADER_OPTIONS, includeDirs: [dir] });
  withPlainCodecs(def, dir);
  const pkg = grpc.loadPackageDefinition(def) as unknown as { boxback: { v1: BoxbackServices } };
  cached = pkg.boxback.v1;
  return cached;
}
