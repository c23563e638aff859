/**
 * The wire types in packages/common/src/wire.ts are generated from proto/ and must stay so:
 * a changed .proto without `node scripts/gen-wire-types.mjs` fails here.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
// @ts-expect-error -- a plain .mjs script without types
import { renderWireTypes } from '../../scripts/gen-wire-types.mjs';

describe('wire types', () => {
  it('are what scripts/gen-wire-types.mjs makes of proto/ today', async () => {
    const file = readFileSync(new URL('../../packages/common/src/wire.ts', import.meta.url), 'utf8');
    expect(file).toBe(await renderWireTypes());
  });

  it('name every ControllerService RPC with its request and response', async () => {
    const text: string = await renderWireTypes();
    const proto = readFileSync(new URL('../../proto/boxback/v1/controller.proto', import.meta.url), 'utf8');
    const rpcs = [...proto.matchAll(/rpc (\w+)\((\w+)\) returns \((stream )?(\w+)\)/g)];
    expect(rpcs.length).toBeGreaterThan(15);
    for (const [, name, req, stream, res] of rpcs) {
      expect(text).toContain(`${name}: { req: ${req}; res: ${res}; kind: '${stream ? 'stream' : 'unary'}' };`);
    }
  });
});
