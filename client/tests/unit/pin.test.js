import { describe, expect, it, vi } from 'vitest';
import { isSameOrigin, pinRequests, readRelease } from '../../src/pin.js';

const ID = 'tab-id-0123456789abcdef';

/**
 * A stand-in window whose fetch and XMLHttpRequest record what they were
 * asked and answer with `Skewless-Current: current` (and `Skewless-Required:
 * required` if given).
 */
function fakeWindow(current = 'v2', required = null) {
  const answer = { 'Skewless-Current': current, ...(required ? { 'Skewless-Required': required } : {}) };
  const calls = [];
  class FakeXHR {
    constructor() {
      this.headers = {};
      this.listeners = {};
    }
    open(method, url) {
      this.url = url;
    }
    setRequestHeader(name, value) {
      this.headers[name] = value;
    }
    addEventListener(type, fn) {
      this.listeners[type] = fn;
    }
    getResponseHeader(name) {
      return answer[name] ?? null;
    }
    send() {
      calls.push(this);
      if (this.listeners.load) this.listeners.load();
    }
  }
  const win = {
    location: { href: 'http://app.test/page' },
    Request,
    XMLHttpRequest: FakeXHR,
    fetch: vi.fn(async (input, init) => {
      calls.push({ input, init });
      return new Response('{}', { headers: answer });
    }),
  };
  return { win, calls };
}

describe('readRelease', () => {
  it('reads the injected meta tag', () => {
    document.head.innerHTML = '<meta name="skewless-release" content="v7">';
    expect(readRelease(document)).toBe('v7');
  });
  it('is null without the tag', () => {
    document.head.innerHTML = '';
    expect(readRelease(document)).toBeNull();
  });
});

describe('isSameOrigin', () => {
  it('accepts relative and same-origin URLs and rejects others', () => {
    expect(isSameOrigin('/api/x', 'http://app.test/a')).toBe(true);
    expect(isSameOrigin('http://app.test/api', 'http://app.test/a')).toBe(true);
    expect(isSameOrigin('http://other.test/api', 'http://app.test/a')).toBe(false);
    expect(isSameOrigin('https://app.test/api', 'http://app.test/a')).toBe(false);
    expect(isSameOrigin('http://[bad', 'http://app.test/a')).toBe(false);
  });
});

describe('pinRequests: fetch', () => {
  it('adds Skewless-Release and Skewless-Client to same-origin requests and reports Skewless-Current', async () => {
    const { win, calls } = fakeWindow('v2');
    const observe = vi.fn();
    pinRequests(win, () => 'v1', ID, observe);
    await win.fetch('/api/items', { headers: { Accept: 'application/json' } });
    const headers = calls[0].init.headers;
    expect(headers.get('Skewless-Release')).toBe('v1');
    expect(headers.get('Skewless-Client')).toBe(ID);
    expect(headers.get('Accept')).toBe('application/json');
    expect(observe).toHaveBeenCalledWith('v2', null);
  });

  it('reports Skewless-Required', async () => {
    const { win } = fakeWindow('v3', 'v3');
    const observe = vi.fn();
    pinRequests(win, () => 'v1', ID, observe);
    await win.fetch('/api/items', { method: 'POST' });
    expect(observe).toHaveBeenCalledWith('v3', 'v3');
  });

  it('never touches requests to other origins', async () => {
    const { win, calls } = fakeWindow('v2', 'v2');
    const observe = vi.fn();
    pinRequests(win, () => 'v1', ID, observe);
    await win.fetch('https://cdn.example/lib.js', { mode: 'cors' });
    expect(calls[0].init).toEqual({ mode: 'cors' });
    expect(observe).not.toHaveBeenCalled();
  });

  it('keeps the headers the app set itself, and ignores Skewless-Required for a release it named', async () => {
    const { win, calls } = fakeWindow('v2', 'v2');
    const observe = vi.fn();
    pinRequests(win, () => 'v1', ID, observe);
    await win.fetch('/api', { headers: { 'skewless-release': 'v0', 'Skewless-Client': 'app-own-client-id' } });
    expect(calls[0].init.headers.get('Skewless-Release')).toBe('v0');
    expect(calls[0].init.headers.get('Skewless-Client')).toBe('app-own-client-id');
    expect(observe).toHaveBeenCalledWith('v2', null);
  });

  it('copies the headers of a Request object', async () => {
    const { win, calls } = fakeWindow();
    pinRequests(win, () => 'v1', ID, () => {});
    await win.fetch(new Request('http://app.test/api', { headers: { 'X-Trace': '1' } }));
    expect(calls[0].init.headers.get('X-Trace')).toBe('1');
    expect(calls[0].init.headers.get('Skewless-Release')).toBe('v1');
    expect(calls[0].init.headers.get('Skewless-Client')).toBe(ID);
  });

  it('follows the release as it changes', async () => {
    const { win, calls } = fakeWindow();
    let release = 'v1';
    pinRequests(win, () => release, ID, () => {});
    release = 'v3';
    await win.fetch('/api');
    expect(calls[0].init.headers.get('Skewless-Release')).toBe('v3');
  });

  it('adds nothing while the release is unknown, and can be undone', async () => {
    const { win, calls } = fakeWindow();
    const original = win.fetch;
    const undo = pinRequests(win, () => null, ID, () => {});
    await win.fetch('/api');
    expect(calls[0].init).toBeUndefined();
    undo();
    expect(win.fetch).toBe(original);
  });
});

describe('pinRequests: XMLHttpRequest', () => {
  it('adds both headers to same-origin requests and reports the response headers on load', () => {
    const { win, calls } = fakeWindow('v3', 'v3');
    const observe = vi.fn();
    pinRequests(win, () => 'v1', ID, observe);
    const xhr = new win.XMLHttpRequest();
    xhr.open('GET', '/api/items');
    xhr.send();
    expect(calls[0].headers).toEqual({ 'Skewless-Release': 'v1', 'Skewless-Client': ID });
    expect(observe).toHaveBeenCalledWith('v3', 'v3');
  });

  it('leaves other origins alone', () => {
    const { win, calls } = fakeWindow();
    const observe = vi.fn();
    pinRequests(win, () => 'v1', ID, observe);
    const xhr = new win.XMLHttpRequest();
    xhr.open('GET', 'https://api.example/items');
    xhr.send();
    expect(calls[0].headers).toEqual({});
    expect(observe).not.toHaveBeenCalled();
  });

  it('does not add a second header when the app set one, nor act on Skewless-Required for it', () => {
    const { win, calls } = fakeWindow('v2', 'v2');
    const observe = vi.fn();
    pinRequests(win, () => 'v1', ID, observe);
    const xhr = new win.XMLHttpRequest();
    xhr.open('POST', '/api');
    xhr.setRequestHeader('Skewless-Release', 'v0');
    xhr.send();
    expect(calls[0].headers).toEqual({ 'Skewless-Release': 'v0', 'Skewless-Client': ID });
    expect(observe).toHaveBeenCalledWith('v2', null);
  });

  it('acts on Skewless-Required when the app set its own release header to this release', () => {
    const { win } = fakeWindow('v2', 'v2');
    const observe = vi.fn();
    pinRequests(win, () => 'v1', ID, observe);
    const xhr = new win.XMLHttpRequest();
    xhr.open('GET', '/api');
    xhr.setRequestHeader('skewless-release', 'v1');
    xhr.send();
    expect(observe).toHaveBeenCalledWith('v2', 'v2');
  });
});
