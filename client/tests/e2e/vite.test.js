// A real front end: the Vite + Vue + vue-router app of tests/apps, built by
// Vite in three versions (by the global setup), deployed to the real gateway with the
// service worker on, and driven in Chromium across promotes.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APPS_OUT } from './build-apps.js';
import {
  collectErrors,
  launchBrowser,
  markDocument,
  screenshot,
  startBackend,
  startServer,
} from './support.js';

/** @typedef {import('playwright-core').Page} Page */

const V1_BG = 'rgb(240, 248, 255)';
const V3_BG = 'rgb(255, 228, 225)';
const ABOUT_V1 = 'rgb(0, 0, 128)';
const V3_ABOUT = 'rgb(139, 0, 0)';

/** Reads a value from the page, or null while it is between documents. */
const read = (/** @type {Page} */ page, /** @type {() => any} */ fn) => page.evaluate(fn).catch(() => null);

/** Waits until the page's service worker controls it and knows its release. */
async function controlled(/** @type {Page} */ page) {
  await page.waitForFunction(() => !!navigator.serviceWorker.controller);
}

/** Shows the banner, starts the worker and calls the API; returns what each got. */
async function ownFiles(/** @type {Page} */ page) {
  await page.click('#to-home');
  await page.waitForSelector('#show-banner');
  await page.click('#show-banner');
  await page.click('#start-worker');
  await page.waitForFunction(() => {
    const img = /** @type {HTMLImageElement | null} */ (document.getElementById('banner'));
    return img && img.complete && img.naturalWidth > 0 && document.getElementById('worker-out')?.textContent;
  });
  return page.evaluate(() => ({
    banner: /** @type {HTMLImageElement} */ (document.getElementById('banner')).naturalWidth,
    worker: JSON.parse(/** @type {string} */ (document.getElementById('worker-out')?.textContent)),
  }));
}

/** Calls the app's API and returns what the back end answered. */
async function callApi(/** @type {Page} */ page) {
  await page.click('#to-home');
  await page.waitForSelector('#call-api');
  await page.evaluate(() => (document.getElementById('api-out').textContent = ''));
  await page.click('#call-api');
  await page.waitForFunction(() => document.getElementById('api-out')?.textContent);
  return page.evaluate(() => JSON.parse(/** @type {string} */ (document.getElementById('api-out')?.textContent)));
}

const stylesheets = (/** @type {Page} */ page) =>
  page.evaluate(() => [...document.querySelectorAll('link[rel=stylesheet]')].map((l) => new URL(/** @type {HTMLLinkElement} */ (l).href).pathname));

describe('a Vite + Vue app across deploys', () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('playwright-core').Browser} */
  let browser;
  /** @type {import('playwright-core').BrowserContext} */
  let context;
  /** @type {Page} */
  let tabA;
  /** @type {Page} */
  let tabB;
  /** @type {string[]} */
  let errors;
  /** @type {Awaited<ReturnType<typeof startBackend>>[]} */
  let backends;
  // Built by the global setup (tests/apps/build.js).
  const built = path.join(APPS_OUT, 'vite-vue');

  beforeAll(async () => {
    let b1, b2;
    [server, browser, b1, b2] = await Promise.all([
      startServer(),
      launchBrowser(),
      startBackend('api-1'),
      startBackend('api-2'),
    ]);
    backends = [b1, b2];
    context = await browser.newContext();
    errors = collectErrors(context);
    context.on('response', (r) => r.status() >= 400 && console.log(`HTTP ${r.status()} for ${r.url()}`));
    tabA = await context.newPage();
    await server.deploy(path.join(built, 'v1'), 'v1', { promote: true, backend: b1.url });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    await Promise.all((backends || []).map((b) => b.close()));
  });

  it('loads v1, whose service worker takes control of the tab', async () => {
    await tabA.goto(server.url + '/');
    await tabA.waitForFunction(() => window.appBuild === '1');
    expect(await tabA.evaluate(() => window.skewless.release)).toBe('v1');
    // Until the full-load step below, tab A lets its person decide when to
    // upgrade, so that its in-app navigations stay on v1.
    await tabA.evaluate(() => window.skewless.configure({ policy: 'prompt' }));
    await controlled(tabA);
    expect(await tabA.evaluate(() => navigator.serviceWorker.controller?.scriptURL)).toBe(server.url + '/_skewless/sw.js');
    expect(await stylesheets(tabA)).toEqual([expect.stringMatching(/^\/_r\/v1\/assets\/index-[\w-]+\.css$/)]);
    await screenshot(tabA, 'vite-01-v1');
  });

  it('hears of v2 by push and keeps running v1: old lazy route, v1 API', async () => {
    await server.deploy(path.join(built, 'v2'), 'v2', { backend: backends[1].url });
    const promotedAt = Date.now();
    await server.promote('v2');
    await tabA.waitForFunction(() => window.skewless.current === 'v2', null, { timeout: 2000 });
    console.log(`vite app: push arrived ${Date.now() - promotedAt} ms after the promote started`);
    await tabA.waitForFunction(() => window.appEvents.some((e) => e.type === 'update-available' && e.current === 'v2'));
    // A lazy route of v1, opened after v2 is current: v1's chunk and stylesheet.
    await tabA.click('#to-about');
    await tabA.waitForSelector('#about');
    expect(await tabA.textContent('#about')).toBe('Hello about, from build 1');
    expect(await tabA.evaluate(() => getComputedStyle(document.getElementById('about')).color)).toBe(ABOUT_V1);
    expect(await tabA.evaluate(() => window.appBuild)).toBe('1');
    // Its API calls still go to v1's back end.
    expect(await callApi(tabA)).toMatchObject({ backend: 'api-1', release: 'v1' });
  });

  it('gives two tabs on two releases their own public/ image, worker script and worker fetch', async () => {
    tabB = await context.newPage();
    await tabB.goto(server.url + '/');
    await tabB.waitForFunction(() => window.appBuild === '2');
    await controlled(tabB);
    // The v2 shell has just set the shared pin cookie to v2; tab A runs v1
    // and asks for the same unversioned paths.
    expect(await tabA.evaluate(() => document.cookie)).toContain('skewless_release=v2');
    expect(await ownFiles(tabA)).toEqual({ banner: 101, worker: { script: '1', data: '1' } });
    expect(await ownFiles(tabB)).toEqual({ banner: 202, worker: { script: '2', data: '2' } });
    expect(await callApi(tabB)).toMatchObject({ backend: 'api-2', release: 'v2' });
    await screenshot(tabA, 'vite-02-tab-a-v1');
    await screenshot(tabB, 'vite-03-tab-b-v2');
  });

  it('turns tab A’s next router navigation into a full load onto v2, keeping its state', async () => {
    await tabA.evaluate(() => window.skewless.configure({ policy: 'reload-on-navigation' }));
    const v1Document = await markDocument(tabA);
    await tabA.fill('#draft', 'typed on v1');
    await tabA.click('#to-settings');
    await tabA.waitForURL(server.url + '/settings');
    await tabA.waitForFunction(() => window.appBuild === '2');
    expect(await v1Document.kept()).toBe(false);
    expect(await tabA.textContent('#settings')).toBe('Hi settings, this is build 2');
    expect(await tabA.inputValue('#draft')).toBe('typed on v1');
    expect(await tabA.evaluate(() => window.skewless.release)).toBe('v2');
  });

  it('swaps a CSS-only release in place, and styles a lazy route opened afterwards by it', async () => {
    const docs = [await markDocument(tabA), await markDocument(tabB)];
    expect(await tabB.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe(V1_BG);
    const diffAsked = tabB.waitForResponse((r) => r.url().includes('/_skewless/diff?from=v2&to=v3'));
    await server.deploy(path.join(built, 'v3'), 'v3', { backend: backends[1].url });
    await server.promote('v3');
    const diff = await (await diffAsked).json();
    expect(diff.only_stylesheets).toBe(true);
    // Vite renamed every chunk (they name the stylesheets or the entry).
    expect(Object.keys(diff.renamed).filter((p) => p.endsWith('.js'))).toHaveLength(3);
    for (const tab of [tabA, tabB]) {
      await tab.waitForFunction(() => window.skewless.release === 'v3');
      await tab.waitForFunction((bg) => getComputedStyle(document.body).backgroundColor === bg, V3_BG);
      expect(await tab.evaluate(() => window.appEvents.map((e) => e.type))).toContain('css-swapped');
      expect(await stylesheets(tab)).toEqual([expect.stringMatching(/^\/_r\/v3\/assets\/index-[\w-]+\.css$/)]);
    }
    for (const doc of docs) expect(await doc.kept()).toBe(true);
    // Tab B's code is v2's: its About route inserts v2's stylesheet name,
    // which the client points at v3's counterpart before it loads.
    await tabB.click('#to-about');
    await tabB.waitForSelector('#about');
    await tabB.waitForFunction((c) => getComputedStyle(document.getElementById('about')).color === c, V3_ABOUT);
    expect(await tabB.textContent('#about')).toBe('Hi about, this is build 2');
    expect((await stylesheets(tabB)).every((p) => p.startsWith('/_r/v3/assets/'))).toBe(true);
    expect(await docs[1].kept()).toBe(true);
    // The swapped tab counts as v3: its API calls say so.
    expect(await callApi(tabB)).toMatchObject({ release: 'v3' });
    await screenshot(tabB, 'vite-04-v3-swapped-about');
  });

  it('reloads at once for a required release and restores the app’s state', async () => {
    await tabB.fill('#draft', 'unsaved work');
    const before = await markDocument(tabB);
    await server.deploy(path.join(built, 'v1'), 'v4', { backend: backends[0].url });
    await server.promote('v4', { required: true });
    await expect.poll(() => read(tabB, () => window.skewless?.release), { timeout: 5000 }).toBe('v4');
    await tabB.waitForFunction(() => window.appBuild === '1');
    expect(await before.kept()).toBe(false);
    expect(await tabB.inputValue('#draft')).toBe('unsaved work');
    await screenshot(tabB, 'vite-05-v4-required');
  });

  it('logged no errors in the console', () => {
    expect(errors).toEqual([]);
  });
});
