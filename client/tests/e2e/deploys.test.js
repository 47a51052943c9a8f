// One open tab lives through a series of deploys against the real gateway.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectErrors, launchBrowser, markDocument, screenshot, startServer } from './support.js';

/** @typedef {import('playwright-core').Page} Page */

/** Reads a value from the page, or null while it is between documents. */
const read = (/** @type {Page} */ page, /** @type {() => any} */ fn) => page.evaluate(fn).catch(() => null);

describe('an open tab across deploys', () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('playwright-core').Browser} */
  let browser;
  /** @type {Page} */
  let page;
  /** @type {string[]} */
  let errors;

  beforeAll(async () => {
    [server, browser] = await Promise.all([startServer(), launchBrowser()]);
    const context = await browser.newContext();
    errors = collectErrors(context);
    page = await context.newPage();
    await server.deploy('app-v1', 'v1', { promote: true });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('loads v1 with the injected client, which learns the current release', async () => {
    await page.goto(server.url + '/');
    await page.waitForFunction(() => window.appBuild === 'build-1');
    expect(await page.evaluate(() => window.skewless.release)).toBe('v1');
    await page.waitForFunction(() => window.skewless.current === 'v1');
    await screenshot(page, '01-v1-loaded');
  });

  it('pins same-origin requests to its release, and only those', async () => {
    const pinned = page.waitForRequest((request) => request.url().endsWith('/_skewless/version?by=fetch'));
    const pinnedXhr = page.waitForRequest((request) => request.url().endsWith('/_skewless/version?by=xhr'));
    const foreign = page.waitForRequest((request) => request.url().startsWith('http://localhost:'));
    await page.evaluate((port) => {
      fetch('/_skewless/version?by=fetch');
      const xhr = new XMLHttpRequest();
      xhr.open('GET', '/_skewless/version?by=xhr');
      xhr.send();
      // Another origin (same server, other host name): must not get the header.
      fetch(`http://localhost:${port}/_skewless/version`, { mode: 'no-cors' });
    }, new URL(server.url).port);
    expect((await pinned).headers()['skewless-release']).toBe('v1');
    expect((await pinnedXhr).headers()['skewless-release']).toBe('v1');
    expect((await foreign).headers()['skewless-release']).toBeUndefined();
  });

  it('hears of v2 by push within 2 s of the promote, and keeps running v1', async () => {
    await server.deploy('app-v2', 'v2');
    const promotedAt = Date.now();
    await server.promote('v2');
    await page.waitForFunction(() => window.skewless.current === 'v2', null, { timeout: 2000 });
    const elapsed = Date.now() - promotedAt;
    console.log(`push arrived ${elapsed} ms after the promote started`);
    expect(elapsed).toBeLessThan(2000);
    await page.waitForFunction(() =>
      window.appEvents.some((e) => e.type === 'update-available' && e.current === 'v2'),
    );
    expect(await page.evaluate(() => [window.skewless.release, window.appBuild])).toEqual(['v1', 'build-1']);
    await screenshot(page, '02-v1-knows-v2');
  });

  it('still loads a lazy chunk of v1 after v2 was promoted', async () => {
    await page.click('#lazy');
    await page.waitForFunction(() => document.getElementById('lazy-out').textContent === 'lazy chunk of build 1');
  });

  it('turns the next in-app link click into a full load onto v2', async () => {
    const v1Document = await markDocument(page);
    await page.fill('#draft', 'typed on v1');
    await page.click('#to-settings');
    await page.waitForURL(server.url + '/settings');
    await page.waitForFunction(() => window.appBuild === 'build-2');
    expect(await v1Document.kept()).toBe(false);
    expect(await page.evaluate(() => [window.skewless.release, document.getElementById('route').textContent])).toEqual([
      'v2',
      '/settings',
    ]);
    // The app's snapshot travels with the full load too.
    expect(await page.inputValue('#draft')).toBe('typed on v1');
    await screenshot(page, '03-v2-after-link-click');
  });

  it('adopts a stylesheet-only release in place, without a reload', async () => {
    const v2Document = await markDocument(page);
    expect(await page.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe('rgb(240, 248, 255)');
    await server.deploy('app-v3', 'v3');
    await server.promote('v3');
    await page.waitForFunction(() => window.skewless.release === 'v3');
    await page.waitForFunction(() => getComputedStyle(document.body).backgroundColor === 'rgb(255, 228, 225)');
    expect(await v2Document.kept()).toBe(true);
    const state = await page.evaluate(() => ({
      links: [...document.querySelectorAll('link[rel=stylesheet]')].map((l) => new URL(l.href).pathname),
      meta: document.querySelector('meta[name="skewless-release"]').getAttribute('content'),
      events: window.appEvents.map((e) => e.type),
    }));
    expect(state).toEqual({ links: ['/_r/v3/style.css'], meta: 'v3', events: ['css-swapped'] });
    await screenshot(page, '04-v3-stylesheet-swapped');
  });

  it('reloads at once for a required release, even when the app prefers prompts, and restores its snapshot', async () => {
    await page.evaluate(() => window.skewless.configure({ policy: 'prompt' }));
    await page.fill('#draft', 'unsaved work');
    const v3Document = await markDocument(page);
    await server.deploy('app-v1', 'v4');
    const promotedAt = Date.now();
    await server.promote('v4', { required: true });
    await expect.poll(() => read(page, () => window.skewless?.release), { timeout: 5000 }).toBe('v4');
    await page.waitForFunction(() => window.appBuild === 'build-1');
    const elapsed = Date.now() - promotedAt;
    console.log(`required release loaded ${elapsed} ms after the promote started`);
    expect(elapsed).toBeLessThan(3000);
    expect(await v3Document.kept()).toBe(false);
    expect(await page.evaluate(() => window.appRestored)).toEqual({ draft: 'unsaved work' });
    expect(await page.inputValue('#draft')).toBe('unsaved work');
    // Returned once only.
    expect(await page.evaluate(() => window.skewless.restoredState())).toBeUndefined();
    await screenshot(page, '05-v4-required-reload-restored');
  });

  it('logged no errors in the console', () => {
    expect(errors).toEqual([]);
  });
});
