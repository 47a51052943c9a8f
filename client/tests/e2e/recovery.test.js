// Chunk-load recovery against the real gateway.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectErrors, launchBrowser, markDocument, recordReloadReasons, screenshot, startServer } from './support.js';

/** @typedef {import('playwright-core').Page} Page */

const read = (/** @type {Page} */ page, /** @type {() => any} */ fn) => page.evaluate(fn).catch(() => null);

describe('chunk-load recovery', () => {
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

  it('a tab that missed the retirement of its release (stream down) reloads when a lazy chunk is gone', async () => {
    const context = await browser.newContext();
    const errors = collectErrors(context);
    await server.deploy('app-v1', 'r1', { promote: true });
    const page = await context.newPage();
    // A retirement reaches an open stream as `event: required` (tested in
    // lifecycle.test.js); this tab's stream is down, so only the failed chunk
    // tells it. (A pattern, not a glob: /_skewless/events.js is a module.)
    await page.route(/\/_skewless\/events\?/, (route) => route.fulfill({ status: 503, body: '' }));
    await page.goto(server.url + '/');
    await page.evaluate(() => window.skewless.check());
    await page.waitForFunction(() => window.skewless.current === 'r1');
    await page.evaluate(() => window.skewless.configure({ policy: 'prompt' }));
    const r1Document = await markDocument(page);
    const reload = await recordReloadReasons(page);
    await server.deploy('app-v2', 'r2', { promote: true });
    await server.retire('r1');
    await page.click('#lazy');
    await expect.poll(() => read(page, () => window.appBuild), { timeout: 10000 }).toBe('build-2');
    expect(await r1Document.kept()).toBe(false);
    expect(await page.evaluate(() => window.skewless.release)).toBe('r2');
    expect(await reload.reasons()).toEqual(['chunk-error']);
    await screenshot(page, '08-retired-release-recovered');
    // The only errors are the browser's report of the missing chunk and of the refused stream.
    expect(errors.filter((e) => !/404|status of 503/.test(e))).toEqual([]);
    await context.close();
  });

  it('a broken release reloads once, never in a loop', async () => {
    const context = await browser.newContext();
    const errors = collectErrors(context);
    await server.deploy('broken', 'b1', { promote: true });
    const page = await context.newPage();
    await page.goto(server.url + '/');
    await page.waitForFunction(() => window.skewless.current === 'b1');
    const first = await markDocument(page);
    const reload = await recordReloadReasons(page);
    await page.click('#lazy');
    await expect.poll(() => first.kept().catch(() => null), { timeout: 10000 }).toBe(false);
    await page.waitForFunction(() => window.appEvents !== undefined);
    const second = await markDocument(page);
    await page.click('#lazy');
    await page.waitForFunction(() => window.appEvents.some((e) => e.type === 'chunk-error'));
    expect(await page.evaluate(() => window.appEvents)).toEqual([{ type: 'chunk-error', willReload: false }]);
    expect(await second.kept()).toBe(true);
    expect(await reload.reasons()).toEqual(['chunk-error']);
    await screenshot(page, '09-broken-release-no-loop');
    // Left to the app (no reload): the browser reports the failed import.
    expect(errors.filter((e) => !/404|dynamically imported module/.test(e))).toEqual([]);
    await context.close();
  });
});
