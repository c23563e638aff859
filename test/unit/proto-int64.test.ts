// int64 fields cross the wire as plain numbers, exact up to 2^53, negative ones too, although
// long.js is in node_modules (proto.ts turns protobufjs' use of it off: decoding a 1000-host
// status through Long objects took 2.3x the CPU).
import { describe, expect, it } from 'vitest';
import protobuf from 'protobufjs';
import { loadServices } from '@boxback/common';

interface Def {
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): unknown;
}

describe('int64 on the wire', () => {
  const def = (loadServices().ControllerService.service as unknown as Record<string, Def>).GetStatus;

  it('decodes to exact numbers (large, negative, zero), without Long objects', () => {
    const hosts = [2 ** 53 - 1, -1, 0, 1_765_000_000_123, 2 ** 32 + 7].map((n, i) => ({
      host: { name: `h${i}`, lastSeenMs: Math.abs(n) },
      lastGoodAgeSeconds: n,
      safetyCopyBytes: Math.abs(n),
    }));
    const out = def.responseDeserialize(def.responseSerialize({ hosts, atMs: 1_765_000_000_123 })) as {
      hosts: Array<{ lastGoodAgeSeconds: unknown; safetyCopyBytes: unknown; host: { lastSeenMs: unknown } }>;
      atMs: unknown;
    };
    expect(out.hosts.map((h) => h.lastGoodAgeSeconds)).toEqual([2 ** 53 - 1, -1, 0, 1_765_000_000_123, 2 ** 32 + 7]);
    expect(out.hosts.map((h) => h.host.lastSeenMs)).toEqual([2 ** 53 - 1, 1, 0, 1_765_000_000_123, 2 ** 32 + 7]);
    expect(out.hosts.every((h) => typeof h.safetyCopyBytes === 'number')).toBe(true);
    expect(out.atMs).toBe(1_765_000_000_123);
    expect(protobuf.util.Long).toBeFalsy();
  });
});
