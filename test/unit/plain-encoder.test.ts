// The one-pass answer encoders (common/src/plain-encoder.ts) give the bytes proto-loader's
// serializer gives (protobufjs' fromObject, then encode), for every answer type of both
// services, filled at random: fields left out, null, explicit defaults, int64 at the edges,
// values of other types that fromObject converts, and the errors it throws.
import { describe, expect, it } from 'vitest';
import protobuf from 'protobufjs';
import { loadServices, plainEncoder } from '@boxback/common';
import { prng } from '../helpers/journal-trees.js';
import { reference, root } from '../helpers/proto-reference.js';

interface Def {
  responseSerialize(v: unknown): Buffer;
}

const INT64 = [
  0,
  1,
  -1,
  127,
  128,
  16383,
  16384,
  2 ** 31,
  -(2 ** 31),
  2 ** 32 + 7,
  2 ** 35,
  2 ** 49,
  2 ** 53 - 1,
  -(2 ** 53 - 1),
  1_765_000_000_123,
];
// fromObject converts these too: a decimal string, { low, high }, a fraction; a bool makes no value
const INT64_OTHER = ['12345', '-7', { low: 5, high: 1 }, { low: -1, high: -1 }, 1.75, -2.5, true, Infinity, NaN];
const STRINGS = ['', 'gocd1', 'é ü 東京 🚀', '<script>alert(1)</script>', 'x'.repeat(300), 'y'.repeat(20_000)];

function randomOf(type: protobuf.Type, r: () => number, depth: number): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  const pick = <T>(a: T[]): T => a[Math.floor(r() * a.length)];
  for (const f of type.fieldsArray) {
    const x = r();
    if (x < 0.15) continue;
    if (x < 0.22) {
      o[f.name] = pick([null, undefined]);
      continue;
    }
    const one = (): unknown => {
      if (f.resolvedType instanceof protobuf.Type) return depth > 0 ? randomOf(f.resolvedType, r, depth - 1) : {};
      const other = r() < 0.1;
      switch (f.type) {
        case 'string':
          return other ? pick([42, false]) : pick(STRINGS);
        case 'bool':
          return other ? pick([0, 1, '', 'x']) : r() < 0.5;
        case 'int32':
          return other ? pick(['17', 2 ** 33 + 3, -1.5]) : pick([0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 42]);
        case 'uint32':
          return other ? pick(['17', -1, 2 ** 33 + 3]) : pick([0, 1, 2 ** 32 - 1, 42]);
        case 'int64':
        case 'uint64':
          return other ? pick(INT64_OTHER) : f.type === 'uint64' ? Math.abs(pick(INT64)) : pick(INT64);
        case 'double':
          return other ? pick(['1.5', NaN, -Infinity]) : pick([0, 1.5, -2.25, 1e300, Number.MIN_VALUE, 12345.678, -0]);
        default:
          return undefined;
      }
    };
    o[f.name] = f.repeated ? Array.from({ length: Math.floor(r() * 4) }, one) : one();
  }
  return o;
}

const answerTypes = (service: 'AgentService' | 'ControllerService') =>
  Object.entries(root.lookupService(`boxback.v1.${service}`).methods).map(([name, m]) => ({
    name,
    type: m.resolvedResponseType as protobuf.Type,
    ref: (reference[`boxback.v1.${service}`] as unknown as Record<string, Def>)[name],
    ours: (loadServices()[service].service as unknown as Record<string, Def>)[name],
  }));

describe('one-pass answer encoders', () => {
  const all = [...answerTypes('AgentService'), ...answerTypes('ControllerService')];
  const encoded = all.filter((m) => plainEncoder(m.type));

  it('are made for the status answer, CreateBackup and most other answers, and serve them', () => {
    expect(encoded.map((m) => m.name)).toEqual(expect.arrayContaining(['GetStatus', 'CreateBackup', 'ListJobs', 'ListHosts', 'GetInfo']));
    expect(encoded.length).toBeGreaterThan(all.length / 2);
    // the services' serializers are these encoders where one is made (proto.ts)
    const status = all.find((m) => m.name === 'GetStatus')!;
    const v = { hosts: [{ host: { name: 'a' }, lastGoodAgeSeconds: -1 }], totalHosts: 1 };
    expect(status.ours.responseSerialize(v).equals(plainEncoder(status.type)!.encode(v))).toBe(true);
  });

  it('give the bytes proto-loader gives, for every answer type', () => {
    let compared = 0;
    for (const m of all) {
      const r = prng(m.name.length * 104729 + 3);
      for (let i = 0; i < 60; i++) {
        const value = i === 0 ? {} : randomOf(m.type, r, 3);
        const want = m.ref.responseSerialize(value);
        // every type, encoder or not: the service's serializer is proto-loader's where none is made
        expect(Buffer.from(m.ours.responseSerialize(value)).equals(Buffer.from(want)), `${m.name} #${i}`).toBe(true);
        const enc = plainEncoder(m.type);
        if (enc) {
          expect(enc.size(value), `${m.name} #${i}`).toBe(want.length);
          const buf = Buffer.alloc(want.length + 4, 0xee);
          expect(enc.write(value, buf, 2)).toBe(want.length + 2);
          expect(buf.subarray(2, 2 + want.length).equals(Buffer.from(want))).toBe(true);
          expect([buf[0], buf[1], buf[buf.length - 1]]).toEqual([0xee, 0xee, 0xee]);
        }
        compared++;
      }
    }
    expect(compared).toBe(all.length * 60);
  });

  it('throw where fromObject throws', () => {
    const status = all.find((m) => m.name === 'GetStatus')!;
    const enc = plainEncoder(status.type)!;
    for (const bad of [{ hosts: {} }, { hosts: [null] }, { hosts: [{ host: 'box1' }] }, { hosts: [3] }]) {
      expect(() => status.ref.responseSerialize(bad)).toThrow(TypeError);
      expect(() => enc.encode(bad)).toThrow(TypeError);
    }
  });
});
