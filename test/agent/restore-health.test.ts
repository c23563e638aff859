// The health check's failure names the first failing attempt's output as well as the last:
// a real command whose output changes from try to try (the first try says the real cause).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { BoxbackError, createLogger } from '@boxback/common';
import { checkHealth } from '../../packages/agent/src/restore/health.js';
import type { JobContext } from '../../packages/agent/src/job.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-health-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('a failed health check carries the first and the last failing attempt', async () => {
  const n = path.join(dir, 'n');
  const script = `n=$(cat ${n} 2>/dev/null || echo 0); echo $((n+1)) > ${n}; if [ "$n" = 0 ]; then echo "migration failed: table builds is missing"; else echo "still starting (try $n)"; fi; exit 1`;
  const health = { command: ['sh', '-c', script], timeoutSeconds: 1.5, intervalSeconds: 0.3 };
  const ctx = {
    config: { plan: { health } },
    log: createLogger('test', 'silent'),
    jobId: 'h',
    signal: new AbortController().signal,
    emit: () => undefined,
  } as unknown as JobContext;
  const err = await checkHealth(ctx).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(BoxbackError);
  expect((err as BoxbackError).code).toBe('BOXBACK_ERR_HEALTH_CHECK_FAILED');
  expect((err as Error).message).toMatch(
    /first try: .*migration failed: table builds is missing; last try: .*still starting \(try [1-9]\d*\)/,
  );
});
