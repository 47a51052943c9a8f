import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
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
