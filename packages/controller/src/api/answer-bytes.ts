/**
 * Answers whose bytes were made aside, a piece at a time, before they are sent: a list answer of
 * 1000 items (CreateBackup of a fleet: 1000 jobs) encoded whole when it is sent held the event
 * loop for one stretch (proto-loader copies every message with `fromObject` before encoding it,
 * ~2.5 MB of garbage at 1000 jobs), and every status call arriving then waited behind it
 * (docs/design/fleet-scale.md). `listAnswer` makes each item's protobuf field and JSON text in
 * the caller's time slices; the gRPC adapter (grpc-adapter.ts) and the HTTP adapter
 * (http-adapter.ts) send those bytes instead of encoding the answer object again.
 * Protobuf: a repeated field's elements each carry their tag and length, so the answer's bytes
 * are the concatenation of one-item answers' bytes; JSON: the items' texts joined in order.
 */
import { loadServices } from '@boxback/common';
import { TimeSlice } from '../concurrency.js';
import { utf8 } from '../status-encoding.js';

interface Made {
  proto: Buffer;
  json: Buffer;
}

const made = new WeakMap<object, Made>();

/** The protobuf bytes made for `answer`, or undefined. */
export function madeProto(answer: unknown): Buffer | undefined {
  return typeof answer === 'object' && answer !== null ? made.get(answer)?.proto : undefined;
}

/** The JSON bytes made for `answer`, or undefined. */
export function madeJson(answer: unknown): Buffer | undefined {
  return typeof answer === 'object' && answer !== null ? made.get(answer)?.json : undefined;
}

type Serialize = (v: unknown) => Buffer;
const serializers = new Map<string, Serialize>();
function serializerOf(rpc: string): Serialize {
  let s = serializers.get(rpc);
  if (!s) {
    const def = (loadServices().ControllerService.service as unknown as Record<string, { responseSerialize: Serialize }>)[rpc];
    serializers.set(rpc, (s = def.responseSerialize));
  }
  return s;
}

/**
 * The answer `{ [field]: items.map(toMsg) }` of `rpc`, whose only field is that repeated
 * message, with its protobuf and JSON bytes made item by item, a turn of the event loop once
 * TimeSlice.SLICE_MS is used up.
 */
export async function listAnswer<K extends string, T, M>(
  rpc: string,
  field: K,
  items: readonly T[],
  toMsg: (item: T) => M,
): Promise<Record<K, M[]>> {
  const serialize = serializerOf(rpc);
  const msgs: M[] = [];
  const proto: Buffer[] = [];
  const json: string[] = [`{"${field}":[`];
  const slice = new TimeSlice();
  for (const item of items) {
    if (slice.over()) await slice.turn();
    const m = toMsg(item);
    msgs.push(m);
    proto.push(serialize({ [field]: [m] }));
    json.push(msgs.length > 1 ? ',' : '', JSON.stringify(m));
  }
  json.push(']}');
  const answer = { [field]: msgs } as Record<K, M[]>;
  made.set(answer, { proto: Buffer.concat(proto), json: utf8(json) });
  return answer;
}
