// Boilerplate for the end-to-end tests: start the real gateway on port 0
// with a temporary data directory, drive its CLI, launch Debian's Chromium.
import { execFile, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const CLIENT_DIR = fileURLToPath(new URL('../../', import.meta.url));
export const FIXTURES = path.join(CLIENT_DIR, 'tests/fixtures');
export const ARTIFACTS = path.join(CLIENT_DIR, 'artifacts');
export const BIN = path.resolve(CLIENT_DIR, process.env.SKEWLESS_BIN || '../target/debug/skewless');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const TOKEN = 'e2e-admin-token';

/**
 * @param {string} file
 * @param {string[]} args
 * @returns {Promise<string>} stdout
 */
function run(file, args) {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 30000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${path.basename(file)} ${args.join(' ')} failed: ${error.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/**
 * Starts `skewless serve` and resolves once it printed its address.
 * @param {{args?: string[], listen?: string, data?: string}} [options] `args`: more `serve` flags;
 *   `listen` and `data` to start again where a stopped server was (default: port 0, a new directory)
 */
export async function startServer({ args = [], listen = '127.0.0.1:0', data = mkdtempSync(path.join(tmpdir(), 'skewless-e2e-')) } = {}) {
  if (!existsSync(BIN)) throw new Error(`skewless binary not found at ${BIN}: run cargo build or set SKEWLESS_BIN`);
  const child = spawn(BIN, ['serve', '--listen', listen, '--data', data, '--admin-token', TOKEN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SKEWLESS_LOG: process.env.SKEWLESS_LOG || 'warn' },
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const url = await new Promise((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => reject(new Error(`skewless serve did not start within 20 s:\n${stderr}`)), 20000);
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const match = /skewless listening on (http:\/\/\S+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`skewless serve exited (${code}) before listening:\n${stderr}`));
    });
  });
  try {
    await assertServesCurrentClient(url);
  } catch (error) {
    child.kill('SIGTERM');
    throw error;
  }
  const cli = (/** @type {string[]} */ ...args) => run(BIN, [...args, '--server', url, '--token', TOKEN]);
  return {
    url,
    data,
    /** Deploys a fixture directory (or any directory, by absolute path) as release `id`, optionally with a back-end URL or a managed back-end command. */
    deploy: (/** @type {string} */ fixture, /** @type {string} */ id, { promote = false, backend = '', backendCmd = '' } = {}) =>
      cli(
        'deploy',
        path.resolve(FIXTURES, fixture),
        '--release',
        id,
        ...(promote ? ['--promote'] : []),
        ...(backend ? ['--backend', backend] : []),
        ...(backendCmd ? ['--backend-cmd', backendCmd] : []),
      ),
    promote: (/** @type {string} */ id, { required = false, percent = 100 } = {}) =>
      cli('promote', id, ...(required ? ['--required'] : []), ...(percent < 100 ? ['--percent', String(percent)] : [])),
    abortCanary: () => cli('canary', 'abort'),
    rollback: () => cli('rollback'),
    retire: (/** @type {string} */ id) => cli('retire', id),
    /**
     * `GET /_skewless/api/v1/status` with the admin token.
     * @returns {Promise<{current: string, clients: Record<string, {streams: number, recent: number, total: number}>}>}
     */
    async status() {
      const response = await fetch(`${url}/_skewless/api/v1/status`, { headers: { Authorization: `Bearer ${TOKEN}` } });
      if (!response.ok) throw new Error(`GET /_skewless/api/v1/status: HTTP ${response.status}`);
      return response.json();
    },
    get stderr() {
      return stderr;
    },
    /** Stops the server and removes its data directory, unless `keepData`. */
    async stop({ keepData = false } = {}) {
      child.kill('SIGTERM');
      await exited;
      if (!keepData) rmSync(data, { recursive: true, force: true });
    },
  };
}

/**
 * The binary embeds client/src at compile time: make sure it serves the
 * sources under test, not those of an older build.
 * @param {string} url
 */
async function assertServesCurrentClient(url) {
  for (const dir of ['src', 'sw']) {
    for (const name of readdirSync(path.join(CLIENT_DIR, dir)).filter((n) => n.endsWith('.js'))) {
      const response = await fetch(`${url}/_skewless/${name}`);
      const served = response.ok ? await response.text() : `HTTP ${response.status}`;
      // The service worker's kill switch puts one line in front.
      if (served.replace(/^self\.skewlessOff = true;\n/, '') !== readFileSync(path.join(CLIENT_DIR, dir, name), 'utf8')) {
        throw new Error(`${BIN} serves a different /_skewless/${name} than client/${dir}/${name}: rebuild it (cargo build -p skewless)`);
      }
    }
  }
}

/** Launches Debian's Chromium; never a downloaded browser. */
export function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * Collects console errors and uncaught exceptions of every page opened in
 * `context` (also after reloads and navigations).
 * @param {import('playwright-core').BrowserContext} context
 * @returns {string[]}
 */
export function collectErrors(context) {
  /** @type {string[]} */
  const errors = [];
  const watch = (/** @type {import('playwright-core').Page} */ page) => {
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(`console error at ${page.url()}: ${message.text()}`);
    });
    page.on('pageerror', (error) => errors.push(`uncaught at ${page.url()}: ${error.message}`));
  };
  context.pages().forEach(watch);
  context.on('page', watch);
  return errors;
}

/**
 * Saves a screenshot to artifacts/<name>.png.
 * @param {import('playwright-core').Page} page
 * @param {string} name
 */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/**
 * Marks the current document so a later check can tell whether the page was
 * reloaded (the mark is gone) or kept (the mark is still there).
 * @param {import('playwright-core').Page} page
 */
export async function markDocument(page) {
  const mark = Math.random().toString(36).slice(2);
  await page.evaluate((value) => {
    /** @type {any} */ (window).__documentMark = value;
  }, mark);
  return {
    /** Whether the marked document is still the one shown. */
    kept: () => page.evaluate((value) => /** @type {any} */ (window).__documentMark === value, mark),
  };
}

/**
 * Remembers, across the reload it announces, why the client of the current
 * document reloads it; `reasons()` reads the list back from the next document.
 * @param {import('playwright-core').Page} page
 */
export async function recordReloadReasons(page) {
  await page.evaluate(() =>
    window.skewless.on('reloading', (detail) => {
      const reasons = JSON.parse(sessionStorage.getItem('e2e:reload-reasons') || '[]');
      sessionStorage.setItem('e2e:reload-reasons', JSON.stringify([...reasons, detail.reason]));
    }),
  );
  return {
    reasons: () => page.evaluate(() => JSON.parse(sessionStorage.getItem('e2e:reload-reasons') || '[]')),
  };
}

/**
 * A back end for the apps' `/api/` calls: answers every request with its
 * name and the Skewless-* headers it received.
 * @param {string} [name]
 */
export async function startBackend(name = 'backend') {
  const server = createServer((req, res) => {
    res.setHeader('Content-Type', 'application/json');
    res.end(
      JSON.stringify({
        backend: name,
        path: req.url,
        release: req.headers['skewless-release'] ?? null,
        client: req.headers['skewless-client'] ?? null,
      }),
    );
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve(undefined))),
  };
}
