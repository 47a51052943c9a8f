/**
 * The pull channel: `/_skewless/version`, asked with an ETag so an unchanged
 * answer is a bodiless 304, on an interval that pauses while the tab is hidden
 * and on focus, visibility and network recovery.
 */

import { CLIENT_HEADER, RELEASE_HEADER } from './pin.js';

/**
 * What the gateway says about releases, relative to the release that asked.
 * @typedef {{
 *   current: string,
 *   generation?: number,
 *   required_min?: string | null,
 *   required?: boolean
 * }} ReleaseState
 */

/**
 * Returns a function that fetches the version document for this tab's
 * release, reusing the last answer on 304. Concurrent calls share one request.
 * The tab's client id goes in the query (it counts the tab as a live client of
 * its release) and, with the release, in the request headers, so that the
 * gateway also sees the tab on a bodiless 304.
 * @param {typeof fetch} fetchFn
 * @param {() => string | null} getRelease
 * @param {string} client this tab's id
 * @returns {() => Promise<ReleaseState>}
 */
export function versionCheck(fetchFn, getRelease, client) {
  /** @type {{key: string, etag: string, state: ReleaseState} | null} */
  let last = null;
  /** @type {Promise<ReleaseState> | null} */
  let inflight = null;

  const run = async () => {
    const release = getRelease() || '';
    const key = '?release=' + encodeURIComponent(release) + '&client=' + client;
    // The answer depends on the asking release (its `required` flag, its
    // canary), so an ETag is only reused for the same question.
    const cached = last && last.key === key ? last : null;
    /** @type {Record<string, string>} */
    const headers = { [RELEASE_HEADER]: release, [CLIENT_HEADER]: client };
    if (cached) headers['If-None-Match'] = cached.etag;
    const response = await fetchFn('/_skewless/version' + key, { cache: 'no-store', headers });
    if (response.status === 304 && cached) return cached.state;
    if (!response.ok) throw new Error('skewless: version check failed with HTTP ' + response.status);
    /** @type {ReleaseState} */
    const state = await response.json();
    const etag = response.headers.get('ETag');
    last = etag ? { key, etag, state } : null;
    return state;
  };

  return () =>
    (inflight ||= run().finally(() => {
      inflight = null;
    }));
}

/**
 * Calls `check` every `interval()` ms while the document is visible, and at
 * once when the tab gains focus, becomes visible or goes back online.
 * @param {Window} win
 * @param {() => number} interval 0 or less disables the timer (events still check)
 * @param {() => void} check
 * @returns {{restart(): void, stop(): void}}
 */
export function schedulePolling(win, interval, check) {
  const doc = win.document;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  let last = 0;
  const now = () => {
    // focus and visibilitychange usually arrive together; one request will do.
    if (Date.now() - last < 1000) return;
    last = Date.now();
    check();
  };
  const onVisibility = () => {
    if (doc.visibilityState === 'visible') now();
  };
  const restart = () => {
    clearTimeout(timer);
    const ms = interval();
    if (ms > 0) {
      timer = setTimeout(() => {
        if (doc.visibilityState !== 'hidden') now();
        restart();
      }, ms);
    }
  };
  win.addEventListener('focus', now);
  win.addEventListener('online', now);
  doc.addEventListener('visibilitychange', onVisibility);
  restart();
  return {
    restart,
    stop() {
      clearTimeout(timer);
      win.removeEventListener('focus', now);
      win.removeEventListener('online', now);
      doc.removeEventListener('visibilitychange', onVisibility);
    },
  };
}
