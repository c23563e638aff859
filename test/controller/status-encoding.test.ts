// A status answer encoded from its hosts' pieces (status-encoding.ts) is what encoding it whole
// gives: the same protobuf message decoded by a gRPC client, the same JSON object; an entry
// kept between answers keeps its bytes, and a changed age or entry shows in the next answer.
import { describe, expect, it } from 'vitest';
import * as protoLoader from '@grpc/proto-loader';
import { loadServices, protoDir } from '@boxback/common';
import { answerJson, answerProto, entryProto, registerParts } from '../../packages/controller/src/status-encoding.js';

interface Def {
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): unknown;
}
const def = (loadServices().ControllerService.service as unknown as Record<string, Def>).GetStatus;
// proto-loader's own serializer (protobufjs fromObject + encode), untouched: the path entries were encoded by before
const reference = (
  protoLoader.loadSync(['boxback/v1/controller.proto'], {
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [protoDir()],
  })['boxback.v1.ControllerService'] as unknown as Record<string, Def>
).GetStatus;

/** A HostStatus's bytes as the old path made them: a one-host answer encoded by proto-loader, less the host's tag and length. */
function oldHostStatusBytes(hs: object): Buffer {
  const one = reference.responseSerialize({ hosts: [hs] });
  let at = 1;
  while (one[at] & 0x80) at++;
  return Buffer.from(one.subarray(at + 1));
}

function entry(i: number, running: boolean) {
  return {
    host: {
      name: `box${i}`,
      address: `127.0.0.1:${7000 + i}`,
      group: i % 2 ? 'ci' : '',
      planName: 'gocd',
      agentVersion: '1.2.3',
      lastSeenMs: 1_765_000_000_000 + i,
      rpoSeconds: 86_400,
      product: 'gocd',
      productVersion: '24.1',
    },
    reachable: i % 3 !== 0,
    unreachableReason: i % 3 === 0 ? 'agent box0 at 127.0.0.1:7000 did not answer: <refused> "é"' : '',
    runningJob: running
      ? {
          id: `backup-${i}`,
          kind: 'backup',
          host: `box${i}`,
          state: 'Running',
          phase: 'SYNC',
          progress: {
            jobId: `backup-${i}`,
            phase: 'SYNC',
            state: 'running',
            bytesDone: 2 ** 40 + i,
            bytesTotal: 2 ** 41,
            filesDone: 3,
            filesTotal: 9,
            message: 'copying',
            atMs: 1_765_000_000_000,
          },
          requestedBy: 'bench',
          createdAtMs: 1,
          startedAtMs: 2,
          endedAtMs: 0,
          errorCode: '',
          errorMessage: '',
          backupId: '',
          warningCount: 0,
          dryRunReport: '',
        }
      : null,
    lastGoodBackup:
      i % 4 === 0
        ? null
        : {
            id: `backup_${i}`,
            host: `box${i}`,
            createdAtMs: 1_765_000_000_000,
            sizeBytes: 123_456_789_012,
            consistency: 'crash',
            status: 'Completed',
            restorable: true,
            label: 'x',
          },
    nextRunMs: i % 2 ? 1_765_000_100_000 : 0,
    atRisk: i % 4 === 0,
    safetyCopies: i % 2,
    safetyCopyBytes: (i % 2) * 5e9,
    lastDrillBackupId: '',
    lastDrillAtMs: 0,
    lastDrillDurationMs: 0,
  };
}

function answer(entries: object[], ages: number[], atMs: number) {
  const a = {
    hosts: entries.map((e, i) => ({ ...e, lastGoodAgeSeconds: ages[i] })),
    totalHosts: entries.length,
    reachableHosts: 2,
    atRiskHosts: 1,
    runningJobs: 1,
    controllerVersion: '0.1.0',
    atMs,
    leader: '',
    controller: 'c1',
  };
  registerParts(a, entries, ages);
  return a;
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 127) {
    out.push((n & 127) | 128);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

describe('status answers encoded from per-host pieces', () => {
  const entries = Array.from({ length: 40 }, (_, i) => entry(i, i % 5 === 1));
  const ages = entries.map((_, i) => (i % 4 === 0 ? -1 : i === 1 ? 0 : i * 1000 + 2 ** 33));

  it('decodes to the same message and JSON as the whole answer encoded at once', () => {
    const a = answer(entries, ages, 1_765_000_000_123);
    const pieces = answerProto(a, (v) => def.responseSerialize(v))!;
    expect(def.responseDeserialize(pieces)).toEqual(def.responseDeserialize(def.responseSerialize(a)));
    expect(
      (def.responseDeserialize(pieces) as { hosts: Array<{ lastGoodAgeSeconds: number }> }).hosts.map((h) => h.lastGoodAgeSeconds),
    ).toEqual(ages);
    expect(JSON.parse(answerJson(a)!.toString('utf8'))).toEqual(JSON.parse(JSON.stringify(a)));
  });

  it('shows the next answer’s ages and changed entries, reusing the unchanged ones', () => {
    answerProto(answer(entries, ages, 1), (v) => def.responseSerialize(v));
    const changed = [...entries];
    changed[7] = entry(7, true);
    const later = ages.map((x) => (x < 0 ? x : x + 1));
    const b = answer(changed, later, 2);
    const decoded = def.responseDeserialize(answerProto(b, (v) => def.responseSerialize(v))!) as {
      hosts: Array<{ lastGoodAgeSeconds: number; runningJob: unknown }>;
    };
    expect(decoded.hosts.map((h) => h.lastGoodAgeSeconds)).toEqual(later);
    expect(decoded.hosts[7].runningJob).not.toBeNull();
    expect(decoded).toEqual(def.responseDeserialize(def.responseSerialize(b)));
    expect(JSON.parse(answerJson(b)!.toString('utf8'))).toEqual(JSON.parse(JSON.stringify(b)));
  });

  it('encodes each entry to the bytes proto-loader encoded it to (host and backup fields last)', () => {
    for (const [i, e] of entries.entries()) {
      const ref = e as { host: object | null; lastGoodBackup: object | null };
      const old = Buffer.concat([
        oldHostStatusBytes({ ...e, host: null, lastGoodBackup: null }),
        ref.host ? oldHostStatusBytes({ host: ref.host }) : Buffer.alloc(0),
        ref.lastGoodBackup ? oldHostStatusBytes({ lastGoodBackup: ref.lastGoodBackup }) : Buffer.alloc(0),
      ]);
      expect(entryProto(e).equals(old), `entry ${i}`).toBe(true);
    }
    // the whole answer: byte for byte what proto-loader encodes of the same fields in this order
    const a = answer(entries, ages, 7);
    const pieces = answerProto(a, (v) => reference.responseSerialize(v))!;
    const whole = Buffer.concat([
      ...entries.map((e, i) => {
        const ref = e as { host: object | null; lastGoodBackup: object | null };
        const hs = Buffer.concat([
          oldHostStatusBytes({ ...e, host: null, lastGoodBackup: null }),
          ref.host ? oldHostStatusBytes({ host: ref.host }) : Buffer.alloc(0),
          ref.lastGoodBackup ? oldHostStatusBytes({ lastGoodBackup: ref.lastGoodBackup }) : Buffer.alloc(0),
          ages[i] ? oldHostStatusBytes({ lastGoodAgeSeconds: ages[i] }) : Buffer.alloc(0),
        ]);
        return Buffer.concat([reference.responseSerialize({ hosts: [{}] }).subarray(0, 1), varint(hs.length), hs]);
      }),
      reference.responseSerialize({ ...a, hosts: [] }),
    ]);
    expect(pieces.equals(whole)).toBe(true);
  });

  it('leaves answers it was not given to the whole encoder', () => {
    expect(answerJson({ hosts: [] })).toBeUndefined();
    expect(answerProto({ hosts: [] }, () => Buffer.alloc(0))).toBeUndefined();
  });
});
