import { defineConfig } from 'vitest/config';
import SummaryReporter from './tests/summary-reporter.js';

// End-to-end tests: real `skewless serve`, real Chromium, apps built by real
// bundlers. One file at a time, as each starts its own gateway and browser on
// a two-core machine.
export default defineConfig({
  test: {
    reporters: ['default', new SummaryReporter('e2e')],
    include: ['tests/e2e/**/*.test.js'],
    // The Vite and webpack apps are built once, before any test file runs.
    globalSetup: ['tests/e2e/build-apps.js'],
    environment: 'node',
    fileParallelism: false,
    testTimeout: 60000,
    hookTimeout: 60000,
  },
});
