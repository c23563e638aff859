// Both services' protos as the plain codecs' tests compare against them: proto-loader's own
// (de)serializers, untouched, as the reference, and the same files as a protobufjs Root.
import path from 'node:path';
import protobuf from 'protobufjs';
import * as protoLoader from '@grpc/proto-loader';
import { protoDir } from '@boxback/common';

export const PROTO_FILES = ['boxback/v1/agent.proto', 'boxback/v1/controller.proto'];
export const PROTO_OPTIONS = { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true };

export const reference = protoLoader.loadSync(PROTO_FILES, { ...PROTO_OPTIONS, includeDirs: [protoDir()] });
export const root = new protobuf.Root();
root.resolvePath = (_o, target) => path.join(protoDir(), target);
root.loadSync(PROTO_FILES, { keepCase: false });
root.resolveAll();
