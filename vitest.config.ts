import { defineConfig } from 'vitest/config';
import LongestFirstSequencer from './test/helpers/sequencer.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One radosgw per run for the S3 tests, one bundle per run for the deploy tests (each
    // started only when the run includes them).
    globalSetup: ['test/helpers/radosgw-setup.ts', 'test/helpers/bundle-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: true,
    // the longest files first (test/helpers/durations.json), so the workers end together
    sequence: { sequencer: LongestFirstSequencer },
    // Three on CI's 2 cores: a file keeps a core busy about 57% of its time (CPU seconds over
    // its CI duration, measured on 11 of the longest files: the rest is waiting on servers,
    // JVMs, fsync and timers), so two workers left ~40% of the CPU idle. Four would oversubscribe.
    maxWorkers: 3,
  },
});
