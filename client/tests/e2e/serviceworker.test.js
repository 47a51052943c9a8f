// The opt-in service worker in a browser: registered by configure(), the
// pinning imported into an app's own worker, and the kill switch (a gateway
// restarted with `--service-worker false` makes the installed worker
// unregister, without the tab reloading).
import { createServer } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectErrors, launchBrowser, markDocument, startServer } from './support.js';

describe('the service worker', () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('playwright-core').Browser} */
  let browser;
  /** @type {import('playwright-core').BrowserContext} */
  let context;
  /** @type {import('playwright-core').Page} */
  let page;
  /** @type {string[]} */
  let errors;
  /** A back end whose `/api/avatar` redirects to an image on another origin. */
  /** @type {import('node:http').Server} */
  let backend;
  let backendPort = 0;

  beforeAll(async () => {
    backend = createServer((req, res) => {
      if (req.url === '/api/avatar') {
        res.writeHead(302, { Location: `http://localhost:${backendPort}/avatar.svg` }).end();
      } else {
        res.writeHead(200, { 'Content-Type': 'image/svg+xml' });
        res.end('<svg xmlns="http://www.w3.org/2000/svg" width="33" height="33"/>');
      }
    });
    await new Promise((resolve) => backend.listen(0, '127.0.0.1', () => resolve(undefined)));
    backendPort = /** @type {import('node:net').AddressInfo} */ (backend.address()).port;
    [server, browser] = await Promise.all([startServer(), launchBrowser()]);
    context = await browser.newContext();
    errors = collectErrors(context);
    page = await context.newPage();
    await server.deploy('app-v1', 'v1', { promote: true, backend: `http://127.0.0.1:${backendPort}` });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    await new Promise((resolve) => (backend ? backend.close(() => resolve(undefined)) : resolve(undefined)));
  });

  const registrations = () => page.evaluate(() => navigator.serviceWorker.getRegistrations().then((r) => r.length));

  it('registers when the app turns the option on, and pins the tab’s own requests', async () => {
    await page.goto(server.url + '/');
    await page.waitForFunction(() => window.skewless.release === 'v1');
    await page.evaluate(() => window.skewless.configure({ serviceWorker: true }));
    await page.waitForFunction(() => !!navigator.serviceWorker.controller);
    expect(await registrations()).toBe(1);
    // An image the page makes by itself goes out, from the worker, with the tab's release.
    const image = context.waitForEvent('request', (r) => r.url().endsWith('/style.css?by=img') && !!r.serviceWorker());
    await page.evaluate(() => {
      new Image().src = '/style.css?by=img';
    });
    expect((await image).headers()['skewless-release']).toBe('v1');
    // A same-origin URL redirecting to another origin still loads.
    const width = await page.evaluate(
      () =>
        new Promise((resolve) => {
          const img = new Image();
          img.onload = () => resolve(img.naturalWidth);
          img.onerror = () => resolve(-1);
          img.src = '/api/avatar';
        }),
    );
    expect(width).toBe(33);
  });

  it('pins through an app’s own worker that imports sw-pin.js, without registering its own', async () => {
    await server.deploy('own-sw', 'own1', { promote: true });
    // A browser profile of its own: no skewless worker registered before.
    const ownContext = await browser.newContext();
    const own = await ownContext.newPage();
    const ownErrors = collectErrors(ownContext);
    await own.goto(server.url + '/');
    await own.waitForFunction(() => window.skewless.release === 'own1');
    await own.waitForFunction(() => navigator.serviceWorker.controller?.scriptURL.endsWith('/app-sw.js'));
    const image = ownContext.waitForEvent('request', (r) => r.url().endsWith('/own.css?by=img') && !!r.serviceWorker());
    await own.evaluate(() => {
      new Image().src = '/own.css?by=img';
    });
    expect((await image).headers()['skewless-release']).toBe('own1');
    const scripts = await own.evaluate(() =>
      navigator.serviceWorker.getRegistrations().then((all) => all.map((r) => new URL(r.active.scriptURL).pathname)),
    );
    expect(scripts).toEqual(['/app-sw.js']);
    await ownContext.close();
    expect(ownErrors).toEqual([]);
  });

  it('unregisters once the gateway says so, at the next release the tab hears of', async () => {
    const kept = await markDocument(page);
    const { url, data } = server;
    await server.stop({ keepData: true });
    server = await startServer({ listen: url.replace('http://', ''), data, args: ['--service-worker', 'false'] });
    expect(server.url).toBe(url);
    await server.deploy('app-v2', 'v2', { promote: true });
    await page.waitForFunction(() => window.skewless.current === 'v2', null, { timeout: 15000 });
    await expect.poll(registrations, { timeout: 10000 }).toBe(0);
    expect(await kept.kept()).toBe(true);
  });

  it('logged no errors in the console', () => {
    expect(errors).toEqual([]);
  });
});
