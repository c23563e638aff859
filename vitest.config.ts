import { defineConfig } from 'vitest/config';
import LongestFirstSequencer from './test/helpers/sequencer.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One radosgw per run for the S3 tests (started only when the run includes them).
    globalSetup: ['test/helpers/radosgw-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: true,
    // the longest files first (test/helpers/durations.json), so the workers end together
    sequence: { sequencer: LongestFirstSequencer },
    maxWorkers: 2,
  },
});
