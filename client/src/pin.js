/**
 * Pinning: which release this tab runs, and telling the gateway so on every
 * same-origin `fetch` and `XMLHttpRequest`, while reading back the release the
 * gateway says is current.
 */

/** Request header naming the release a client runs. */
export const RELEASE_HEADER = 'Skewless-Release';
/** Response header naming the current release. */
export const CURRENT_HEADER = 'Skewless-Current';

/**
 * The release this page was built from, as injected into the shell.
 * @param {Document} doc
 * @returns {string | null}
 */
export function readRelease(doc) {
  const meta = doc.querySelector('meta[name="skewless-release"]');
  return (meta && meta.getAttribute('content')) || null;
}

/**
 * Whether `url` (absolute or relative to `base`) has the origin of `base`.
 * @param {string} url
 * @param {string} base
 */
export function isSameOrigin(url, base) {
  try {
    return new URL(url, base).origin === new URL(base).origin;
  } catch {
    return false;
  }
}

/**
 * Wraps `win.fetch` and `win.XMLHttpRequest` so that same-origin requests
 * carry the release header and their responses report the current release.
 * Other origins are left untouched: the header would leak the release and
 * trigger CORS preflights.
 * @param {Window & typeof globalThis} win
 * @param {() => string | null} getRelease
 * @param {(current: string | null) => void} observe
 * @returns {() => void} undoes the wrapping
 */
export function pinRequests(win, getRelease, observe) {
  const fetch = win.fetch;
  const xhr = win.XMLHttpRequest && win.XMLHttpRequest.prototype;
  const { open, send, setRequestHeader } = xhr || {};
  /** @type {WeakMap<XMLHttpRequest, {url: string, pinned: boolean}>} */
  const requests = new WeakMap();
  const local = (/** @type {string} */ url) =>
    !!getRelease() && isSameOrigin(url, win.location.href);

  if (fetch) {
    /** @type {typeof fetch} */
    win.fetch = function (input, init) {
      const request = input instanceof win.Request ? input : null;
      if (!local(request ? request.url : String(input))) {
        return fetch.call(win, input, init);
      }
      const headers = new Headers((init && init.headers) || (request ? request.headers : undefined));
      if (!headers.has(RELEASE_HEADER)) headers.set(RELEASE_HEADER, /** @type {string} */ (getRelease()));
      return fetch.call(win, input, { ...init, headers }).then((response) => {
        observe(response.headers.get(CURRENT_HEADER));
        return response;
      });
    };
  }

  if (xhr) {
    /** @type {any} */
    const patched = xhr;
    patched.open = function (/** @type {string} */ _method, /** @type {string | URL} */ url) {
      requests.set(this, { url: String(url), pinned: false });
      return open.apply(this, /** @type {any} */ (arguments));
    };
    patched.setRequestHeader = function (/** @type {string} */ name, /** @type {string} */ value) {
      const state = requests.get(this);
      if (state && name.toLowerCase() === RELEASE_HEADER.toLowerCase()) state.pinned = true;
      return setRequestHeader.call(this, name, value);
    };
    patched.send = function (/** @type {any} */ body) {
      const state = requests.get(this);
      if (state && local(state.url)) {
        if (!state.pinned) setRequestHeader.call(this, RELEASE_HEADER, /** @type {string} */ (getRelease()));
        this.addEventListener('load', () => observe(this.getResponseHeader(CURRENT_HEADER)));
      }
      return send.call(this, body);
    };
  }

  return () => {
    if (fetch) win.fetch = fetch;
    if (xhr) Object.assign(xhr, { open, send, setRequestHeader });
  };
}
