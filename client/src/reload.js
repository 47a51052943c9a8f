/**
 * Reload bookkeeping kept in sessionStorage, which survives a reload of the
 * same tab and nothing else: the app's snapshot, what the last reload was for
 * (so a reload that lands on the same release is not repeated), which
 * releases already spent their one chunk-error reload, and the tab's client id.
 */

const SNAPSHOT = 'skewless:snapshot';
const LAST = 'skewless:reload';
const CHUNK = 'skewless:chunk';
const CLIENT = 'skewless:client';
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * A random client id: 22 characters of `[A-Za-z0-9_-]` (132 bits).
 * @param {Crypto} crypto
 */
export function randomClientId(crypto) {
  return Array.from(crypto.getRandomValues(new Uint8Array(22)), (byte) => ALPHABET[byte & 63]).join('');
}

/**
 * Why the client reloads a tab.
 * @typedef {'update' | 'required' | 'chunk-error' | 'schema' | 'navigation'} ReloadReason
 */

/** @typedef {{from: string | null, to: string | null, reason: ReloadReason}} ReloadRecord */

/**
 * sessionStorage access that never throws (storage can be disabled or full).
 * @param {Storage | undefined} store
 */
export function sessionRecords(store) {
  /** @param {string} key */
  const read = (key) => {
    try {
      const raw = store && store.getItem(key);
      return raw == null ? undefined : JSON.parse(raw);
    } catch {
      return undefined;
    }
  };
  /** @param {string} key @param {unknown} value */
  const write = (key, value) => {
    try {
      if (store) {
        if (value === undefined) store.removeItem(key);
        else store.setItem(key, JSON.stringify(value));
      }
    } catch {
      // Without sessionStorage the reload still happens, only without state.
    }
  };
  /** @param {string} key */
  const take = (key) => {
    const value = read(key);
    write(key, undefined);
    return value;
  };
  return {
    /** Stores the app's snapshot for the page that loads next. */
    saveSnapshot(/** @type {unknown} */ data) {
      write(SNAPSHOT, data === undefined ? undefined : { data });
    },
    /** Removes and returns the snapshot left by the previous page, if any. */
    takeSnapshot() {
      /** @type {{data: unknown} | undefined} */
      const saved = take(SNAPSHOT);
      return saved;
    },
    /** Notes why this page is about to reload. */
    recordReload(/** @type {ReloadRecord} */ record) {
      write(LAST, record);
    },
    /** Removes and returns the note left by the previous page, if any. @returns {ReloadRecord | undefined} */
    takeReload() {
      return take(LAST);
    },
    /** Whether a chunk error on `release` may still reload: once per release per tab. */
    chunkReloadAllowed(/** @type {string | null} */ release) {
      const done = read(CHUNK);
      return !(Array.isArray(done) && done.includes(release));
    },
    markChunkReload(/** @type {string | null} */ release) {
      const done = read(CHUNK);
      write(CHUNK, [...(Array.isArray(done) ? done : []), release]);
    },
    /**
     * Removes and returns the client id the previous page of this tab left,
     * if it is well-formed. The id is only stored while no page of the tab
     * runs (see `keepClientId`): a duplicated tab, or a window opened from
     * this one, gets a copy of sessionStorage, and must not get the id too.
     * @returns {string | undefined}
     */
    takeClientId() {
      const id = take(CLIENT);
      return typeof id === 'string' && /^[\w-]{16,64}$/.test(id) ? id : undefined;
    },
    /** Leaves the client id to the next page of this tab (call on pagehide). */
    keepClientId(/** @type {string | undefined} */ id) {
      write(CLIENT, id);
    },
  };
}

/**
 * Drops the pin cookie, so the page load that follows is not held on the old
 * release by a cookie that only the old page still needed.
 * @param {Document} doc
 */
export function clearPinCookie(doc) {
  doc.cookie = 'skewless_release=; Path=/; Max-Age=0; SameSite=Lax';
}
