// A list answer made aside (api/answer-bytes.ts: CreateBackup's jobs) is what encoding the whole
// answer gives, in protobuf as a gRPC client decodes it and in JSON, and it is made in turns of
// the event loop: a call arriving meanwhile is answered before the last item is made.
import { describe, expect, it } from 'vitest';
import { loadServices } from '@boxback/common';
import { listAnswer, madeJson, madeProto } from '../../packages/controller/src/api/answer-bytes.js';
import { jobMsg } from '../../packages/controller/src/convert.js';
import type { JobRow } from '../../packages/controller/src/catalog/types.js';

interface Def {
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): unknown;
}
const def = (loadServices().ControllerService.service as unknown as Record<string, Def>).CreateBackup;

function row(i: number): JobRow {
  return {
    id: `backup-${i.toString(16)}`,
    kind: 'backup',
    host: `box${i}`,
    state: i % 3 ? 'Queued' : 'Running',
    phase: i % 3 ? '' : 'SYNC',
    progressJson:
      i % 3
        ? ''
        : JSON.stringify({ jobId: `backup-${i}`, phase: 'SYNC', state: 'running', bytesDone: 2 ** 40 + i, atMs: 1_765_000_000_000 }),
    requestedBy: i % 2 ? 'bench' : 'ops "é"',
    createdAtMs: 1_765_000_000_000 + i,
    startedAtMs: i % 3 ? 0 : 1_765_000_000_500,
    endedAtMs: 0,
    errorCode: '',
    errorMessage: '',
    backupId: '',
    warningCount: i % 7,
    dryRunReport: '',
    paramsJson: '{}',
    resultJson: '',
    schedule: '',
    slotMs: 0,
    attempt: 0,
    owner: 'c1',
  };
}

describe('list answers made aside', () => {
  it('are the same protobuf message and JSON as the whole answer encoded at once', async () => {
    const rows = Array.from({ length: 300 }, (_, i) => row(i));
    const a = await listAnswer('CreateBackup', 'jobs', rows, (j) => jobMsg(j));
    expect(a.jobs).toHaveLength(300);
    const proto = madeProto(a)!;
    expect(proto.equals(def.responseSerialize(a))).toBe(true);
    expect(def.responseDeserialize(proto)).toEqual(def.responseDeserialize(def.responseSerialize({ jobs: rows.map((j) => jobMsg(j)) })));
    expect(madeJson(a)!.toString('utf8')).toBe(JSON.stringify({ jobs: rows.map((j) => jobMsg(j)) }));
  });

  it('leave other answers to the whole encoder', async () => {
    expect(madeProto({ jobs: [] })).toBeUndefined();
    expect(madeJson(undefined)).toBeUndefined();
    const one = await listAnswer('CreateBackup', 'jobs', [row(1)], (j) => jobMsg(j));
    expect(JSON.parse(madeJson(one)!.toString('utf8'))).toEqual(JSON.parse(JSON.stringify(one)));
  });

  it('give the event loop turns while the items are made', async () => {
    let turns = 0;
    let made = 0;
    let madeAtFirstTurn = -1;
    const tick = () => {
      if (made < 400) {
        if (madeAtFirstTurn < 0) madeAtFirstTurn = made;
        turns++;
        setImmediate(tick);
      }
    };
    setImmediate(tick);
    const rows = Array.from({ length: 400 }, (_, i) => row(i));
    await listAnswer('CreateBackup', 'jobs', rows, (j) => {
      const until = performance.now() + 0.1; // 400 items of 0.1 ms: 40 ms, past several 8 ms slices
      while (performance.now() < until);
      made++;
      return jobMsg(j);
    });
    expect(madeAtFirstTurn).toBeGreaterThan(0);
    expect(madeAtFirstTurn).toBeLessThan(400);
    expect(turns).toBeGreaterThanOrEqual(3);
  });
});
