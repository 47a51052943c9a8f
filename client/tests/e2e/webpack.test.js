// The same promises for a webpack 5 build (mini-css-extract-plugin,
// [contenthash] names, publicPath 'auto'): an old lazy chunk after a promote,
// and a CSS-only change swapped in place, a lazy route's stylesheet inserted
// afterwards by webpack's CSS runtime included.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APPS_OUT } from './build-apps.js';
import { collectErrors, launchBrowser, markDocument, screenshot, startServer } from './support.js';

/** @typedef {import('playwright-core').Page} Page */

const built = path.join(APPS_OUT, 'webpack-plain');
const BG = 'rgb(240, 248, 255)';
const V3_BG = 'rgb(255, 228, 225)';
const ABOUT = 'rgb(0, 0, 128)';
const V3_ABOUT = 'rgb(139, 0, 0)';

const stylesheets = (/** @type {Page} */ page) =>
  page.evaluate(() => [...document.querySelectorAll('link[rel=stylesheet]')].map((l) => new URL(/** @type {HTMLLinkElement} */ (l).href).pathname));
const colour = (/** @type {Page} */ page, /** @type {string} */ selector) =>
  page.evaluate((s) => getComputedStyle(/** @type {Element} */ (document.querySelector(s))).color, selector);

describe('a webpack app across deploys', () => {
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
    await server.deploy(path.join(built, 'v1'), 'v1', { promote: true });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('loads v1 and, after v2 is promoted, still opens v1’s lazy route with its stylesheet', async () => {
    await page.goto(server.url + '/');
    await page.waitForFunction(() => window.appBuild === '1');
    await page.evaluate(() => window.skewless.configure({ policy: 'prompt' }));
    await server.deploy(path.join(built, 'v2'), 'v2');
    await server.promote('v2');
    await page.waitForFunction(() => window.appEvents.some((e) => e.type === 'update-available' && e.current === 'v2'));
    await page.click('#to-about');
    await page.waitForSelector('#about');
    expect(await page.textContent('#about')).toBe('About build 1');
    expect(await colour(page, '#about')).toBe(ABOUT);
    expect((await stylesheets(page)).every((p) => p.startsWith('/_r/v1/assets/'))).toBe(true);
  });

  it('swaps a CSS-only release in place, and styles a lazy route opened afterwards by it', async () => {
    // A tab on v2 that has not opened the lazy route yet.
    await page.goto(server.url + '/');
    await page.waitForFunction(() => window.appBuild === '2');
    expect(await page.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe(BG);
    const kept = await markDocument(page);
    const diffAsked = page.waitForResponse((r) => r.url().includes('/_skewless/diff?from=v2&to=v3'));
    await server.deploy(path.join(built, 'v3'), 'v3');
    await server.promote('v3');
    const diff = await (await diffAsked).json();
    expect(diff.only_stylesheets).toBe(true);
    // The runtime names the lazy stylesheet: the entry chunk was renamed too.
    expect(Object.keys(diff.renamed).filter((p) => p.endsWith('.js'))).toHaveLength(1);
    await page.waitForFunction(() => window.skewless.release === 'v3');
    await page.waitForFunction((bg) => getComputedStyle(document.body).backgroundColor === bg, V3_BG);
    await page.click('#to-about');
    await page.waitForSelector('#about');
    await page.waitForFunction((c) => getComputedStyle(document.getElementById('about')).color === c, V3_ABOUT);
    expect(await page.textContent('#about')).toBe('About build 2');
    expect((await stylesheets(page)).every((p) => p.startsWith('/_r/v3/assets/'))).toBe(true);
    expect(await kept.kept()).toBe(true);
    await screenshot(page, 'webpack-01-v3-swapped-about');
  });

  it('logged no errors in the console', () => {
    expect(errors).toEqual([]);
  });
});
