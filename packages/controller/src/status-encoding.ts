/**
 * A status answer's bytes from per-host pieces kept between answers (docs/design/fleet-scale.md).
 * status.ts keeps one entry object per host while nothing it shows changes, and registers
 * each answer here with its entries and each host's `lastGoodAgeSeconds` (the one field that
 * moves every second for every host, so it is kept out of the entries). Encoding an answer:
 *   1. each entry's JSON text (without its closing brace) and its protobuf HostStatus bytes are
 *      made once per entry object and cached (WeakMap: dropped with the entry),
 *   2. per host the age is appended: `,"lastGoodAgeSeconds":N}` in JSON; in protobuf field 6
 *      after the entry's fields (a field may come in any order on the wire),
 *   3. the answer's other fields are encoded with no hosts and the pieces joined (protobuf:
 *      concatenated messages merge, repeated fields append in order).
 * During a fleet backup of 1000 hosts an answer then costs the hosts whose job, backup or
 * poll changed, not 1000 hosts' encoding (0.5-0.8 MB a second of garbage and CPU).
 */
import { messageEncoder, type PlainEncoder } from '@boxback/common';

/** The fields of a host's status (wire.HostStatus) except its age. */
export type HostEntry = object;

interface Parts {
  entries: readonly HostEntry[];
  ages: readonly number[];
}

const registered = new WeakMap<object, Parts>();
const jsonHead = new WeakMap<HostEntry, string>();
const protoBody = new WeakMap<HostEntry, Buffer>();

/** The answer `answer` (its `hosts` built from `entries` and `ages`, in order) is encoded from its parts. */
export function registerParts(answer: object, entries: readonly HostEntry[], ages: readonly number[]): void {
  registered.set(answer, { entries, ages });
}

/** The answer's JSON bytes from its parts, or undefined when it was not registered. */
export function answerJson(answer: object): Buffer | undefined {
  const parts = registered.get(answer);
  if (!parts) return undefined;
  const out: string[] = ['{"hosts":['];
  parts.entries.forEach((e, i) => {
    let head = jsonHead.get(e);
    if (head === undefined) {
      const text = JSON.stringify(e);
      jsonHead.set(e, (head = text.slice(0, -1)));
    }
    out.push(i ? ',' : '', head, ',"lastGoodAgeSeconds":', String(parts.ages[i]), '}');
  });
  // rest is '{...}' without hosts (undefined is left out): hosts first, as JSON.stringify(answer) orders them
  const rest = JSON.stringify({ ...answer, hosts: undefined });
  out.push(']', rest === '{}' ? '' : `,${rest.slice(1, -1)}`, '}');
  return utf8(out);
}

/**
 * Strings written into one buffer of their UTF-8 length: no 0.8 MB string flattened first, and
 * no small pooled buffers (a kept 100-byte slice of Node's 8 KiB pool keeps the whole slab).
 */
export function utf8(parts: readonly string[]): Buffer {
  let size = 0;
  for (const s of parts) size += Buffer.byteLength(s);
  const out = Buffer.allocUnsafeSlow(size);
  let at = 0;
  for (const s of parts) at += out.write(s, at);
  return out;
}

/** Bytes of the base-128 varint of a non-negative integer below 2^53 (ages, lengths). */
function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Write that varint at `at`; returns the offset after it (no array or BigInt per host: this runs 1000 times an answer). */
function writeVarint(out: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  out[at++] = n;
  return at;
}

/** A negative int64's varint: its two's complement, 10 bytes (rare: a host with no backup). */
function varint64(n: number): number[] {
  let v = BigInt.asUintN(64, BigInt(n));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

/**
 * An entry's HostStatus bytes (without its age), made once per entry object. status.ts makes
 * them as it builds each new entry, in the build's time slices: a fleet backup's first answer
 * has 1000 new entries, and encoding them all when the answer is first sent held the event loop
 * for tens of milliseconds. An entry's `host` and `lastGoodBackup` objects are kept from the
 * host's previous entry while their rows are the same (status.ts), and their field bytes are
 * made once per object: a new entry (a job queued, started, progressed) encodes only the rest.
 * Those two fields are written after the others (a field may come in any order on the wire).
 * The bytes are written straight into the entry's buffer by the one-pass encoder
 * (common/plain-encoder.ts: proto-loader's bytes, without protobufjs' message copies and writer
 * operations, ~7 KB of garbage per entry; the bytes are the same, status-encoding.test).
 */
export function entryProto(e: HostEntry): Buffer {
  let body = protoBody.get(e);
  if (body) return body;
  const { host, lastGoodBackup } = e as { host?: object | null; lastGoodBackup?: object | null };
  const enc = hostStatusEncoder();
  const rest = { ...e, host: null, lastGoodBackup: null };
  const headSize = enc.size(rest);
  const hostField = host ? fieldBytes(host, 'host') : EMPTY;
  const backupField = lastGoodBackup ? fieldBytes(lastGoodBackup, 'lastGoodBackup') : EMPTY;
  // a buffer of its own (not a slice of Node's pool, whose slab a kept entry would keep)
  body = Buffer.allocUnsafeSlow(headSize + hostField.length + backupField.length);
  enc.write(rest, body, 0);
  hostField.copy(body, headSize);
  backupField.copy(body, headSize + hostField.length);
  protoBody.set(e, body);
  return body;
}

let hostStatus: PlainEncoder | undefined;
function hostStatusEncoder(): PlainEncoder {
  hostStatus ??= messageEncoder('boxback.v1.HostStatus');
  if (!hostStatus) throw new Error('boxback.v1.HostStatus has field kinds the one-pass encoder does not encode');
  return hostStatus;
}

const EMPTY = Buffer.alloc(0);
/** A HostStatus field's bytes (its tag, length and message) per message object. */
const fieldCache = new WeakMap<object, Buffer>();

function fieldBytes(msg: object, field: 'host' | 'lastGoodBackup'): Buffer {
  let b = fieldCache.get(msg);
  if (!b) {
    const enc = hostStatusEncoder();
    const one = { [field]: msg };
    b = Buffer.allocUnsafeSlow(enc.size(one));
    enc.write(one, b, 0);
    fieldCache.set(msg, b);
  }
  return b;
}

/** Tag of StatusResponse.hosts (field 1, length-delimited) and of HostStatus.last_good_age_seconds (field 6, varint). */
const HOSTS_TAG = 0x0a;
const AGE_TAG = 0x30;

/**
 * The answer's protobuf bytes from its parts (each entry's made once, entryProto; `serialize`,
 * the StatusResponse serializer, encodes the answer's other fields), or undefined when it was
 * not registered.
 */
export function answerProto(answer: object, serialize: (v: unknown) => Buffer): Buffer | undefined {
  const parts = registered.get(answer);
  if (!parts) return undefined;
  const bodies = parts.entries.map((e) => entryProto(e));
  // an age of 0 is left out (proto3 default); a negative age (-1: no backup) is an int64's 10 bytes
  const ageBytes = (a: number) => (a === 0 ? 0 : 1 + (a < 0 ? 10 : varintSize(a)));
  const rest = serialize({ ...answer, hosts: [] });
  let size = rest.length;
  for (let i = 0; i < bodies.length; i++) {
    const len = bodies[i].length + ageBytes(parts.ages[i]);
    size += 1 + varintSize(len) + len;
  }
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < bodies.length; i++) {
    const age = parts.ages[i];
    out[at++] = HOSTS_TAG;
    at = writeVarint(out, at, bodies[i].length + ageBytes(age));
    at += bodies[i].copy(out, at);
    if (age !== 0) {
      out[at++] = AGE_TAG;
      if (age < 0) at += Buffer.from(varint64(age)).copy(out, at);
      else at = writeVarint(out, at, age);
    }
  }
  rest.copy(out, at);
  return out;
}
