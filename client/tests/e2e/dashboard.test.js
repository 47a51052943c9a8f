// The operations dashboard against the real gateway in real Chromium: log in
// with a token kept in session storage, watch a release's live clients and
// its plot rise as event streams open (no reload), promote through the
// button after a confirmation and see an open app tab move over, and a read
// token that sees everything but no action. Any console error or
// Content-Security-Policy violation fails the run.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_DIR, collectErrors, launchBrowser, markDocument, startServer } from './support.js';

/** @typedef {import('playwright-core').Page} Page */
/** @typedef {import('playwright-core').BrowserContext} BrowserContext */

const ADMIN_TOKEN = 'e2e-admin-token';
const READ_TOKEN = 'e2e-read-token-0123456789';
const SHOTS = path.join(CLIENT_DIR, 'test-results/dashboard');
/** A managed back end: answers every path, health check included. */
const MANAGED_BACKEND = `node -e "require('node:http').createServer((q, s) => s.end('ok')).listen(Number(process.argv[1]), '127.0.0.1')" {port}`;

/**
 * Saves a screenshot of a key moment under test-results/dashboard/.
 * @param {Page} page @param {string} name
 */
async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/**
 * A context whose pages report every CSP violation as a console error.
 * @param {import('playwright-core').Browser} browser
 * @param {'light' | 'dark'} [colorScheme]
 */
async function watchedContext(browser, colorScheme = /** @type {'light' | 'dark'} */ ('light')) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme });
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline code'}`);
    });
  });
  const collected = collectErrors(context);
  return { context, collected };
}

/**
 * Opens the dashboard and logs in with `token`.
 * @param {BrowserContext} context @param {string} url @param {string} token
 */
async function login(context, url, token) {
  const page = await context.newPage();
  await page.goto(`${url}/_skewless/dashboard`);
  await page.getByLabel('Admin or read token').fill(token);
  await page.getByRole('button', { name: 'Open dashboard' }).click();
  await page.locator('#board').waitFor({ state: 'visible' });
  await page.locator('tr[data-release="v1"]').waitFor();
  return page;
}

/**
 * Polls `fn` until the matcher holds: ten seconds by default, as the page
 * refreshes every two seconds on a shared machine.
 * @template T
 * @param {() => T | Promise<T>} fn @param {{timeout?: number}} [options]
 */
const eventually = (fn, options = {}) => expect.poll(fn, { timeout: 10000, ...options });

/** The number a selector's attribute holds, or -1. @param {Page} page @param {string} selector @param {string} attr */
const numberAt = (page, selector, attr) =>
  page
    .locator(selector)
    .getAttribute(attr, { timeout: 1000 })
    .then((v) => Number(v ?? -1))
    .catch(() => -1);

describe('dashboard', () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('playwright-core').Browser} */
  let browser;
  /** @type {string[][]} */
  const errorLists = [];
  /** @type {BrowserContext[]} */
  const contexts = [];
  /** @type {Page} */
  let board;

  /** A watched context, closed after the suite. */
  const open = async (/** @type {'light' | 'dark'} */ colorScheme = 'light') => {
    const { context, collected } = await watchedContext(browser, colorScheme);
    errorLists.push(collected);
    contexts.push(context);
    return context;
  };

  beforeAll(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'skewless-dash-'));
    const config = path.join(dir, 'skewless.toml');
    writeFileSync(config, `[[tokens]]\nname = "viewer"\ntoken = "${READ_TOKEN}"\nrole = "read"\n`);
    [server, browser] = await Promise.all([
      startServer({ args: ['--config', config, '--sample-interval-secs', '1'] }),
      launchBrowser(),
    ]);
    await server.deploy('app-v1', 'v1', { promote: true });
    // v2 brings a back end the gateway runs, to show its health.
    await server.deploy('app-v2', 'v2', { backendCmd: MANAGED_BACKEND });
  });

  afterAll(async () => {
    for (const c of contexts) await c.close().catch(() => {});
    await browser?.close();
    await server?.stop();
    expect(errorLists.flat()).toEqual([]);
  });

  it('logs in with a token kept in session storage, never in the URL', async () => {
    const context = await open();
    const page = await context.newPage();
    await page.goto(`${server.url}/_skewless/dashboard`);
    await eventually(() => page.locator('#login').isVisible()).toBe(true);
    await shot(page, '01-login');
    await page.getByLabel('Admin or read token').fill(ADMIN_TOKEN);
    await page.keyboard.press('Enter');
    await page.locator('#board').waitFor({ state: 'visible' });
    expect(page.url()).toBe(`${server.url}/_skewless/dashboard`);
    expect(await page.evaluate(() => sessionStorage.getItem('skewless-admin-token'))).toBe(ADMIN_TOKEN);
    await eventually(() => page.locator('#who').textContent()).toBe('admin (admin)');
    await eventually(() => page.locator('#summary').textContent()).toBe('current v1');
    // A reload of the tab keeps the token; the login form stays hidden.
    await page.reload();
    await page.locator('#board').waitFor({ state: 'visible' });
    expect(await page.locator('#login').isVisible()).toBe(false);
    // The time of the last update moves on by itself.
    const first = await page.locator('#updated').getAttribute('datetime');
    await eventually(() => page.locator('#updated').getAttribute('datetime'), { timeout: 10000 }).not.toBe(first);
    // The single node lists itself, with v2's managed back end.
    await eventually(() => page.locator('#nodes tbody tr').count()).toBe(1);
    await eventually(() => page.locator('#nodes tbody tr td').last().textContent(), { timeout: 20000 }).toBe('v2 healthy');
    // Per release: its back end's health on every node.
    const node = await page.locator('#nodes tbody th').textContent();
    await eventually(() => page.locator('tr[data-release="v2"] .health').textContent()).toBe(`${node}: healthy`);
    board = page;
  });

  it("shows a release's clients and its plot rise as event streams open, without a reload", async () => {
    const mark = await markDocument(board);
    const before = await numberAt(board, 'tr[data-release="v1"] td[data-clients]', 'data-clients');
    expect(before).toBeGreaterThanOrEqual(0);

    // Three tabs' worth of event streams from another browser context.
    const streams = await (await open()).newPage();
    // Any same-origin page will do; the login page requests nothing more.
    await streams.goto(`${server.url}/_skewless/dashboard`);
    await streams.evaluate(() => {
      /** @type {any} */ (window).sources = [1, 2, 3].map(
        (n) => new EventSource(`/_skewless/events?release=v1&client=dashboard-e2e-${n}-0000000`),
      );
    });
    await expect
      .poll(() => numberAt(board, 'tr[data-release="v1"] td[data-clients]', 'data-clients'), { timeout: 15000 })
      .toBe(before + 3);
    await expect
      .poll(() => numberAt(board, 'path[data-release="v1"]', 'data-last'), { timeout: 15000 })
      .toBe(before + 3);
    expect(await numberAt(board, 'path[data-release="v1"]', 'data-points')).toBeGreaterThan(1);
    expect(await board.locator('#plot desc').textContent()).toContain(`v1: ${before + 3} at`);
    expect(await board.locator('#legend').textContent()).toContain('v1 (current)');
    // The split bar colours a release as its line in the plot.
    const colourOf = async (/** @type {string} */ selector) =>
      ((await board.locator(selector).getAttribute('class')) ?? '').split(' ').find((c) => /^s\d$/.test(c));
    const lineColour = await colourOf('path[data-release="v1"]');
    expect(lineColour).toMatch(/^s\d$/);
    expect(await colourOf('#split .segment.current')).toBe(lineColour);
    expect(await mark.kept()).toBe(true);
    await shot(board, '02-clients-rise');

    // The longer windows draw the same series.
    await board.getByLabel('Show the last').selectOption('86400');
    await eventually(() => board.locator('#plot title').textContent()).toContain('24 hours');
    expect(await numberAt(board, 'path[data-release="v1"]', 'data-last')).toBe(before + 3);
    await board.getByLabel('Show the last').selectOption('3600');
    await streams.close();
  });

  it('promotes through the button after a confirmation, and an open app tab moves over', async () => {
    const app = await (await open()).newPage();
    await app.goto(`${server.url}/`);
    await app.waitForFunction(() => window.skewless?.current === 'v1');

    await board.getByRole('button', { name: 'Promote v2' }).click();
    const dialog = board.locator('#confirm');
    await dialog.waitFor({ state: 'visible' });
    expect(await dialog.locator('#confirm-text').textContent()).toContain(
      'v2 becomes the current release: every new page load gets it, v1 starts draining',
    );
    await shot(board, '03-confirm-promote');
    // The safe choice has the focus; Escape cancels and changes nothing.
    expect(await board.evaluate(() => document.activeElement?.id)).toBe('confirm-cancel');
    await board.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
    expect((await server.status()).current).toBe('v1');
    // The focus is back on the button, and stays there across refreshes.
    const focusedLabel = () => board.evaluate(() => document.activeElement?.getAttribute('aria-label'));
    expect(await focusedLabel()).toBe('Promote v2');
    const updated = await board.locator('#updated').getAttribute('datetime');
    await eventually(() => board.locator('#updated').getAttribute('datetime'), { timeout: 10000 }).not.toBe(updated);
    expect(await focusedLabel()).toBe('Promote v2');

    // By keyboard alone: focus the button, open, move to confirm, press it.
    await board.getByRole('button', { name: 'Promote v2' }).focus();
    await board.keyboard.press('Enter');
    await dialog.waitFor({ state: 'visible' });
    await board.keyboard.press('Tab');
    expect(await board.evaluate(() => document.activeElement?.textContent)).toBe('Promote v2');
    await board.keyboard.press('Enter');
    await app.waitForFunction(() => window.skewless.current === 'v2');
    // Its next in-app navigation loads v2.
    await app.click('#to-settings');
    await app.waitForFunction(() => window.skewless?.release === 'v2');
    await eventually(() => board.locator('#summary').textContent()).toBe('current v2');
    await expect
      .poll(() => board.locator('#history tbody tr').first().textContent())
      .toMatch(/promote.*v2.*admin.*v1 → v2/);
    expect((await server.status()).current).toBe('v2');
    await eventually(() => numberAt(board, 'path[data-release="v2"]', 'data-last'), { timeout: 15000 }).toBeGreaterThan(0);
    await shot(board, '04-promoted');

    await board.getByRole('button', { name: 'Retire v1' }).click();
    await dialog.getByRole('button', { name: 'Retire v1' }).click();
    await eventually(() => board.locator('tr[data-release="v1"] td:nth-of-type(1)').textContent()).toBe('retired');

    // A canary through the dialog, then aborted.
    await server.deploy('app-v3', 'v3');
    await board.locator('tr[data-release="v3"]').waitFor();
    await board.getByRole('button', { name: 'Canary v3' }).click();
    await dialog.getByLabel('Share of new sessions (%)').fill('25');
    await dialog.getByRole('button', { name: 'Start canary of v3' }).click();
    await eventually(() => board.locator('#summary').textContent()).toBe('current v2 · canary v3 at 25 %');
    await eventually(() => board.locator('#split').getAttribute('aria-label')).toBe(
      'New sessions: 75 % to v2 (current), 25 % to v3 (canary)',
    );
    await shot(board, '05-canary');
    await board.getByRole('button', { name: 'Abort canary' }).click();
    await dialog.getByRole('button', { name: 'Abort canary' }).click();
    await eventually(() => board.locator('#summary').textContent()).toBe('current v2');
    expect((await server.status()).current).toBe('v2');

    // An action the API refuses (the release before v2 is retired) shows
    // its error in one line.
    await board.getByRole('button', { name: 'Promote v3' }).click();
    await dialog.getByRole('button', { name: 'Promote v3' }).click();
    await eventually(() => board.locator('#summary').textContent()).toBe('current v3');
    await board.getByRole('button', { name: 'Roll back' }).click();
    await dialog.getByRole('button', { name: 'Roll back' }).click();
    await eventually(() => board.locator('#summary').textContent()).toBe('current v2');
    await board.getByRole('button', { name: 'Roll back' }).click();
    await dialog.getByRole('button', { name: 'Roll back' }).click();
    await eventually(() => board.locator('#error').isVisible()).toBe(true);
    // Chromium logs the refused request itself; that one line is expected.
    const boardErrors = errorLists[0];
    await eventually(() => boardErrors.filter((e) => e.includes('status of 409')).length).toBe(1);
    boardErrors.splice(boardErrors.findIndex((e) => e.includes('status of 409')), 1);
    const error = await board.locator('#error').textContent();
    expect(error).toMatch(/^POST \/rollback: .+/);
    expect(error).not.toContain('\n');
    await shot(board, '06-refused');
    await app.close();
  });

  it('shows a read token everything but no action (in the dark colour scheme)', async () => {
    const page = await login(await open('dark'), server.url, READ_TOKEN);
    expect(await page.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe('rgb(17, 22, 28)');
    await eventually(() => page.locator('#who').textContent()).toBe('viewer (read only)');
    await page.locator('#history tbody tr').first().waitFor();
    expect(await page.locator('#global-actions').isVisible()).toBe(false);
    expect(await page.locator('td.actions button, #global-actions button').count()).toBe(0);
    expect(await page.locator('thead th.admin-only').isVisible()).toBe(false);
    for (const name of ['Promote', 'Canary', 'Retire', 'Require', 'Roll back', 'Abort canary']) {
      expect(await page.getByRole('button', { name }).count(), name).toBe(0);
    }
    expect(await page.locator('#plot svg').count()).toBe(1);
    await shot(page, '07-read-only');
    // And the API refuses the actions to it.
    const refused = await fetch(`${server.url}/_skewless/api/v1/releases/v3/promote`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${READ_TOKEN}`, 'Content-Type': 'application/json' },
      body: '{}',
    });
    expect(refused.status).toBe(403);
  });
});

describe('dashboard series', () => {
  it('is fetched once per sampling interval and again for another window, while the rest refreshes every two seconds', async () => {
    const [server, browser] = await Promise.all([startServer(), launchBrowser()]);
    try {
      await server.deploy('app-v1', 'v1', { promote: true });
      const { context, collected } = await watchedContext(browser);
      /** @type {string[]} */
      const asked = [];
      context.on('request', (r) => asked.push(new URL(r.url()).pathname + new URL(r.url()).search));
      const page = await login(context, server.url, ADMIN_TOKEN);
      const count = (/** @type {string} */ prefix) => asked.filter((p) => p.startsWith(`/_skewless/api/v1${prefix}`)).length;
      // Three refreshes within the default 15 s sampling interval.
      await eventually(() => count('/status')).toBeGreaterThanOrEqual(3);
      expect(count('/clients/history')).toBe(1);
      expect(await page.locator('#plot svg').count()).toBe(1);
      // Another window is fetched at once.
      await page.getByLabel('Show the last').selectOption('86400');
      await eventually(() => count('/clients/history?seconds=86400')).toBe(1);
      await eventually(() => page.locator('#plot title').textContent()).toContain('24 hours');
      expect(collected).toEqual([]);
      await context.close();
    } finally {
      await browser.close();
      await server.stop();
    }
  });
});
