/**
 * How the CLI reaches the controller. Settings come from, strongest first: flags
 * (--controller, --ca, --token), environment (BOXBACK_CONTROLLER, BOXBACK_CA,
 * BOXBACK_TOKEN), then cli.yaml (--config FILE, $BOXBACK_CONFIG, or
 * ~/.config/boxback/cli.yaml when it exists). Relative paths in cli.yaml are resolved
 * from its directory.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { z } from 'zod';
import {
  BoxbackError,
  channelOptions,
  loadServices,
  loadYamlFile,
  resolveFrom,
  serverStream,
  tokenClientCredentials,
  unary,
  type wire,
} from '@boxback/common';
import { tidyError } from '../grpc-errors.js';

async function* tidyStream<T>(g: AsyncGenerator<T>): AsyncGenerator<T> {
  try {
    yield* g;
  } catch (err) {
    throw tidyError(err);
  }
}

const cliConfigSchema = z
  .object({
    /** Controller address, host:port. */
    controller: z
      .string()
      .regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'want host:port')
      .optional(),
    /** CA certificate that signed the controller's certificate. */
    ca: z.string().min(1).optional(),
    /** Bearer token (`boxback tokens create`). */
    token: z.string().min(1).optional(),
    /** Name in the controller's certificate when it differs from the address's host. */
    serverName: z.string().min(1).optional(),
  })
  .strict();

export interface GlobalOptions {
  config?: string;
  controller?: string;
  ca?: string;
  token?: string;
  json?: boolean;
}

export interface Connection {
  controller: string;
  ca: string;
  token?: string;
  serverName?: string;
}

export function resolveConnection(g: GlobalOptions): Connection {
  // an empty value (flag or environment) counts as unset
  const env = (k: string) => process.env[k] || undefined;
  const defaultFile = path.join(os.homedir(), '.config', 'boxback', 'cli.yaml');
  const file = g.config || env('BOXBACK_CONFIG') || (existsSync(defaultFile) ? defaultFile : undefined);
  const fromFile = file ? loadYamlFile(cliConfigSchema, file, 'BOXBACK_ERR_CONFIG_INVALID') : {};
  const caFromFile = file && fromFile.ca ? resolveFrom(file, fromFile.ca) : undefined;
  const controller = g.controller || env('BOXBACK_CONTROLLER') || fromFile.controller;
  const ca = g.ca || env('BOXBACK_CA') || caFromFile;
  const token = g.token || env('BOXBACK_TOKEN') || fromFile.token;
  if (!controller) {
    throw new BoxbackError(
      'BOXBACK_ERR_USAGE',
      'no controller address: pass --controller HOST:PORT, set BOXBACK_CONTROLLER, or `controller:` in cli.yaml (--config)',
    );
  }
  if (!ca) throw new BoxbackError('BOXBACK_ERR_USAGE', 'no CA certificate: pass --ca FILE, set BOXBACK_CA, or `ca:` in cli.yaml');
  return { controller, ca, token, serverName: fromFile.serverName };
}

type Rpcs = wire.ControllerServiceRpcs;
type Rpc = keyof Rpcs;

/**
 * The HTTP/2 receive window this client grants the controller (the stream's and the
 * connection's). With the default 64 KiB, a status answer of 1000 hosts (~0.5 MB) needed ~8
 * WINDOW_UPDATE round trips, each waiting for a turn of both event loops: on a busy controller
 * that multiplied its event-loop delay by 8. 16 MiB is a limit, not memory allocated.
 */
const RECEIVE_WINDOW = 16 * 1024 * 1024;

/** A ControllerService client with unary and streaming helpers. */
export class ControllerClient {
  private readonly client: grpc.Client;
  private readonly what: string;

  constructor(conn: Connection) {
    const { ControllerService } = loadServices();
    const opts = {
      ...(conn.serverName ? channelOptions(conn.serverName) : { 'grpc.max_receive_message_length': 256 * 1024 * 1024 }),
      'grpc-node.flow_control_window': RECEIVE_WINDOW,
    };
    this.client = new ControllerService(conn.controller, tokenClientCredentials(conn.ca, conn.token), opts);
    this.what = `the controller at ${conn.controller}`;
  }

  /** Call an RPC; request and response are the generated wire types (unset request fields take their defaults). */
  call<N extends Rpc>(method: N, req: Partial<Rpcs[N]['req']> = {}, deadlineMs = 60_000): Promise<Rpcs[N]['res']> {
    return unary<object, Rpcs[N]['res']>(this.client, method, req, { deadlineMs, what: this.what }).catch((err) =>
      Promise.reject(tidyError(err)),
    );
  }

  /** Follow a server-streaming RPC. */
  stream<N extends Rpc>(method: N, req: Partial<Rpcs[N]['req']>, signal?: AbortSignal): AsyncGenerator<Rpcs[N]['res']> {
    return tidyStream(serverStream<object, Rpcs[N]['res']>(this.client, method, req, { what: this.what, signal }));
  }

  close(): void {
    this.client.close();
  }
}
