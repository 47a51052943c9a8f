// Release lifecycle against the real gateway: presence of open tabs, retired
// releases and required upgrades by event and by response header.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  collectErrors,
  launchBrowser,
  markDocument,
  recordReloadReasons,
  screenshot,
  startBackend,
  startServer,
} from './support.js';

/** @typedef {import('playwright-core').Page} Page */
/** @typedef {import('playwright-core').BrowserContext} BrowserContext */

/** Reads a value from the page, or null while it is between documents. */
const read = (/** @type {Page} */ page, /** @type {() => any} */ fn) => page.evaluate(fn).catch(() => null);

const CLIENT_ID = /^[A-Za-z0-9_-]{16,64}$/;

describe('presence', () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('playwright-core').Browser} */
  let browser;
  /** @type {BrowserContext} */
  let context;
  /** @type {string[]} */
  let errors;

  beforeAll(async () => {
    // A short window, so that a closed tab also leaves the "recent" count.
    [server, browser] = await Promise.all([startServer({ args: ['--presence-window-secs', '2'] }), launchBrowser()]);
    context = await browser.newContext();
    errors = collectErrors(context);
    await server.deploy('app-v1', 'v1', { promote: true });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** @param {string} release */
  const clients = async (release) => (await server.status()).clients?.[release] ?? { streams: 0, recent: 0, total: 0 };

  it('counts two open tabs on v1 as two live clients, and one once a tab closes', async () => {
    const before = await clients('v1');
    expect(before.total).toBe(0);

    const first = await context.newPage();
    const second = await context.newPage();
    const streamRequest = first.waitForRequest((r) => r.url().includes('/_skewless/events?'));
    await first.goto(server.url + '/');
    await second.goto(server.url + '/settings');
    for (const page of [first, second]) await page.waitForFunction(() => window.skewless.current === 'v1');

    const ids = await Promise.all([first, second].map((page) => page.evaluate(() => window.skewless.clientId)));
    expect(ids[0]).toMatch(CLIENT_ID);
    expect(ids[1]).toMatch(CLIENT_ID);
    expect(ids[0]).not.toBe(ids[1]);
    const streamUrl = new URL((await streamRequest).url());
    expect(Object.fromEntries(streamUrl.searchParams)).toEqual({ release: 'v1', client: ids[0] });

    await expect.poll(() => clients('v1'), { timeout: 5000 }).toMatchObject({ streams: 2, total: 2 });
    console.log('two tabs open:', JSON.stringify(await clients('v1')));

    await second.close();
    // The stream goes at once; the id stays "recent" for the 2 s window.
    await expect.poll(async () => (await clients('v1')).streams, { timeout: 5000 }).toBe(1);
    await expect.poll(async () => (await clients('v1')).total, { timeout: 8000, interval: 500 }).toBe(1);
    console.log('one tab closed:', JSON.stringify(await clients('v1')));
    await first.close();
    await expect.poll(async () => (await clients('v1')).streams, { timeout: 5000 }).toBe(0);
  });

  it('sends the client id on same-origin requests and the version check, and keeps it across a reload', async () => {
    const page = await context.newPage();
    await page.goto(server.url + '/');
    await page.waitForFunction(() => window.skewless.current === 'v1');
    const id = await page.evaluate(() => window.skewless.clientId);

    const pinned = page.waitForRequest((r) => r.url().endsWith('/api/anything'));
    const version = page.waitForRequest((r) => r.url().includes('/_skewless/version?'));
    await page.evaluate(() => {
      fetch('/api/anything').catch(() => {});
      window.skewless.check();
    });
    const headers = (await pinned).headers();
    expect([headers['skewless-release'], headers['skewless-client']]).toEqual(['v1', id]);
    expect(Object.fromEntries(new URL((await version).url()).searchParams)).toEqual({ release: 'v1', client: id });

    await page.reload();
    await page.waitForFunction(() => window.skewless?.current === 'v1');
    expect(await page.evaluate(() => window.skewless.clientId)).toBe(id);

    // A window opened from this tab gets a copy of its sessionStorage, but
    // not its id.
    await page.evaluate(() => sessionStorage.setItem('e2e:copied', 'yes'));
    const [popup] = await Promise.all([
      context.waitForEvent('page'),
      page.evaluate(() => {
        window.open('/settings');
      }),
    ]);
    await popup.waitForFunction(() => window.skewless?.current === 'v1');
    expect(await popup.evaluate(() => sessionStorage.getItem('e2e:copied'))).toBe('yes');
    const popupId = await popup.evaluate(() => window.skewless.clientId);
    expect(popupId).toMatch(CLIENT_ID);
    expect(popupId).not.toBe(id);
    await popup.close();
    await page.close();
  });

  it('counts a tab that only polls, also when the version check answers 304', async () => {
    const page = await context.newPage();
    await page.route(/\/_skewless\/events\?/, (route) => route.fulfill({ status: 503, body: '' }));
    await page.goto(server.url + '/');
    await expect.poll(async () => (await clients('v1')).total, { timeout: 5000 }).toBe(0);
    const statuses = [];
    page.on('response', (r) => r.url().includes('/_skewless/version?') && statuses.push(r.status()));
    await page.evaluate(() => window.skewless.check());
    expect(await clients('v1')).toMatchObject({ streams: 0, total: 1 });
    // Out of the 2 s window, then seen again through a 304.
    await expect.poll(async () => (await clients('v1')).total, { timeout: 8000, interval: 500 }).toBe(0);
    await page.evaluate(() => window.skewless.check());
    expect(statuses).toEqual([200, 304]);
    expect(await clients('v1')).toMatchObject({ streams: 0, total: 1 });
    await page.close();
  });

  it('logged no errors in the console other than the API call without a back end and the refused stream', () => {
    expect(errors.filter((e) => !/api\/anything|status of 50\d/.test(e))).toEqual([]);
  });
});

describe('required upgrades', () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {Awaited<ReturnType<typeof startBackend>>} */
  let backend;
  /** @type {import('playwright-core').Browser} */
  let browser;

  beforeAll(async () => {
    [server, browser, backend] = await Promise.all([startServer(), launchBrowser(), startBackend()]);
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    await backend?.close();
  });

  /**
   * Opens a tab on the current release with the prompt policy (so that only
   * a required upgrade reloads it on its own) and types a draft.
   * @param {BrowserContext} context
   * @param {string} release
   * @param {{deaf?: boolean}} [options] `deaf`: refuse the tab's event stream and version checks
   */
  const openTab = async (context, release, { deaf = false } = {}) => {
    const page = await context.newPage();
    if (deaf) {
      // (A pattern, not a glob: /_skewless/events.js is one of the client's modules.)
      await page.route(/\/_skewless\/(events|version)\?/, (route) => route.fulfill({ status: 503, body: '' }));
    }
    await page.goto(server.url + '/?policy=prompt');
    await page.evaluate(() => window.skewless.check());
    await page.waitForFunction((id) => window.skewless.release === id, release);
    if (!deaf) await page.waitForFunction((id) => window.skewless.current === id, release);
    await page.fill('#draft', `unsaved on ${release}`);
    return page;
  };

  it('a tab on a release that gets retired reloads at once onto the current one, restoring its snapshot', async () => {
    const context = await browser.newContext();
    const errors = collectErrors(context);
    await server.deploy('app-v1', 'v1', { promote: true });
    const page = await openTab(context, 'v1');
    const reload = await recordReloadReasons(page);
    const v1Document = await markDocument(page);

    await server.deploy('app-v2', 'v2', { promote: true });
    await page.waitForFunction(() => window.appEvents.some((e) => e.type === 'update-available' && e.current === 'v2'));
    // The prompt policy: the tab stays on v1 until the app applies v2 ...
    expect(await v1Document.kept()).toBe(true);

    // ... unless v1 is retired.
    const retiredAt = Date.now();
    await server.retire('v1');
    await expect.poll(() => read(page, () => window.skewless?.release), { timeout: 5000 }).toBe('v2');
    await page.waitForFunction(() => window.appBuild === 'build-2');
    const elapsed = Date.now() - retiredAt;
    console.log(`retired release left ${elapsed} ms after the retire command started`);
    expect(elapsed).toBeLessThan(3000);
    expect(await v1Document.kept()).toBe(false);
    expect(await reload.reasons()).toEqual(['required']);
    expect(await page.evaluate(() => window.appRestored)).toEqual({ draft: 'unsaved on v1' });
    expect(await page.inputValue('#draft')).toBe('unsaved on v1');
    await screenshot(page, '11-retired-release-reloaded');
    expect(errors).toEqual([]);
    await context.close();
  });

  it('Skewless-Required on an API response reloads the tab at once, with no stream nor version check', async () => {
    const context = await browser.newContext();
    const errors = collectErrors(context);
    await server.deploy('app-v1', 'v3', { promote: true, backend: backend.url });
    await server.deploy('app-v2', 'v4', { backend: backend.url });
    // No stream and no version check: the response header itself is the only
    // way this tab can hear that its release is required to go. (Skewless-Current
    // alone would only announce v4, which the prompt policy leaves to the app.)
    const page = await openTab(context, 'v3', { deaf: true });
    const id = await page.evaluate(() => window.skewless.clientId);
    const reload = await recordReloadReasons(page);
    const v3Document = await markDocument(page);

    await server.promote('v4', { required: true });
    await page.waitForTimeout(500);
    expect(await v3Document.kept()).toBe(true);
    expect(await page.evaluate(() => [window.skewless.release, window.skewless.current])).toEqual(['v3', null]);

    const response = page.waitForResponse((r) => r.url().endsWith('/api/items'));
    const fetchedAt = Date.now();
    const body = await page.evaluate(() => fetch('/api/items').then((r) => r.json()));
    // The call itself went through, pinned to v3 and carrying the tab's id.
    expect(body).toEqual({ backend: 'backend', path: '/api/items', release: 'v3', client: id });
    expect((await response).headers()['skewless-required']).toBe('v4');

    await expect.poll(() => read(page, () => window.skewless?.release), { timeout: 5000 }).toBe('v4');
    await page.waitForFunction(() => window.appBuild === 'build-2');
    const elapsed = Date.now() - fetchedAt;
    console.log(`required release loaded ${elapsed} ms after the API call`);
    expect(elapsed).toBeLessThan(3000);
    expect(await v3Document.kept()).toBe(false);
    expect(await reload.reasons()).toEqual(['required']);
    expect(await page.inputValue('#draft')).toBe('unsaved on v3');
    // The new page keeps the tab's id.
    expect(await page.evaluate(() => window.skewless.clientId)).toBe(id);
    await screenshot(page, '12-required-by-response-header');
    expect(errors.filter((e) => !/status of 503/.test(e))).toEqual([]);
    await context.close();
  });
});

describe('canary', () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('playwright-core').Browser} */
  let browser;

  beforeAll(async () => {
    [server, browser] = await Promise.all([startServer(), launchBrowser()]);
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  it("a canary tab and a stable tab side by side each keep their own current release", async () => {
    await server.deploy('app-v1', 's1', { promote: true });
    await server.deploy('app-v2', 'c1');
    await server.promote('c1', { percent: 50 });
    const context = await browser.newContext();
    const errors = collectErrors(context);
    /** Opens a tab whose pin cookie sends it to `release`. @param {string} release */
    const open = async (release) => {
      await context.addCookies([{ name: 'skewless_release', value: release, url: server.url }]);
      const page = await context.newPage();
      await page.goto(server.url + '/?policy=prompt');
      return page;
    };

    const canary = await open('c1');
    await canary.waitForFunction(() => window.skewless.release === 'c1' && window.skewless.current === 'c1');
    // The stable tab learns "current: s1" and tells the other tabs; the canary
    // tab, on another release, asks the gateway instead of believing it.
    const asked = canary.waitForResponse((r) => r.url().includes('/_skewless/version?release=c1&'), { timeout: 5000 });
    const stable = await open('s1');
    await stable.waitForFunction(() => window.skewless.release === 's1' && window.skewless.current === 's1');
    await canary.waitForTimeout(300);
    for (const [page, release] of [
      [canary, 'c1'],
      [stable, 's1'],
    ]) {
      expect(await page.evaluate(() => [window.skewless.release, window.skewless.current, window.appEvents])).toEqual([
        release,
        release,
        [],
      ]);
    }
    expect(await (await asked).json()).toMatchObject({ current: 'c1', required: false });
    const status = await server.status();
    expect(status.clients.c1.streams).toBeGreaterThanOrEqual(1);
    expect(status.clients.s1.streams).toBeGreaterThanOrEqual(1);

    // Ending the canary tells only its clients that s1 is now theirs.
    await server.abortCanary();
    await canary.waitForFunction(() => window.appEvents.some((e) => e.type === 'update-available' && e.current === 's1'));
    expect(await stable.evaluate(() => [window.skewless.current, window.appEvents])).toEqual(['s1', []]);
    await screenshot(canary, '13-canary-ended');
    expect(errors).toEqual([]);
    await context.close();
  });
});
