// The one-pass answer decoders (common/src/plain-decoder.ts) give what proto-loader's
// deserializer gives: the same values, the same keys in the same order (JSON text equal), for
// every answer type of both services, filled at random, with fields left out, unknown fields,
// int64 at the edges. The status answer, the one a fleet's CLI decodes most, must get one.
import { describe, expect, it } from 'vitest';
import protobuf from 'protobufjs';
import { loadServices } from '@boxback/common';
import { prng } from '../helpers/journal-trees.js';
import { reference, root } from '../helpers/proto-reference.js';

interface Def {
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): unknown;
}

const INT64_EDGES = [0, 1, -1, 2 ** 31, -(2 ** 31), 2 ** 32 + 7, 2 ** 53 - 1, -(2 ** 53 - 1), 1_765_000_000_123];
const STRINGS = ['', 'gocd1', 'é ü 東京 🚀', '<script>alert(1)</script>', 'x'.repeat(300)];

/** A random plain object of `type` (each field present or left out, nested to `depth`). */
function randomOf(type: protobuf.Type, r: () => number, depth: number): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const f of type.fieldsArray) {
    if (r() < 0.25) continue;
    const one = (): unknown => {
      if (f.resolvedType instanceof protobuf.Type) return depth > 0 ? randomOf(f.resolvedType, r, depth - 1) : {};
      const pick = <T>(a: T[]): T => a[Math.floor(r() * a.length)];
      switch (f.type) {
        case 'string':
          return pick(STRINGS);
        case 'bool':
          return r() < 0.5;
        case 'int32':
          return pick([0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 42]);
        case 'uint32':
          return pick([0, 1, 2 ** 32 - 1, 42]);
        case 'int64':
          return pick(INT64_EDGES);
        case 'uint64':
          return Math.abs(pick(INT64_EDGES));
        case 'double':
          return pick([0, 1.5, -2.25, 1e300, Number.MIN_VALUE, 12345.678]);
        default:
          return undefined;
      }
    };
    o[f.name] = f.repeated ? Array.from({ length: Math.floor(r() * 4) }, one) : one();
  }
  return o;
}

const answerMethods = (service: 'AgentService' | 'ControllerService') =>
  Object.entries(root.lookupService(`boxback.v1.${service}`).methods).map(([name, m]) => ({
    name,
    type: m.resolvedResponseType as protobuf.Type,
    ours: (loadServices()[service].service as unknown as Record<string, Def>)[name],
    ref: (reference[`boxback.v1.${service}`] as unknown as Record<string, Def>)[name],
  }));

describe('one-pass answer decoders', () => {
  const all = [...answerMethods('AgentService'), ...answerMethods('ControllerService')];
  const fast = all.filter((m) => m.ours.responseDeserialize !== m.ref.responseDeserialize);

  it('are used for the status answer and most other answers', () => {
    expect(fast.map((m) => m.name)).toEqual(expect.arrayContaining(['GetStatus', 'ListBackups', 'ListJobs', 'ListHosts', 'GetInfo']));
    expect(fast.length).toBeGreaterThan(all.length / 2);
  });

  it('give what proto-loader gives, key order included, for every answer type', () => {
    let compared = 0;
    for (const m of all) {
      const r = prng(m.name.length * 7919 + 17);
      for (let i = 0; i < 40; i++) {
        const value = i === 0 ? {} : randomOf(m.type, r, 3);
        const bytes = Buffer.from(m.type.encode(m.type.fromObject(value)).finish());
        const want = m.ref.responseDeserialize(bytes);
        const got = m.ours.responseDeserialize(bytes);
        expect(got, `${m.name} #${i}`).toStrictEqual(want);
        expect(JSON.stringify(got), `${m.name} #${i}`).toBe(JSON.stringify(want));
        compared++;
      }
    }
    expect(compared).toBe(all.length * 40);
  });

  it('skip fields they do not know (an answer from a newer controller)', () => {
    const status = fast.find((m) => m.name === 'GetStatus')!;
    const known = Buffer.from(
      status.type.encode(status.type.fromObject({ hosts: [{ host: { name: 'gocd1' }, lastGoodAgeSeconds: -1 }], totalHosts: 1 })).finish(),
    );
    // field 99 as a varint, a length-delimited and a 64-bit value, inside a host and at the top
    const unknown = protobuf.Writer.create()
      .uint32((99 << 3) | 0)
      .uint64(123456789)
      .uint32((98 << 3) | 2)
      .string('later')
      .uint32((97 << 3) | 1)
      .double(1.5)
      .finish();
    const host = status.type.fields.hosts.resolvedType as protobuf.Type;
    const hostBytes = Buffer.concat([
      Buffer.from(host.encode(host.fromObject({ host: { name: 'gocd2' }, reachable: true })).finish()),
      unknown,
    ]);
    const withHost = protobuf.Writer.create()
      .uint32((1 << 3) | 2)
      .bytes(hostBytes)
      .finish();
    const bytes = Buffer.concat([known, unknown, withHost]);
    expect(status.ours.responseDeserialize(bytes)).toStrictEqual(status.ref.responseDeserialize(bytes));
    const got = status.ours.responseDeserialize(bytes) as { hosts: Array<{ host: { name: string }; reachable: boolean }> };
    expect(got.hosts.map((h) => [h.host.name, h.reachable])).toEqual([
      ['gocd1', false],
      ['gocd2', true],
    ]);
  });
});
