// localStorage migrations with several tabs of one origin, against the real gateway.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectErrors, launchBrowser, markDocument, recordReloadReasons, screenshot, startServer } from './support.js';

/** @typedef {import('playwright-core').Page} Page */

const read = (/** @type {Page} */ page, /** @type {() => any} */ fn) => page.evaluate(fn).catch(() => null);

describe('storage migrations across tabs', () => {
  /** @type {Awaited<ReturnType<typeof startServer>>} */
  let server;
  /** @type {import('playwright-core').Browser} */
  let browser;
  /** @type {string[]} */
  const errors = [];

  beforeAll(async () => {
    [server, browser] = await Promise.all([startServer(), launchBrowser()]);
    await server.deploy('store-s1', 's1', { promote: true });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** A browser context with fresh storage whose console errors are collected. */
  const freshContext = async () => {
    const context = await browser.newContext();
    const collected = collectErrors(context);
    return { context, done: () => errors.push(...collected) };
  };

  it('an old tab meeting a newer stored schema reloads instead of writing', async () => {
    const { context, done } = await freshContext();
    const old = await context.newPage();
    await old.goto(server.url + '/');
    await old.waitForFunction(() => window.migrationResult?.to === 1);
    await old.fill('#notes', 'written under schema 1');
    await old.click('#save');
    const oldDocument = await markDocument(old);
    const reload = await recordReloadReasons(old);

    await server.deploy('store-s2', 's2', { promote: true });
    await old.waitForFunction(() => window.skewless.current === 's2');
    // reload-on-navigation: the old tab keeps running until something forces it.
    expect(await oldDocument.kept()).toBe(true);
    await old.fill('#notes', 'typed later, must not overwrite schema 2 data');

    const fresh = await context.newPage();
    await fresh.goto(server.url + '/');
    await fresh.waitForFunction(() => window.migrationResult !== undefined);
    expect(await fresh.evaluate(() => window.migrationResult)).toMatchObject({ from: 1, to: 2, migrated: true });

    // The old tab saw the newer schema, dropped its pagehide autosave and reloaded onto s2.
    await expect.poll(() => read(old, () => window.appBuild), { timeout: 10000 }).toBe('store-2');
    expect(await oldDocument.kept()).toBe(false);
    expect(await reload.reasons()).toEqual(['schema']);
    await old.waitForFunction(() => window.migrationResult !== undefined);
    expect(await old.evaluate(() => window.migrationResult)).toMatchObject({ from: 2, to: 2, migrated: false });
    const stored = await fresh.evaluate(() => ({
      notes: JSON.parse(localStorage.getItem('notes')),
      schema: localStorage.getItem('skewless:schema'),
      runs: localStorage.getItem('migration-runs'),
    }));
    expect(stored).toEqual({ notes: { text: 'written under schema 1', schema: 2 }, schema: '2', runs: '1' });
    expect(await old.inputValue('#notes')).toBe('written under schema 1');
    await screenshot(old, '06-old-tab-reloaded-onto-newer-schema');
    await context.close();
    done();
  });

  it('a migration runs exactly once when two tabs start it at the same time', async () => {
    const { context, done } = await freshContext();
    const [a, b] = await Promise.all([context.newPage(), context.newPage()]);
    await Promise.all([a.goto(server.url + '/'), b.goto(server.url + '/')]);
    await Promise.all([a, b].map((page) => page.waitForFunction(() => window.migrationResult !== undefined)));
    const results = await Promise.all([a, b].map((page) => page.evaluate(() => window.migrationResult)));
    const winner = results.find((r) => r.migrated);
    const waiter = results.find((r) => !r.migrated);
    expect(winner).toMatchObject({ from: 0, to: 2 });
    expect(waiter).toMatchObject({ from: 2, to: 2, newer: false });
    // The second tab asked while the first was still migrating: it waited for the lock.
    expect(waiter.calledAt).toBeLessThan(winner.resolvedAt);
    expect(await a.evaluate(() => localStorage.getItem('migration-runs'))).toBe('1');
    await screenshot(b, '07-two-tabs-one-migration');
    await context.close();
    done();
  });

  it('logged no errors in the console', () => {
    expect(errors).toEqual([]);
  });
});
