// Makes docs/dashboard.png from a real deploy: two releases, tabs (event
// streams) arriving on v1, a canary of v2, the promotion, and v1's tabs
// moving over, sampled every 5 s for about ten minutes. Not part of the test
// suite (it takes real time): run it by hand after changing the dashboard,
//   SKEWLESS_BIN=../target/debug/skewless node tests/e2e/dashboard-screenshot.js
import http from 'node:http';
import path from 'node:path';
import { CLIENT_DIR, launchBrowser, startServer } from './support.js';

const TOKEN = 'e2e-admin-token';
const OUT = process.argv[2] || path.join(CLIENT_DIR, '../docs/dashboard.png');
const wait = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

const server = await startServer({ args: ['--sample-interval-secs', '5', '--presence-window-secs', '20'] });
/** @type {Map<string, http.ClientRequest[]>} */
const open = new Map([['v1', []], ['v2', []]]);
let n = 0;

/** Opens one tab's event stream on `release`. @param {string} release */
function tab(release) {
  const req = http.get(`${server.url}/_skewless/events?release=${release}&client=screenshot-tab-${String(n++).padStart(8, '0')}`, {
    agent: false,
  });
  req.on('error', () => {});
  open.get(release)?.push(req);
}

/** Closes one tab of `release`. @param {string} release */
function close(release) {
  open.get(release)?.shift()?.destroy();
}

try {
  await server.deploy('app-v1', 'v1', { promote: true });
  for (let i = 0; i < 14; i++) {
    tab('v1');
    await wait(9000);
  }
  await server.deploy('app-v2', 'v2');
  await server.promote('v2', { percent: 20 });
  for (let i = 0; i < 4; i++) {
    tab('v2');
    await wait(15000);
  }
  await server.promote('v2');
  for (let i = 0; i < 12; i++) {
    close('v1');
    tab('v2');
    await wait(15000);
  }
  await server.deploy('app-v3', 'v3');
  await server.promote('v3', { percent: 10 });
  tab('v3');
  await wait(12000);

  const browser = await launchBrowser();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  await page.goto(`${server.url}/_skewless/dashboard`);
  await page.getByLabel('Admin or read token').fill(TOKEN);
  await page.keyboard.press('Enter');
  await page.locator('#board').waitFor({ state: 'visible' });
  await page.getByLabel('Show the last').selectOption('900');
  await page.locator('path[data-release="v3"]').waitFor({ state: 'attached' });
  await page.screenshot({ path: OUT, fullPage: true });
  console.log(`wrote ${OUT}`);
  await browser.close();
} finally {
  for (const list of open.values()) for (const req of list) req.destroy();
  await server.stop();
}
