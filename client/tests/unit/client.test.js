import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createClient, readOptions, start } from '../../src/index.js';
import { FakeEventSource, json, setVisibility } from './fakes.js';

const JS_DIFF = { from: 'v1', to: 'v2', changed: ['/assets/index-b.js'], added: [], removed: [] };
const SAME = { from: 'v1', to: 'v2', changed: [], added: [], removed: [] };

let clients = [];
let originalFetch;

/**
 * A page of release `release` with a fake gateway behind fetch and
 * EventSource. `gateway` maps a path (without query) to a response factory.
 */
function setup({ release = 'v1', options = {}, gateway = {} } = {}) {
  document.head.innerHTML = release ? `<meta name="skewless-release" content="${release}">` : '';
  const routes = {
    '/_skewless/version': () => json({ current: 'v2', generation: 2, required_min: null, required: false }),
    '/_skewless/diff': () => json(JS_DIFF),
    ...gateway,
  };
  const fetch = vi.fn(async (input, init) => {
    const url = new URL(typeof input === 'string' ? input : input.url, location.href);
    const route = routes[url.pathname];
    return route ? route(url, init) : new Response('', { status: 404 });
  });
  window.fetch = fetch;
  window.EventSource = FakeEventSource;
  const load = vi.fn();
  const client = createClient({ pollInterval: 0, stagger: 0, ...options }, { load });
  clients.push(client);
  const events = [];
  for (const type of ['update-available', 'update-required', 'reloading', 'chunk-error', 'css-swapped']) {
    client.on(type, (detail) => events.push([type, detail]));
  }
  return { client, load, fetch, events, stream: FakeEventSource.latest() };
}

const types = (events) => events.map(([type]) => type);

beforeEach(() => {
  originalFetch = window.fetch;
  FakeEventSource.instances = [];
  sessionStorage.clear();
  localStorage.clear();
  setVisibility(document, 'visible');
  history.replaceState(null, '', '/start');
});

afterEach(() => {
  for (const client of clients.splice(0)) client.stop();
  window.fetch = originalFetch;
  delete window.skewless;
  document.body.innerHTML = '';
  vi.useRealTimers();
});

describe('client', () => {
  it('knows its release from the page and connects the stream for it, with its client id', () => {
    const { client, stream } = setup();
    expect(client.release).toBe('v1');
    expect(client.current).toBeNull();
    expect(client.clientId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(stream.url).toBe('/_skewless/events?release=v1&client=' + client.clientId);
  });

  it('stays passive on a page without a release', async () => {
    const { client, fetch } = setup({ release: null });
    expect(client.release).toBeNull();
    expect(FakeEventSource.instances).toHaveLength(0);
    expect(await client.check()).toBeNull();
    await window.fetch('/api');
    expect(fetch.mock.calls[0][1]).toBeUndefined();
  });

  it('announces a pushed release and turns the next link click into a full load', async () => {
    const { client, load, events, stream } = setup();
    stream.open();
    stream.emit('release', { current: 'v2', generation: 2, required_min: null, required: false });
    await vi.waitFor(() => expect(types(events)).toEqual(['update-available']));
    expect(events[0][1]).toMatchObject({ release: 'v1', current: 'v2' });
    expect(client.current).toBe('v2');
    document.body.innerHTML = '<a href="/settings">settings</a>';
    document.querySelector('a').click();
    expect(load).toHaveBeenCalledWith('http://app.test/settings');
    expect(events[1]).toEqual(['reloading', { reason: 'navigation', release: 'v1', current: 'v2' }]);
  });

  it('does nothing while the current release is its own, and stands down after a rollback', async () => {
    const { load, events, stream } = setup();
    stream.emit('release', { current: 'v1', generation: 1 });
    stream.emit('release', { current: 'v2', generation: 2 });
    await vi.waitFor(() => expect(types(events)).toEqual(['update-available']));
    stream.emit('release', { current: 'v1', generation: 3 });
    document.body.innerHTML = '<a href="/settings">settings</a>';
    document.querySelector('a').addEventListener('click', (e) => e.preventDefault());
    document.querySelector('a').click();
    expect(load).not.toHaveBeenCalled();
  });

  it('ignores state older than what it already knows', async () => {
    const { client, stream } = setup();
    stream.emit('release', { current: 'v3', generation: 5 });
    stream.emit('release', { current: 'v2', generation: 4 });
    expect(client.current).toBe('v3');
  });

  it('prompt: leaves the reload to apply(), saving the snapshot for the next page', async () => {
    const { client, load, events, stream } = setup({ options: { policy: 'prompt' } });
    client.onBeforeReload(() => ({ draft: 'half-written' }));
    stream.emit('release', { current: 'v2', generation: 2 });
    await vi.waitFor(() => expect(types(events)).toEqual(['update-available']));
    document.body.innerHTML = '<a href="/settings">settings</a>';
    document.querySelector('a').addEventListener('click', (e) => e.preventDefault());
    document.querySelector('a').click();
    expect(load).not.toHaveBeenCalled();
    expect(events[0][1].apply()).toBe(true);
    expect(load).toHaveBeenCalledWith(undefined);
    expect(types(events)).toEqual(['update-available', 'reloading']);
    document.head.innerHTML = '<meta name="skewless-release" content="v2">';
    const next = createClient({ pollInterval: 0 }, { load: vi.fn() });
    clients.push(next);
    expect(next.restoredState()).toEqual({ draft: 'half-written' });
    expect(next.restoredState()).toBeUndefined();
  });

  it('tells a late update-available listener about an update already announced', async () => {
    const { client, events, stream } = setup({ options: { policy: 'prompt' } });
    stream.emit('release', { current: 'v2', generation: 2 });
    await vi.waitFor(() => expect(types(events)).toEqual(['update-available']));
    const late = vi.fn();
    client.on('update-available', late);
    await vi.waitFor(() => expect(late).toHaveBeenCalledWith(expect.objectContaining({ current: 'v2' })));
  });

  it('reloads at once for a required release, whatever the policy', async () => {
    const { load, events, stream } = setup({ options: { policy: 'prompt', stagger: 60000 } });
    stream.emit('required', { current: 'v2', generation: 2, required_min: 'v2', required: true });
    await vi.waitFor(() => expect(load).toHaveBeenCalledWith(undefined));
    expect(types(events)).toEqual(['update-required', 'reloading']);
    expect(events[1][1].reason).toBe('required');
    expect(document.cookie).not.toContain('skewless_release=v1');
  });

  it('spreads the forced reloads of hidden tabs over the stagger window', async () => {
    vi.useFakeTimers();
    vi.spyOn(Math, 'random').mockReturnValue(0.5);
    const { load, stream } = setup({ options: { stagger: 10000 } });
    setVisibility(document, 'hidden');
    stream.emit('release', { current: 'v2', generation: 2, required: true });
    vi.advanceTimersByTime(4999);
    expect(load).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(load).toHaveBeenCalledTimes(1);
    vi.mocked(Math.random).mockRestore();
  });

  it('immediate: reloads as soon as an update is known', async () => {
    const { load, events, stream } = setup({ options: { policy: 'immediate' } });
    stream.emit('release', { current: 'v2', generation: 2 });
    await vi.waitFor(() => expect(load).toHaveBeenCalledWith(undefined));
    expect(types(events)).toEqual(['update-available', 'reloading']);
  });

  it('when-hidden: reloads once the tab stayed hidden long enough', async () => {
    const { load, events, stream } = setup({ options: { policy: 'when-hidden', hiddenDelay: 30 } });
    stream.emit('release', { current: 'v2', generation: 2 });
    await vi.waitFor(() => expect(types(events)).toEqual(['update-available']));
    expect(load).not.toHaveBeenCalled();
    setVisibility(document, 'hidden');
    await vi.waitFor(() => expect(load).toHaveBeenCalled());
    expect(events[1][1].reason).toBe('update');
  });

  it('a policy changed with configure() applies to an update already announced', async () => {
    const { client, load, events, stream } = setup({ options: { policy: 'prompt' } });
    stream.emit('release', { current: 'v2', generation: 2 });
    await vi.waitFor(() => expect(types(events)).toEqual(['update-available']));
    client.configure({ policy: 'immediate' });
    expect(client.policy).toBe('immediate');
    await vi.waitFor(() => expect(load).toHaveBeenCalled());
  });

  it('adopts a release that differs only in stylesheets without reloading', async () => {
    const { client, load, events, stream } = setup({ gateway: { '/_skewless/diff': () => json(SAME) } });
    stream.emit('release', { current: 'v2', generation: 2 });
    await vi.waitFor(() => expect(types(events)).toEqual(['css-swapped']));
    expect(events[0][1]).toEqual({ from: 'v1', to: 'v2' });
    expect(client.release).toBe('v2');
    expect(document.querySelector('meta[name="skewless-release"]').content).toBe('v2');
    expect(FakeEventSource.latest().url).toBe('/_skewless/events?release=v2&client=' + client.clientId);
    expect(load).not.toHaveBeenCalled();
  });

  it('falls back to its policy when the diff cannot be had', async () => {
    const { events, stream } = setup({ gateway: { '/_skewless/diff': () => new Response('', { status: 404 }) } });
    stream.emit('release', { current: 'v2', generation: 2 });
    await vi.waitFor(() => expect(types(events)).toEqual(['update-available']));
  });

  it('pins its requests and learns from a response header, confirming with the version endpoint', async () => {
    const { client, fetch, events } = setup({
      gateway: { '/api/items': () => json([], { headers: { 'Skewless-Current': 'v2' } }) },
    });
    await window.fetch('/api/items');
    expect(fetch.mock.calls[0][1].headers.get('Skewless-Release')).toBe('v1');
    expect(fetch.mock.calls[0][1].headers.get('Skewless-Client')).toBe(client.clientId);
    await vi.waitFor(() => expect(types(events)).toEqual(['update-available']));
    expect(fetch.mock.calls.map(([url]) => String(url))).toContain('/_skewless/version?release=v1&client=' + client.clientId);
    expect(client.current).toBe('v2');
  });

  it('trusts the header alone when the version endpoint is unreachable', async () => {
    const { client } = setup({
      gateway: {
        '/api/items': () => json([], { headers: { 'Skewless-Current': 'v9' } }),
        '/_skewless/version': () => new Response('', { status: 502 }),
      },
    });
    await window.fetch('/api/items');
    await vi.waitFor(() => expect(client.current).toBe('v9'));
  });

  it('check() asks the gateway and returns its answer', async () => {
    const { client } = setup();
    expect(await client.check()).toMatchObject({ current: 'v2', generation: 2 });
    expect(client.current).toBe('v2');
  });

  it('reloads once on a chunk error and never twice for the same release', async () => {
    const first = setup();
    const failure = () =>
      Object.assign(new Event('unhandledrejection', { cancelable: true }), {
        reason: new TypeError('Failed to fetch dynamically imported module: http://app.test/_r/v1/assets/lazy.js'),
      });
    window.dispatchEvent(failure());
    expect(first.load).toHaveBeenCalledTimes(1);
    expect(first.events.map(([t, d]) => [t, d.willReload ?? d.reason])).toEqual([
      ['chunk-error', true],
      ['reloading', 'chunk-error'],
    ]);
    first.client.stop();
    const second = setup();
    const event = failure();
    window.dispatchEvent(event);
    expect(second.load).not.toHaveBeenCalled();
    expect(second.events.map(([t, d]) => [t, d.willReload])).toEqual([['chunk-error', false]]);
    expect(event.defaultPrevented).toBe(false);
  });

  it('does not reload again for a release the last reload failed to reach', async () => {
    sessionStorage.setItem('skewless:reload', JSON.stringify({ from: 'v1', to: 'v2', reason: 'required' }));
    const { load, events, stream } = setup();
    stream.emit('required', { current: 'v2', generation: 2, required: true });
    stream.emit('release', { current: 'v3', generation: 3, required: true });
    await vi.waitFor(() => expect(load).toHaveBeenCalledTimes(1));
    expect(events[0]).toEqual(['update-required', { release: 'v1', current: 'v3', reason: 'release' }]);
  });

  it('tells the other tabs, which take the news as not required', async () => {
    const a = setup({ options: { policy: 'prompt' } });
    const b = setup({ options: { policy: 'prompt' } });
    const streamA = FakeEventSource.instances[0];
    streamA.emit('required', { current: 'v2', generation: 2, required: true });
    await vi.waitFor(() => expect(types(b.events)).toEqual(['update-available']));
    expect(b.client.current).toBe('v2');
    expect(b.load).not.toHaveBeenCalled();
    await vi.waitFor(() => expect(a.load).toHaveBeenCalled());
  });

  it('reloads rather than write when another tab stored a newer schema', async () => {
    const { client, load, events } = setup();
    localStorage.setItem('skewless:schema', '3');
    const result = await client.migrateStorage({ version: 2 });
    expect(result.newer).toBe(true);
    expect(load).toHaveBeenCalledTimes(1);
    expect(types(events)).toEqual(['update-required', 'reloading']);
    expect(events[1][1].reason).toBe('schema');
  });

  it('stays put (read-only) when a schema reload already landed on this same release', async () => {
    sessionStorage.setItem('skewless:reload', JSON.stringify({ from: 'v1', to: 'v1', reason: 'schema' }));
    const { client, load, events } = setup();
    localStorage.setItem('skewless:schema', '3');
    await client.migrateStorage({ version: 2 });
    expect(load).not.toHaveBeenCalled();
    expect(types(events)).toEqual(['update-required']);
  });
});

describe('presence', () => {
  it('gives each tab its own id, kept across a reload of that tab', () => {
    const first = setup();
    const id = first.client.clientId;
    // Another tab has its own sessionStorage.
    sessionStorage.clear();
    const other = setup();
    expect(other.client.clientId).not.toBe(id);
    other.client.stop();
    // Reload of the first tab: the page leaves the id to the next one on pagehide.
    sessionStorage.clear();
    window.dispatchEvent(Object.assign(new Event('pagehide'), { persisted: false }));
    first.client.stop();
    const reloaded = setup();
    expect(reloaded.client.clientId).toBe(id);
    expect(reloaded.stream.url).toContain('&client=' + id);
  });

  it('does not hand its id to a duplicated tab, which copies sessionStorage while the page runs', () => {
    const original = setup();
    const copy = setup();
    expect(copy.client.clientId).not.toBe(original.client.clientId);
  });

  it('takes the id back out of sessionStorage when restored from the back/forward cache', () => {
    const { client } = setup();
    window.dispatchEvent(Object.assign(new Event('pagehide'), { persisted: true }));
    expect(sessionStorage.getItem('skewless:client')).toBe(JSON.stringify(client.clientId));
    window.dispatchEvent(Object.assign(new Event('pageshow'), { persisted: true }));
    expect(sessionStorage.getItem('skewless:client')).toBeNull();
  });
});

describe('required upgrades', () => {
  it('reloads at once on Skewless-Required from an API response, whatever the policy, keeping the snapshot', async () => {
    const { client, load, events } = setup({
      options: { policy: 'prompt', cssSwap: false },
      gateway: {
        '/api/save': () => json({}, { headers: { 'Skewless-Current': 'v2', 'Skewless-Required': 'v2' } }),
      },
    });
    client.onBeforeReload(() => ({ draft: 'kept' }));
    await window.fetch('/api/save', { method: 'POST' });
    await vi.waitFor(() => expect(load).toHaveBeenCalledWith(undefined));
    expect(types(events)).toEqual(['update-required', 'reloading']);
    expect(events[0][1]).toEqual({ release: 'v1', current: 'v2', reason: 'release' });
    expect(events[1][1].reason).toBe('required');
    expect(client.current).toBe('v2');
    expect(JSON.parse(sessionStorage.getItem('skewless:snapshot'))).toEqual({ data: { draft: 'kept' } });
  });

  it('also from an XMLHttpRequest, and only once for many such responses', async () => {
    const original = window.XMLHttpRequest;
    const sent = [];
    // Answers every request like the gateway answers a tab on a retired release.
    window.XMLHttpRequest = class {
      headers = {};
      open() {}
      setRequestHeader(name, value) {
        this.headers[name] = value;
      }
      addEventListener(type, fn) {
        if (type === 'load') this.onload = fn;
      }
      getResponseHeader(name) {
        return { 'Skewless-Current': 'v3', 'Skewless-Required': 'v3' }[name] ?? null;
      }
      send() {
        sent.push(this.headers);
        queueMicrotask(() => this.onload && this.onload());
      }
    };
    try {
      const { client, load, events } = setup({ options: { policy: 'prompt' } });
      for (let i = 0; i < 3; i++) {
        const xhr = new window.XMLHttpRequest();
        xhr.open('GET', '/api/items');
        xhr.send();
      }
      await vi.waitFor(() => expect(load).toHaveBeenCalledTimes(1));
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(load).toHaveBeenCalledTimes(1);
      expect(types(events)).toEqual(['update-required', 'reloading']);
      expect(sent[0]).toEqual({ 'Skewless-Release': 'v1', 'Skewless-Client': client.clientId });
    } finally {
      window.XMLHttpRequest = original;
    }
  });

  it('ignores Skewless-Required on a request the app pinned to another release', async () => {
    const { load, events, fetch } = setup({
      options: { policy: 'prompt', cssSwap: false },
      gateway: {
        '/api/old': () => json({}, { headers: { 'Skewless-Current': 'v2', 'Skewless-Required': 'v2' } }),
        '/_skewless/version': () => json({ current: 'v2', generation: 2, required_min: null, required: false }),
      },
    });
    await window.fetch('/api/old', { headers: { 'Skewless-Release': 'v0' } });
    await vi.waitFor(() => expect(types(events)).toEqual(['update-available']));
    expect(fetch.mock.calls.map(([url]) => String(url).split('?')[0])).toContain('/_skewless/version');
    expect(load).not.toHaveBeenCalled();
  });

  it('reloads when the version check says its (retired) release is required', async () => {
    const { client, load, events } = setup({
      options: { policy: 'prompt' },
      gateway: { '/_skewless/version': () => json({ current: 'v2', generation: 5, required_min: null, required: true }) },
    });
    await client.check();
    await vi.waitFor(() => expect(load).toHaveBeenCalledTimes(1));
    expect(types(events)).toEqual(['update-required', 'reloading']);
  });
});

describe('canary', () => {
  it("takes another tab's news only from a tab on the same release, and asks the gateway otherwise", async () => {
    // This tab runs the canary c1; the gateway tells it so.
    const canary = setup({
      release: 'c1',
      options: { policy: 'prompt' },
      gateway: { '/_skewless/version': () => json({ current: 'c1', generation: 7, required_min: null, required: false }) },
    });
    canary.stream.emit('release', { current: 'c1', generation: 7 });
    expect(canary.client.current).toBe('c1');
    // A tab on v1 hears current = v2 (everyone but the canary's clients).
    const before = canary.fetch.mock.calls.length;
    const channel = new BroadcastChannel('skewless');
    channel.postMessage({ release: 'v1', current: 'v2', generation: 7 });
    await vi.waitFor(() => expect(canary.fetch.mock.calls.length).toBeGreaterThan(before));
    expect(String(canary.fetch.mock.calls.at(-1)[0])).toContain('/_skewless/version?release=c1');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(canary.client.current).toBe('c1');
    expect(canary.events).toEqual([]);
    // A tab on the same release is trusted as before.
    channel.postMessage({ release: 'c1', current: 'c2', generation: 8 });
    await vi.waitFor(() => expect(canary.client.current).toBe('c2'));
    channel.close();
  });
});

describe('configuration', () => {
  it('reads options from skewless-* meta tags', () => {
    document.head.innerHTML = `
      <meta name="skewless-release" content="v1">
      <meta name="skewless-policy" content="when-hidden">
      <meta name="skewless-poll-interval" content="15000">
      <meta name="skewless-css-swap" content="false">
      <meta name="skewless-stream" content="true">`;
    expect(readOptions(document)).toEqual({ policy: 'when-hidden', pollInterval: 15000, cssSwap: false, stream: true });
  });

  it('start() creates the page client once and reconfigures it afterwards', () => {
    document.head.innerHTML = '<meta name="skewless-release" content="v1"><meta name="skewless-policy" content="prompt">';
    window.EventSource = FakeEventSource;
    const client = start({ pollInterval: 0 });
    clients.push(client);
    expect(window.skewless).toBe(client);
    expect(client.policy).toBe('prompt');
    expect(start({ policy: 'when-hidden' })).toBe(client);
    expect(client.policy).toBe('when-hidden');
  });
});

describe('resuming', () => {
  it('reconnects a dead stream when back online, and checks after a back/forward-cache restore', async () => {
    const { client, fetch } = setup();
    FakeEventSource.latest().fail();
    window.dispatchEvent(new Event('online'));
    expect(FakeEventSource.instances).toHaveLength(2);
    window.dispatchEvent(Object.assign(new Event('pageshow'), { persisted: true }));
    await vi.waitFor(() => expect(client.current).toBe('v2'));
    expect(fetch.mock.calls.map(([url]) => String(url))).toContain('/_skewless/version?release=v1&client=' + client.clientId);
  });
});
