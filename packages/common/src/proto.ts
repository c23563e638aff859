/**
 * Loading the gRPC contracts in proto/boxback/v1 with @grpc/proto-loader.
 * Fields are camelCased (keepCase: false), int64 come back as JS numbers,
 * and default values are filled in, so a missing field is 0, "" or false.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

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

export function loadServices(): BoxbackServices {
  if (cached) return cached;
  const dir = protoDir();
  const def = protoLoader.loadSync(['boxback/v1/agent.proto', 'boxback/v1/controller.proto'], {
    ...LOADER_OPTIONS,
    includeDirs: [dir],
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { boxback: { v1: BoxbackServices } };
  cached = pkg.boxback.v1;
  return cached;
}
