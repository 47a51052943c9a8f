/**
 * The skewless browser client: knows which release this tab runs, learns
 * when another one becomes current, and moves the tab over by the app's
 * policy without breaking what the person is doing.
 *
 * `start()` returns the page's one client (`window.skewless`), creating it if
 * the injected `/_skewless/client.js` has not already done so.
 */

import { createEmitter } from './events.js';
import { pinRequests, readRelease } from './pin.js';
import { effectivePolicy, interceptNavigation, reloadWhenHidden } from './policy.js';
import { schedulePolling, versionCheck } from './poll.js';
import { watchChunkFailures } from './recovery.js';
import { clearPinCookie, randomClientId, sessionRecords } from './reload.js';
import { migrate } from './storage.js';
import { openStream } from './stream.js';
import { serviceWorker } from './serviceworker.js';
import { followRenames, onlyStylesheets, redirectInserted, swapStylesheets, swapping } from './stylesheet.js';
import { openTabs, staggerDelay } from './tabs.js';

/** @typedef {import('./policy.js').Policy} Policy */
/** @typedef {import('./poll.js').ReleaseState} ReleaseState */
/** @typedef {import('./reload.js').ReloadReason} ReloadReason */
/** @typedef {import('./storage.js').MigrationOptions} MigrationOptions */
/** @typedef {import('./storage.js').MigrationResult} MigrationResult */

/**
 * @typedef {object} Options
 * @property {Policy} [policy] what to do when a newer release is current (default `reload-on-navigation`)
 * @property {number} [pollInterval] ms between version checks while visible; 0 turns the timer off (default 60000)
 * @property {number} [hiddenDelay] ms a tab must stay hidden before `when-hidden` reloads it (default 60000)
 * @property {number} [stagger] background tabs spread their policy reloads over this many ms (default 5000)
 * @property {boolean} [stream] listen to `/_skewless/events` (default true)
 * @property {boolean} [cssSwap] adopt stylesheet-only releases without a reload (default true)
 * @property {boolean} [chunkRecovery] reload once when a lazy chunk fails to load (default true)
 * @property {boolean | 'on' | 'own' | 'off'} [serviceWorker] `true`/`'on'`: register `/_skewless/sw.js` so that every request of the tab is pinned; `'own'`: the app's own worker imports `/_skewless/sw-pin.js` (default false)
 */

/**
 * Event name → detail passed to listeners.
 * @typedef {{
 *   'update-available': {release: string | null, current: string, apply: () => boolean},
 *   'update-required': {release: string | null, current: string | null, reason: 'release' | 'schema'},
 *   'reloading': {reason: ReloadReason, release: string | null, current: string | null},
 *   'chunk-error': {url?: string, error?: unknown, willReload: boolean},
 *   'css-swapped': {from: string, to: string}
 * }} ClientEvents
 */

/** @type {Required<Options>} */
export const DEFAULTS = {
  policy: 'reload-on-navigation',
  pollInterval: 60000,
  hiddenDelay: 60000,
  stagger: 5000,
  stream: true,
  cssSwap: true,
  chunkRecovery: true,
  serviceWorker: false,
};

/**
 * Options written into the page as `<meta name="skewless-<option>">`, e.g.
 * `<meta name="skewless-policy" content="prompt">` or
 * `<meta name="skewless-poll-interval" content="30000">`.
 * @param {Document} doc
 * @returns {Options}
 */
export function readOptions(doc) {
  /** @type {Record<string, unknown>} */
  const options = {};
  for (const meta of /** @type {NodeListOf<HTMLMetaElement>} */ (doc.querySelectorAll('meta[name^="skewless-"]'))) {
    const key = meta.name.slice(9).replace(/-(\w)/g, (_, c) => c.toUpperCase());
    const raw = meta.content;
    if (key !== 'release') options[key] = /^\d+$/.test(raw) ? Number(raw) : raw === 'true' || (raw !== 'false' && raw);
  }
  return options;
}

/**
 * @param {Options} [options]
 * @param {{window?: Window & typeof globalThis, load?: (href?: string) => void}} [env]
 *   `load` performs the page load (tests replace it); default `location.assign` / `location.reload`
 */
export function createClient(options = {}, env = {}) {
  const win = env.window || window;
  const doc = win.document;
  const load = env.load || ((href) => (href ? win.location.assign(href) : win.location.reload()));
  /** @type {Required<Options>} */
  const opts = { ...DEFAULTS, ...options };
  /** @type {import('./events.js').Emitter<ClientEvents>} */
  const emitter = createEmitter();
  /** @type {Storage | undefined} */
  let sessionStore;
  try {
    sessionStore = win.sessionStorage;
  } catch {
    // Storage disabled: no snapshots and no reload guards beyond this page.
  }
  const session = sessionRecords(sessionStore);
  // For presence: one id per tab, kept across its reloads.
  const clientId = session.takeClientId() || randomClientId(win.crypto);
  const rawFetch = win.fetch.bind(win);
  /** @type {(() => void)[]} */
  const stops = [];

  let release = readRelease(doc);
  /** @type {string | null} */
  let current = null;
  let generation = -1;
  let required = false;
  /** The newer release being handled (stylesheet check or announce). */
  /** @type {string | null} */
  let pending = null;
  /** The newer release the app was told about. */
  /** @type {string | null} */
  let announced = null;
  /** @type {string | null} */
  let forced = null;
  let reloading = false;
  let restored = session.takeSnapshot();
  const last = session.takeReload();
  // The previous page reloaded to reach `last.to` but the gateway served this
  // same release again (a sticky canary, a pin it keeps): reloading again for
  // that release would loop.
  const stuck = last && last.from === release ? last.to : undefined;
  /** @type {Set<() => unknown>} */
  const snapshots = new Set();
  /** Stylesheet paths of this page's code → their paths in the adopted release. */
  /** @type {import('./stylesheet.js').Names} */
  const names = new Map();
  let redirecting = false;
  const sw = serviceWorker(win, () => release);
  const worker = () => sw.set(opts.serviceWorker === true || opts.serviceWorker === 'on' ? 'on' : opts.serviceWorker === 'own' ? 'own' : 'off');
  stops.push(sw.stop);

  /**
   * @param {ReloadReason} reason
   * @param {string} [href] a navigation target instead of reloading this URL
   */
  const reload = (reason, href) => {
    if (reloading) return;
    reloading = true;
    emitter.emit('reloading', { reason, release, current });
    let data;
    for (const fn of snapshots) {
      try {
        const value = fn();
        if (value !== undefined) data = value;
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    }
    session.saveSnapshot(data);
    session.recordReload({ from: release, to: current, reason });
    clearPinCookie(doc);
    load(href);
  };

  const outdated = () => !!current && !!release && current !== release;
  const ready = () => !reloading && outdated() && announced === current;

  /** @param {ReloadReason} reason */
  const scheduleReload = (reason) => {
    setTimeout(
      () => outdated() && reload(reason),
      staggerDelay(doc.visibilityState !== 'hidden', opts.stagger),
    );
  };

  const apply = () => {
    if (!outdated()) return false;
    reload('update');
    return true;
  };

  /** @param {string} next */
  const adopt = (next) => {
    const from = /** @type {string} */ (release);
    release = next;
    pending = announced = null;
    const meta = doc.querySelector('meta[name="skewless-release"]');
    if (meta) meta.setAttribute('content', next);
    if (stream) stream.reconnect();
    sw.announce();
    emitter.emit('css-swapped', { from, to: next });
    evaluate();
  };

  /**
   * Adopts `target` in place if it differs from this tab's release only in
   * stylesheets.
   * @param {string} target
   */
  const trySwap = async (target) => {
    const from = /** @type {string} */ (release);
    try {
      const response = await rawFetch(
        '/_skewless/diff?from=' + encodeURIComponent(from) + '&to=' + encodeURIComponent(target),
        { cache: 'no-store' },
      );
      if (!response.ok) return false;
      const diff = await response.json();
      if (!onlyStylesheets(diff) || pending !== target || release !== from) return false;
      if (!(await swapStylesheets(doc, from, target, diff))) return false;
      if (!redirecting) stops.push(redirectInserted(win, names, () => release));
      redirecting = true;
      followRenames(names, diff);
      adopt(target);
      return true;
    } catch {
      return false;
    }
  };

  const announce = () => {
    const policy = effectivePolicy(opts.policy, false);
    if (policy === 'immediate') scheduleReload('update');
    if (policy === 'when-hidden') hidden.arm();
  };

  const evaluate = () => {
    if (!outdated()) {
      pending = announced = forced = null;
      return;
    }
    const target = /** @type {string} */ (current);
    if (target === stuck) return;
    if (required) {
      if (forced === target) return;
      forced = target;
      emitter.emit('update-required', { release, current: target, reason: 'release' });
      scheduleReload('required');
      return;
    }
    if (pending === target) return;
    pending = target;
    (opts.cssSwap ? trySwap(target) : Promise.resolve(false)).then((swapped) => {
      if (swapped || pending !== target || current !== target) return;
      announced = target;
      emitter.emit('update-available', { release, current: target, apply });
      announce();
    });
  };

  /**
   * @param {ReleaseState | null | undefined} state
   * @param {'stream' | 'poll' | 'header' | 'tab'} source
   */
  const learn = (state, source) => {
    if (!state || typeof state.current !== 'string') return;
    if (typeof state.generation === 'number') {
      if (state.generation < generation) return;
      generation = state.generation;
    }
    if (state.current !== current) {
      if (source !== 'tab') tabs.post({ release, current: state.current, generation: state.generation });
      required = false;
      sw.update();
    }
    current = state.current;
    // Only the gateway's own answers know whether *this* release must go.
    if (source !== 'tab' && typeof state.required === 'boolean') required = state.required;
    evaluate();
  };

  const versionOf = versionCheck(rawFetch, () => release, clientId);
  /** @returns {Promise<ReleaseState | null>} */
  const check = () =>
    release
      ? versionOf().then(
          (state) => (learn(state, 'poll'), state),
          () => null,
        )
      : Promise.resolve(null);

  const tabs = openTabs((message) => {
    if (!message || !message.current || message.current === current) return;
    // The gateway answers per release (a canary's clients are told the
    // canary): another tab's news holds for this one only if it runs the same
    // release; otherwise it is a reason to ask.
    if (message.release === release) learn(message, 'tab');
    else check();
  });
  stops.push(tabs.close);

  const hidden = reloadWhenHidden(
    doc,
    () => opts.hiddenDelay,
    () => ready() && effectivePolicy(opts.policy, false) === 'when-hidden',
    () => reload('update'),
  );
  stops.push(hidden.stop);

  const stream =
    release && opts.stream && win.EventSource
      ? openStream(
          () => '/_skewless/events?release=' + encodeURIComponent(/** @type {string} */ (release)) + '&client=' + clientId,
          (type, state) => learn(type === 'required' ? { ...state, required: true } : state, 'stream'),
          win.EventSource,
        )
      : null;

  /** @type {{restart(): void} | null} */
  let poller = null;
  if (release) {
    stops.push(
      pinRequests(win, () => release, clientId, (seen, to) => {
        // Skewless-Required: this release must go now, to `to`.
        if (to) learn({ current: to, required: true }, 'header');
        // A header only names the current release; ask the gateway for the
        // rest (generation, required), trusting the header if that fails.
        else if (seen && seen !== current) check().then((state) => state || learn({ current: seen }, 'header'));
      }),
      interceptNavigation(
        win,
        () => ready() && effectivePolicy(opts.policy, false) === 'reload-on-navigation',
        (href) => reload('navigation', href),
      ),
    );
    const polling = schedulePolling(win, () => opts.pollInterval, check);
    poller = polling;
    stops.push(polling.stop);
    // The id waits in sessionStorage only while no page of this tab runs, so
    // that a duplicated tab (which gets a copy of sessionStorage) makes its own.
    /** @param {PageTransitionEvent} event */
    const keepId = (event) => (event.type === 'pagehide' ? session.keepClientId(clientId) : session.takeClientId());
    /** @param {Event} event */
    const resume = (event) => {
      // Back online, or restored from the back/forward cache: the stream may
      // be long dead, and releases may have changed meanwhile.
      if (stream && !stream.open) stream.reconnect();
      if (event.type === 'pageshow' && /** @type {PageTransitionEvent} */ (event).persisted) check();
    };
    win.addEventListener('online', resume);
    win.addEventListener('pageshow', resume);
    win.addEventListener('pagehide', keepId);
    win.addEventListener('pageshow', keepId);
    stops.push(() => {
      if (stream) stream.close();
      win.removeEventListener('online', resume);
      win.removeEventListener('pageshow', resume);
      win.removeEventListener('pagehide', keepId);
      win.removeEventListener('pageshow', keepId);
    });
  }

  if (release) worker();

  if (opts.chunkRecovery) {
    stops.push(
      watchChunkFailures(
        win,
        (failure) => {
          const willReload = !reloading && session.chunkReloadAllowed(release);
          emitter.emit('chunk-error', { ...failure, willReload });
          if (willReload) {
            session.markChunkReload(release);
            reload('chunk-error');
          }
          return willReload;
        },
        (el) => swapping.has(el),
      ),
    );
  }

  return {
    /** The release this tab runs (the page's, or the one adopted by a stylesheet swap). */
    get release() {
      return release;
    },
    /** The current release as last heard from the gateway; null until first heard. */
    get current() {
      return current;
    },
    /** This tab's random id, sent as `Skewless-Client` for presence; kept across reloads of the tab. */
    get clientId() {
      return clientId;
    },
    /** The policy in force for a release that is not required. */
    get policy() {
      return effectivePolicy(opts.policy, false);
    },
    /**
     * Subscribes to an event; returns the unsubscribe function. A listener for
     * `update-available` added after the announcement still hears it.
     * @template {keyof ClientEvents} K
     * @param {K} type
     * @param {(detail: ClientEvents[K]) => void} fn
     */
    on(type, fn) {
      if (type === 'update-available' && ready()) {
        const detail = /** @type {ClientEvents[K]} */ ({ release, current, apply });
        queueMicrotask(() => ready() && fn(detail));
      }
      return emitter.on(type, fn);
    },
    /** Asks the gateway now; resolves to its answer, or null if it could not be asked. */
    check,
    /** Reloads onto the current release if it is newer; false when there is nothing to apply. */
    apply,
    /**
     * Changes options after start (e.g. the policy of the auto-started client).
     * @param {Options} next
     */
    configure(next) {
      Object.assign(opts, next);
      if (poller) poller.restart();
      if (release && 'serviceWorker' in next) worker();
      if (ready()) announce();
    },
    /**
     * Registers a function whose return value is kept in sessionStorage when
     * skewless reloads the page; read it back with `restoredState()`.
     * @param {() => unknown} fn
     */
    onBeforeReload(fn) {
      snapshots.add(fn);
      return () => {
        snapshots.delete(fn);
      };
    },
    /** The snapshot saved before the reload that loaded this page, once; undefined otherwise. */
    restoredState() {
      const saved = restored;
      restored = undefined;
      return saved && saved.data;
    },
    /**
     * Migrates localStorage to `options.version` (see MigrationOptions); if
     * the stored schema is newer, freezes localStorage and reloads.
     * @param {MigrationOptions} options
     * @returns {Promise<MigrationResult>}
     */
    migrateStorage(options) {
      return migrate(win, options, () => {
        emitter.emit('update-required', { release, current, reason: 'schema' });
        // Reloading onto the same old code again cannot help: stay read-only.
        if (!(last && last.reason === 'schema' && last.from === release)) reload('schema');
      });
    },
    /** Removes every listener and wrapper this client installed. */
    stop() {
      for (const stop of stops.splice(0)) stop();
    },
  };
}

/** @typedef {ReturnType<typeof createClient>} Client */

/**
 * The page's client: the existing `window.skewless` (reconfigured with
 * `options` if given), or a new one configured from the page's meta tags and
 * `options`.
 * @param {Options} [options]
 * @returns {Client}
 */
export function start(options) {
  const win = /** @type {Window & {skewless?: Client}} */ (window);
  if (win.skewless) {
    if (options) win.skewless.configure(options);
    return win.skewless;
  }
  return (win.skewless = createClient({ ...readOptions(document), ...options }));
}
