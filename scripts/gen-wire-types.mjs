// Regenerate packages/common/src/wire.ts, the TypeScript shapes of every message and RPC in
// proto/boxback/v1, as @grpc/proto-loader delivers them (camelCase fields, int64 as number,
// defaults filled in, an unset message field is null, a oneof names its set field).
// Run after changing a .proto: `node scripts/gen-wire-types.mjs`; test/unit/wire-types.test.ts
// fails while the file is out of date.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import protoLoader from '@grpc/proto-loader';
import * as prettier from 'prettier';

const PROTO_DIR = fileURLToPath(new URL('../proto', import.meta.url));
const FILES = ['boxback/v1/agent.proto', 'boxback/v1/controller.proto'];
const OUT = new URL('../packages/common/src/wire.ts', import.meta.url);
const SCALARS = {
  TYPE_STRING: 'string',
  TYPE_BOOL: 'boolean',
  TYPE_BYTES: 'Buffer',
  TYPE_DOUBLE: 'number',
  TYPE_FLOAT: 'number',
  TYPE_INT32: 'number',
  TYPE_INT64: 'number',
  TYPE_UINT32: 'number',
  TYPE_UINT64: 'number',
  TYPE_SINT32: 'number',
  TYPE_SINT64: 'number',
  TYPE_FIXED32: 'number',
  TYPE_FIXED64: 'number',
  TYPE_SFIXED32: 'number',
  TYPE_SFIXED64: 'number',
  TYPE_ENUM: 'string',
};

/** protobufjs' camelCase, as proto-loader applies it with keepCase: false. */
const camel = (s) => s.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
const short = (typeName) => typeName.replace(/^\.?boxback\.v1\./, '');

function fieldType(f) {
  const t = f.type === 'TYPE_MESSAGE' ? short(f.typeName) : SCALARS[f.type];
  if (!t) throw new Error(`no TypeScript type for ${f.name}: ${f.type}`);
  if (f.label === 'LABEL_REPEATED') return `${t}[]`;
  return f.type === 'TYPE_MESSAGE' ? `${t} | null` : t;
}

function messageText(name, d) {
  const lines = d.field.map((f) => {
    // a oneof member is absent unless set (proto-loader fills defaults only outside oneofs)
    const opt = f.oneofIndex !== undefined && d.oneofDecl.length ? '?' : '';
    return `  ${camel(f.name)}${opt}: ${fieldType(f)};`;
  });
  for (const [i, o] of d.oneofDecl.entries()) {
    const members = d.field.filter((f) => f.oneofIndex === i).map((f) => `'${camel(f.name)}'`);
    lines.push(`  ${camel(o.name)}?: ${members.join(' | ')};`);
  }
  return `export interface ${name} {\n${lines.join('\n')}\n}\n`;
}

function serviceText(name, methods) {
  const lines = Object.entries(methods).map(([m, s]) => {
    const kind = s.responseStream ? 'stream' : 'unary';
    return `  ${m}: { req: ${s.requestType.type.name}; res: ${s.responseType.type.name}; kind: '${kind}' };`;
  });
  return `/** Every RPC of ${name}: request, response (one message, or each message of a stream). */\nexport interface ${name}Rpcs {\n${lines.join('\n')}\n}\n`;
}

/** The text of wire.ts, formatted as prettier formats the repository. */
export async function renderWireTypes() {
  const def = protoLoader.loadSync(FILES, {
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [PROTO_DIR],
  });
  const parts = [
    `/**
 * GENERATED from proto/boxback/v1 by scripts/gen-wire-types.mjs: do not edit.
 * The messages as @grpc/proto-loader delivers them: camelCase, int64 as number, every field
 * present (an unset message field is null), a oneof names its set member.
 */
/* eslint-disable */
`,
  ];
  const entries = Object.entries(def).sort(([a], [b]) => a.localeCompare(b));
  for (const [full, d] of entries) {
    const name = short(full);
    if (d.format === 'Protocol Buffer 3 DescriptorProto') parts.push(messageText(name, d.type));
    else if (!d.format) parts.push(serviceText(name, d));
  }
  const file = fileURLToPath(OUT);
  return prettier.format(parts.join('\n'), { ...(await prettier.resolveConfig(file)), filepath: file });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(OUT, await renderWireTypes());
  console.log('wrote packages/common/src/wire.ts');
}
