import { defineConfig } from 'vitest/config';
import SummaryReporter from './tests/summary-reporter.js';

// End-to-end tests: real `skewless serve`, real Chromium. One file at a time,
// as each starts its own gateway and browser on a two-core machine.
export default defineConfig({
  test: {
    reporters: ['default', new SummaryReporter('e2e')],
    include: ['tests/e2e/**/*.test.js'],
    environment: 'node',
    fileParallelism: false,
    testTimeout: 60000,
    hookTimeout: 60000,
  },
});
