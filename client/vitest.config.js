import { defineConfig } from 'vitest/config';
import SummaryReporter from './tests/summary-reporter.js';

export default defineConfig({
  test: {
    reporters: ['default', new SummaryReporter('unit')],
    include: ['tests/unit/**/*.test.js', 'tests/size/**/*.test.js'],
    environment: 'happy-dom',
    environmentOptions: {
      happyDOM: {
        url: 'http://app.test/',
        settings: { disableCSSFileLoading: true, disableJavaScriptFileLoading: true, disableIframePageLoading: true },
      },
    },
  },
});
