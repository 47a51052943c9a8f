// Several tabs of one app, and the prompt policy, against the real gateway.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectErrors, launchBrowser, markDocument, recordReloadReasons, screenshot, startServer } from './support.js';

describe('tabs and prompts', () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('playwright-core').Browser} */
  let browser;
  /** @type {import('playwright-core').BrowserContext} */
  let context;
  /** @type {string[]} */
  let errors;

  beforeAll(async () => {
    [server, browser] = await Promise.all([startServer(), launchBrowser()]);
    context = await browser.newContext();
    errors = collectErrors(context);
    await server.deploy('app-v1', 'v1', { promote: true });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  it("one tab's discovery reaches a tab that has no channel of its own", async () => {
    const informed = await context.newPage();
    // This tab's event stream never connects and it does not poll: only the
    // other tab can tell it about a new release.
    // (A pattern, not a glob: /_skewless/events.js is one of the client's own modules.)
    await informed.route(/\/_skewless\/events\?/, (route) => route.fulfill({ status: 503, body: '' }));
    await informed.goto(server.url + '/?policy=prompt');
    const listening = await context.newPage();
    await listening.goto(server.url + '/');
    await listening.waitForFunction(() => window.skewless.current === 'v1');
    await informed.waitForFunction(() => window.appBuild === 'build-1');

    await server.deploy('app-v2', 'v2', { promote: true });
    await listening.waitForFunction(() => window.skewless.current === 'v2');
    await informed.waitForFunction(() => window.skewless.current === 'v2', null, { timeout: 5000 });
    await informed.waitForSelector('#banner:not([hidden])');
    await screenshot(informed, '10-informed-by-another-tab');
    await listening.close();

    // prompt: nothing happens until the app applies the update.
    const v1Document = await markDocument(informed);
    const reload = await recordReloadReasons(informed);
    await informed.click('#apply');
    await informed.waitForFunction(() => window.appBuild === 'build-2');
    expect(await v1Document.kept()).toBe(false);
    expect(await reload.reasons()).toEqual(['update']);
    expect(await informed.evaluate(() => window.skewless.release)).toBe('v2');
    await informed.close();
  });

  it('logged no errors in the console other than the refused event stream', () => {
    expect(errors.filter((e) => !/status of 503/.test(e))).toEqual([]);
  });
});
