/**
 * Single-pass encoders for answers: plain objects straight into protobuf bytes, the bytes
 * @grpc/proto-loader's serializer gives (protobufjs' `fromObject`, then `encode`), without its
 * message instances, its writer's list of operations and its forks.
 *
 * Why: the controller encodes each new entry of the fleet's status answer (1000 hosts: 1000 new
 * entries when a fleet backup starts, then one per job that starts, progresses or ends) and each
 * job of CreateBackup's answer. proto-loader's path made ~7 KB of short-lived objects per entry
 * (a message per nested object, an operation object per field, a fork per nested message, a
 * pooled buffer then copied): ~7 MB in the first second of a fleet backup, collected on the
 * event loop that status calls wait on (docs/design/fleet-scale.md).
 *
 * An encoder is made per message type from the same .proto files: `size` computes the message's
 * length, `write` writes it into a buffer of that length (a nested message's length is computed
 * again where its tag is written: nesting here is 3 deep at most). The bytes are protobufjs':
 * fields by number; a field is written whenever its value is not null or undefined, defaults
 * included (protobufjs writes an explicit "" or 0, proto3 or not); repeated fields element by
 * element (strings and messages; packed numbers are not handled); values converted as
 * `fromObject` converts them (String, Boolean, Number, `| 0`, `>>> 0`, int64 from a number, a
 * decimal string or { low, high }); int64 written from the low and high 32 bits as protobufjs'
 * LongBits does (negative values in 10 bytes). A nested message that is not an object, or a
 * repeated field that is not an array, throws the TypeError `fromObject` throws. Strings are
 * UTF-8 encoded by Buffer (protobufjs' own encoder differs only for lone surrogates).
 * The same field kinds as plain-decoder.ts are handled; a type using anything else, itself or
 * nested, gets no encoder (`plainEncoder` returns undefined) and keeps proto-loader's.
 * test/unit/plain-encoder.test.ts compares the bytes with proto-loader's for every answer type.
 */
import protobuf from 'protobufjs';
import { plainSupported } from './plain-decoder.js';

export interface PlainEncoder {
  /** The encoded length of `v`. */
  size(v: object): number;
  /** Write `v` (whose length is size(v)) into `buf` at `at`; returns the offset after it. */
  write(v: object, buf: Buffer, at: number): number;
  /** `v` encoded into a new buffer (proto-loader's serializer's contract). */
  encode(v: object): Buffer;
}

/** Bytes of a uint32's varint. */
function size32(v: number): number {
  return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5;
}

function write32(buf: Buffer, at: number, v: number): number {
  while (v > 127) {
    buf[at++] = (v & 127) | 128;
    v >>>= 7;
  }
  buf[at++] = v;
  return at;
}

/** The low and high 32 bits protobufjs' LongBits.fromNumber makes of a number (two's complement when negative). */
let lo = 0;
let hi = 0;
function bits(value: number): void {
  if (value === 0) {
    lo = hi = 0;
    return;
  }
  const sign = value < 0;
  if (sign) value = -value;
  lo = value >>> 0;
  hi = ((value - lo) / 4294967296) >>> 0;
  if (sign) {
    hi = ~hi >>> 0;
    lo = ~lo >>> 0;
    if (++lo > 4294967295) {
      lo = 0;
      if (++hi > 4294967295) hi = 0;
    }
  }
}

/**
 * An int64 field's value as `fromObject` makes it (a number; long.js is not loaded, proto.ts), or
 * undefined when it makes none (a value that is no number, string or object: the field is left out).
 */
function int64Of(d: unknown, unsigned: boolean): number | undefined {
  if (typeof d === 'string') return parseInt(d, 10);
  if (typeof d === 'number') return d;
  if (typeof d === 'object' && d !== null) {
    // LongBits(low >>> 0, high >>> 0).toNumber(unsigned)
    let l = (d as { low: number }).low >>> 0;
    let h = (d as { high: number }).high >>> 0;
    if (!unsigned && h >>> 31) {
      l = (~l + 1) >>> 0;
      h = ~h >>> 0;
      if (!l) h = (h + 1) >>> 0;
      return -(l + h * 4294967296);
    }
    return l + h * 4294967296;
  }
  return undefined;
}

function size64(value: number): number {
  bits(value);
  const part0 = lo;
  const part1 = ((lo >>> 28) | (hi << 4)) >>> 0;
  const part2 = hi >>> 24;
  return part2 === 0
    ? part1 === 0
      ? part0 < 16384
        ? part0 < 128
          ? 1
          : 2
        : part0 < 2097152
          ? 3
          : 4
      : part1 < 16384
        ? part1 < 128
          ? 5
          : 6
        : part1 < 2097152
          ? 7
          : 8
    : part2 < 128
      ? 9
      : 10;
}

function write64(buf: Buffer, at: number, value: number): number {
  bits(value);
  let l = lo;
  let h = hi;
  while (h) {
    buf[at++] = (l & 127) | 128;
    l = ((l >>> 7) | (h << 25)) >>> 0;
    h >>>= 7;
  }
  while (l > 127) {
    buf[at++] = (l & 127) | 128;
    l >>>= 7;
  }
  buf[at++] = l;
  return at;
}

/** int32 (after `| 0`): negative values as a 10-byte varint, as protobufjs writes them. */
const sizeInt32 = (v: number) => (v < 0 ? 10 : size32(v));
const writeInt32 = (buf: Buffer, at: number, v: number) => (v < 0 ? write64(buf, at, v) : write32(buf, at, v));

function notObject(v: unknown): boolean {
  return !v || typeof v !== 'object';
}

/** Helpers the generated code calls. */
const H = {
  size32,
  write32,
  size64,
  write64,
  sizeInt32,
  writeInt32,
  int64Of,
  notObject,
  str: (v: unknown) => (typeof v === 'string' ? v : String(v)),
};

interface Compiled {
  size: (v: Record<string, unknown>) => number;
  write: (v: Record<string, unknown>, buf: Buffer, at: number) => number;
}

const compiled = new WeakMap<protobuf.Type, Compiled>();

/** The size and write functions of one type (its nested types' made on first use). */
function compile(type: protobuf.Type): Compiled {
  let c = compiled.get(type);
  if (c) return c;
  const byId = [...type.fieldsArray].sort((a, b) => a.id - b.id);
  const nested: Compiled[] = [];
  const nestedIndex = new Map<protobuf.Type, number>();
  const sizeLines: string[] = [];
  const writeLines: string[] = [];
  for (const f of byId) {
    const key = JSON.stringify(f.name);
    const d = `v[${key}]`;
    const full = JSON.stringify(`${f.fullName.replace(/^\./, '')}: object expected`);
    if (f.repeated) {
      const arr = JSON.stringify(`${f.fullName.replace(/^\./, '')}: array expected`);
      const tag = ((f.id << 3) | 2) >>> 0;
      const tagSize = size32(tag);
      let elemSize: string;
      let elemWrite: string;
      if (f.resolvedType instanceof protobuf.Type) {
        const t = f.resolvedType;
        if (!nestedIndex.has(t)) nestedIndex.set(t, nestedIndex.size);
        const n = `n[${nestedIndex.get(t)}]`;
        elemSize = `if (H.notObject(e)) throw TypeError(${full}); l = ${n}.size(e); s += ${tagSize} + H.size32(l) + l;`;
        elemWrite = `if (H.notObject(e)) throw TypeError(${full}); at = H.write32(buf, at, ${tag}); at = H.write32(buf, at, ${n}.size(e)); at = ${n}.write(e, buf, at);`;
      } else {
        elemSize = `l = Buffer.byteLength(H.str(e)); s += ${tagSize} + H.size32(l) + l;`;
        elemWrite = `e = H.str(e); l = Buffer.byteLength(e); at = H.write32(buf, at, ${tag}); at = H.write32(buf, at, l); at += buf.utf8Write(e, at, l);`;
      }
      const loop = (body: string) =>
        `x = ${d}; if (x) { if (!Array.isArray(x)) throw TypeError(${arr}); for (let i = 0; i < x.length; i++) { e = x[i]; ${body} } }`;
      sizeLines.push(loop(elemSize));
      writeLines.push(loop(elemWrite));
      continue;
    }
    if (f.resolvedType instanceof protobuf.Type) {
      const t = f.resolvedType;
      if (!nestedIndex.has(t)) nestedIndex.set(t, nestedIndex.size);
      const n = `n[${nestedIndex.get(t)}]`;
      const tag = ((f.id << 3) | 2) >>> 0;
      sizeLines.push(
        `x = ${d}; if (x != null) { if (H.notObject(x)) throw TypeError(${full}); l = ${n}.size(x); s += ${size32(tag)} + H.size32(l) + l; }`,
      );
      writeLines.push(
        `x = ${d}; if (x != null) { if (H.notObject(x)) throw TypeError(${full}); at = H.write32(buf, at, ${tag}); at = H.write32(buf, at, ${n}.size(x)); at = ${n}.write(x, buf, at); }`,
      );
      continue;
    }
    const wire = f.type === 'string' ? 2 : f.type === 'double' ? 1 : 0;
    const tag = ((f.id << 3) | wire) >>> 0;
    const ts = size32(tag);
    const w = `at = H.write32(buf, at, ${tag}); `;
    let size: string;
    let write: string;
    switch (f.type) {
      case 'string':
        size = `l = Buffer.byteLength(H.str(x)); s += ${ts} + H.size32(l) + l;`;
        write = `x = H.str(x); l = Buffer.byteLength(x); ${w}at = H.write32(buf, at, l); at += buf.utf8Write(x, at, l);`;
        break;
      case 'bool':
        size = `s += ${ts + 1};`;
        write = `${w}buf[at++] = x ? 1 : 0;`;
        break;
      case 'double':
        size = `s += ${ts + 8};`;
        write = `${w}at = buf.writeDoubleLE(Number(x), at);`;
        break;
      case 'int32':
        size = `s += ${ts} + H.sizeInt32(x | 0);`;
        write = `${w}at = H.writeInt32(buf, at, x | 0);`;
        break;
      case 'uint32':
        size = `s += ${ts} + H.size32(x >>> 0);`;
        write = `${w}at = H.write32(buf, at, x >>> 0);`;
        break;
      default: {
        // int64, uint64
        const u = f.type === 'uint64';
        size = `x = H.int64Of(x, ${u}); if (x !== undefined) s += ${ts} + H.size64(x);`;
        write = `x = H.int64Of(x, ${u}); if (x !== undefined) { ${w}at = H.write64(buf, at, x); }`;
      }
    }
    sizeLines.push(`x = ${d}; if (x != null) { ${size} }`);
    writeLines.push(`x = ${d}; if (x != null) { ${write} }`);
  }
  const body = `return {
  size: function size_${type.name}(v) {
    let s = 0, x, e, l;
    ${sizeLines.join('\n    ')}
    return s;
  },
  write: function write_${type.name}(v, buf, at) {
    let x, e, l;
    ${writeLines.join('\n    ')}
    return at;
  },
};`;
  // code made from our own .proto files' field names and numbers only (as protobufjs itself does)
  c = new Function('n', 'H', body)(nested, H) as Compiled;
  compiled.set(type, c);
  for (const [t, i] of nestedIndex) nested[i] = compile(t);
  return c;
}

/**
 * An encoder for `type` whose bytes are proto-loader's serializer's for the options in proto.ts,
 * or undefined when the type uses a field kind this module does not encode.
 */
export function plainEncoder(type: protobuf.Type): PlainEncoder | undefined {
  if (!plainSupported(type)) return undefined;
  const c = compile(type);
  const top = JSON.stringify(`${type.fullName.replace(/^\./, '')}: object expected`);
  const check = (v: object) => {
    // fromObject checks only a type with fields (one without makes an empty message of anything)
    if (type.fieldsArray.length > 0 && H.notObject(v)) throw TypeError(JSON.parse(top) as string);
  };
  return {
    size: (v) => (check(v), c.size(v as Record<string, unknown>)),
    write: (v, buf, at) => (check(v), c.write(v as Record<string, unknown>, buf, at)),
    encode(v) {
      check(v);
      const buf = Buffer.allocUnsafe(c.size(v as Record<string, unknown>));
      const end = c.write(v as Record<string, unknown>, buf, 0);
      return end === buf.length ? buf : buf.subarray(0, end);
    },
  };
}
