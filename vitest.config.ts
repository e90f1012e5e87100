import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Real mounts and real guests on a 2-core machine: one file at a time keeps timings honest.
    fileParallelism: false,
    testTimeout: 180_000,
    hookTimeout: 60_000,
    globalSetup: ['test/helpers/global-setup.ts'],
    // Daemons started by the tests check the write path's invariants (a violation fails the migration).
    env: { FERRY_CHECK_INVARIANTS: '1' },
  },
});
