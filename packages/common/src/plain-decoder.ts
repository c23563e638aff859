/**
 * Single-pass decoders for answers: protobuf bytes straight into the plain objects that
 * @grpc/proto-loader's deserializer gives (camelCase keys, every default filled in, int64 as
 * numbers, message fields null when absent), without protobufjs' message instances and its
 * second pass (`toObject`) over them.
 *
 * Why: the CLI's and the bench's client decode the fleet's status answer (~350 KB, 1000 hosts)
 * once per call. proto-loader's decode + toObject took ~5 ms of a quiet core and made ~2000
 * objects that live only until toObject copied them; under load its tail was a third of a
 * status call's p99 (issue 14). One pass makes the final objects directly.
 *
 * A decoder is made per message type from the same .proto files, with the same reader
 * (protobufjs' Reader: varints, int64 as numbers without long.js, UTF-8 strings), and the
 * properties are created in proto-loader's order (repeated fields, then the others, each by
 * field number), so `JSON.stringify` of either is the same text. Only the field kinds our
 * contracts use in answers are handled: string, bool, int32, uint32, int64, uint64, double,
 * nested messages, repeated strings and messages. A type that uses anything else (oneof, map,
 * bytes, enum, packed numbers, ...), itself or in a nested type, gets no decoder here and keeps
 * proto-loader's (`plainDecoder` returns undefined). test/unit/plain-decoder.test.ts checks every
 * answer type of both services against proto-loader's deserializer.
 */
import protobuf from 'protobufjs';

type Decode = (r: protobuf.Reader, end: number) => Record<string, unknown>;

const SCALAR_READ: Record<string, { read: string; wire: number; zero: string }> = {
  string: { read: 'string', wire: 2, zero: '""' },
  bool: { read: 'bool', wire: 0, zero: 'false' },
  int32: { read: 'int32', wire: 0, zero: '0' },
  uint32: { read: 'uint32', wire: 0, zero: '0' },
  int64: { read: 'int64', wire: 0, zero: '0' },
  uint64: { read: 'uint64', wire: 0, zero: '0' },
  double: { read: 'double', wire: 1, zero: '0' },
};

/**
 * Whether `type` and every type it nests use only the kinds above (strings, bools, 32/64-bit
 * integers, doubles, nested messages, repeated strings or messages): what plainDecoder and
 * plain-encoder.ts handle.
 */
export function plainSupported(type: protobuf.Type, seen = new Set<protobuf.Type>()): boolean {
  if (seen.has(type)) return true;
  seen.add(type);
  if (type.oneofsArray.length > 0) return false;
  for (const f of type.fieldsArray) {
    f.resolve();
    if (f.map || f.required || f.delimited) return false;
    if (f.resolvedType instanceof protobuf.Type) {
      if (!plainSupported(f.resolvedType, seen)) return false;
    } else if (f.resolvedType)
      return false; // an enum
    else if (!SCALAR_READ[f.type]) return false;
    else if (f.repeated && f.type !== 'string') return false; // packed numbers: not needed yet
  }
  return true;
}

const decoders = new WeakMap<protobuf.Type, Decode>();

/** The decoder of one type (its nested types' decoders made on first use). */
function decoderOf(type: protobuf.Type): Decode {
  let d = decoders.get(type);
  if (d) return d;
  // proto-loader's (protobufjs' toObject's) property order: repeated fields first, then the rest, each by id
  const byId = [...type.fieldsArray].sort((a, b) => a.id - b.id);
  const ordered = [...byId.filter((f) => f.repeated), ...byId.filter((f) => !f.repeated)];
  const nested: Decode[] = [];
  const nestedIndex = new Map<protobuf.Type, number>();
  const key = (f: protobuf.Field) => JSON.stringify(f.name);
  const init = ordered.map((f) => `${key(f)}: ${f.repeated ? '[]' : f.resolvedType ? 'null' : SCALAR_READ[f.type].zero}`);
  const cases = byId.map((f) => {
    const o = `o[${key(f)}]`;
    if (f.resolvedType instanceof protobuf.Type) {
      const t = f.resolvedType;
      if (!nestedIndex.has(t)) nestedIndex.set(t, nestedIndex.size);
      const call = `n[${nestedIndex.get(t)}](r, r.uint32() + r.pos)`;
      return `case ${f.id}: if ((t & 7) !== 2) { r.skipType(t & 7); break; } ${f.repeated ? `${o}.push(${call})` : `${o} = ${call}`}; break;`;
    }
    const s = SCALAR_READ[f.type];
    const read = `r.${s.read}()`;
    return `case ${f.id}: if ((t & 7) !== ${s.wire}) { r.skipType(t & 7); break; } ${f.repeated ? `${o}.push(${read})` : `${o} = ${read}`}; break;`;
  });
  const body = `return function decode_${type.name}(r, end) {
  const o = { ${init.join(', ')} };
  while (r.pos < end) {
    const t = r.uint32();
    switch (t >>> 3) {
      ${cases.join('\n      ')}
      default: r.skipType(t & 7);
    }
  }
  return o;
}`;
  // code made from our own .proto files' field names and numbers only (as protobufjs itself does)
  d = new Function('n', body)(nested) as Decode;
  decoders.set(type, d);
  for (const [t, i] of nestedIndex) nested[i] = decoderOf(t);
  return d;
}

/**
 * A deserializer for `type` that gives what proto-loader's gives for the options in proto.ts,
 * or undefined when the type uses a field kind this module does not decode.
 */
export function plainDecoder(type: protobuf.Type): ((b: Buffer) => unknown) | undefined {
  if (!plainSupported(type)) return undefined;
  const decode = decoderOf(type);
  return (b: Buffer) => {
    const r = protobuf.Reader.create(b);
    return decode(r, r.len);
  };
}
