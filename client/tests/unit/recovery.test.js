import { afterEach, describe, expect, it, vi } from 'vitest';
import { isImportFailure, watchChunkFailures } from '../../src/recovery.js';

describe('isImportFailure', () => {
  it('recognises failed dynamic imports in Chromium, Firefox, Safari and Vite', () => {
    expect(isImportFailure(new TypeError('Failed to fetch dynamically imported module: http://a/x.js'))).toBe(true);
    expect(isImportFailure(new TypeError('error loading dynamically imported module: http://a/x.js'))).toBe(true);
    expect(isImportFailure(new TypeError('Importing a module script failed.'))).toBe(true);
    expect(isImportFailure(new Error('Unable to preload CSS for /assets/a.css'))).toBe(true);
  });
  it('ignores other rejections', () => {
    expect(isImportFailure(new Error('network down'))).toBe(false);
    expect(isImportFailure(undefined)).toBe(false);
    expect(isImportFailure('Failed to fetch')).toBe(false);
  });
});

describe('watchChunkFailures', () => {
  let stop = () => {};
  afterEach(() => {
    stop();
    document.head.innerHTML = '';
  });
  const failElement = (el) => {
    document.head.append(el);
    el.dispatchEvent(new Event('error'));
  };

  it('reports same-origin script and stylesheet load errors', () => {
    const onFailure = vi.fn(() => false);
    stop = watchChunkFailures(window, onFailure);
    const script = document.createElement('script');
    script.setAttribute('src', '/_r/v1/assets/chunk.js');
    script.type = 'text/plain';
    failElement(script);
    const link = document.createElement('link');
    link.rel = 'modulepreload';
    link.setAttribute('href', '/_r/v1/assets/dep.js');
    failElement(link);
    expect(onFailure.mock.calls).toEqual([
      [{ url: 'http://app.test/_r/v1/assets/chunk.js' }],
      [{ url: 'http://app.test/_r/v1/assets/dep.js' }],
    ]);
  });

  it('ignores other origins, other elements and elements it is told to ignore', () => {
    const onFailure = vi.fn(() => false);
    const ignored = document.createElement('script');
    stop = watchChunkFailures(window, onFailure, (el) => el === ignored);
    const other = document.createElement('script');
    other.type = 'text/plain';
    other.setAttribute('src', 'https://ads.example/x.js');
    failElement(other);
    const icon = document.createElement('link');
    icon.rel = 'icon';
    icon.setAttribute('href', '/favicon.ico');
    failElement(icon);
    ignored.type = 'text/plain';
    ignored.setAttribute('src', '/_r/v1/x.js');
    failElement(ignored);
    failElement(document.createElement('img'));
    expect(onFailure).not.toHaveBeenCalled();
  });

  it('reports a rejected dynamic import and suppresses it when recovering', () => {
    const onFailure = vi.fn(() => true);
    stop = watchChunkFailures(window, onFailure);
    const error = new TypeError('Failed to fetch dynamically imported module: http://app.test/_r/v1/a.js');
    const event = Object.assign(new Event('unhandledrejection', { cancelable: true }), { reason: error });
    window.dispatchEvent(event);
    expect(onFailure).toHaveBeenCalledWith({ error });
    expect(event.defaultPrevented).toBe(true);
    const unrelated = Object.assign(new Event('unhandledrejection', { cancelable: true }), { reason: new Error('x') });
    window.dispatchEvent(unrelated);
    expect(onFailure).toHaveBeenCalledTimes(1);
  });

  it("handles Vite's preload error event", () => {
    const onFailure = vi.fn(() => true);
    stop = watchChunkFailures(window, onFailure);
    const payload = new Error('Unable to preload CSS');
    const event = Object.assign(new Event('vite:preloadError', { cancelable: true }), { payload });
    window.dispatchEvent(event);
    expect(onFailure).toHaveBeenCalledWith({ error: payload });
    expect(event.defaultPrevented).toBe(true);
  });
});
