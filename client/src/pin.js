/**
 * Pinning: which release this tab runs, and telling the gateway so on every
 * same-origin `fetch` and `XMLHttpRequest`, while reading back the release the
 * gateway says is current.
 */

/** Request header naming the release a client runs. */
export const RELEASE_HEADER = 'Skewless-Release';
/** Request header carrying the tab's random client id (presence). */
export const CLIENT_HEADER = 'Skewless-Client';
/** Response header naming the current release (for this client: a canary's clients are told the canary). */
export const CURRENT_HEADER = 'Skewless-Current';
/** Response header naming the release to go to when the client's release must upgrade now. */
export const REQUIRED_HEADER = 'Skewless-Required';

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
 * carry the release and client id headers and their responses report the
 * current release, and whether this release must upgrade now. Other origins
 * are left untouched: the headers would leak the release and trigger CORS
 * preflights.
 * @param {Window & typeof globalThis} win
 * @param {() => string | null} getRelease
 * @param {string} client this tab's id, sent as `Skewless-Client`
 * @param {(current: string | null, required: string | null) => void} observe
 *   gets `Skewless-Current` and `Skewless-Required`; the latter only from
 *   requests that ran under this tab's release (not one the app set itself,
 *   nor the shared pin cookie's)
 * @returns {() => void} undoes the wrapping
 */
export function pinRequests(win, getRelease, client, observe) {
  const fetch = win.fetch;
  const xhr = win.XMLHttpRequest && win.XMLHttpRequest.prototype;
  const { open, send, setRequestHeader } = xhr || {};
  /** @type {WeakMap<XMLHttpRequest, {url: string, headers: Record<string, string>}>} */
  const requests = new WeakMap();
  const release = RELEASE_HEADER.toLowerCase();
  const id = CLIENT_HEADER.toLowerCase();
  /** This tab's release if a request for `url` goes to the gateway, else null. @param {string} url */
  const local = (url) => {
    const ours = getRelease();
    return ours && isSameOrigin(url, win.location.href) ? ours : null;
  };
  /**
   * @param {(name: string) => string | null} get a response header
   * @param {boolean} mine whether the request ran under this tab's release
   */
  const report = (get, mine) => observe(get(CURRENT_HEADER), mine ? get(REQUIRED_HEADER) : null);

  if (fetch) {
    /** @type {typeof fetch} */
    win.fetch = function (input, init) {
      const request = input instanceof win.Request ? input : null;
      const ours = local(request ? request.url : String(input));
      if (!ours) return fetch.call(win, input, init);
      const headers = new Headers((init && init.headers) || (request ? request.headers : undefined));
      if (!headers.has(release)) headers.set(RELEASE_HEADER, ours);
      if (!headers.has(id)) headers.set(CLIENT_HEADER, client);
      const mine = headers.get(release) === ours;
      return fetch.call(win, input, { ...init, headers }).then((response) => {
        report((name) => response.headers.get(name), mine);
        return response;
      });
    };
  }

  if (xhr) {
    /** @type {any} */
    const patched = xhr;
    patched.open = function (/** @type {string} */ _method, /** @type {string | URL} */ url) {
      requests.set(this, { url: String(url), headers: {} });
      return open.apply(this, /** @type {any} */ (arguments));
    };
    patched.setRequestHeader = function (/** @type {string} */ name, /** @type {string} */ value) {
      const state = requests.get(this);
      if (state) state.headers[name.toLowerCase()] = value;
      return setRequestHeader.call(this, name, value);
    };
    patched.send = function (/** @type {any} */ body) {
      const state = requests.get(this);
      const ours = state && local(state.url);
      if (state && ours) {
        const set = state.headers;
        // setRequestHeader would join a second value to the app's own.
        if (!(release in set)) setRequestHeader.call(this, RELEASE_HEADER, (set[release] = ours));
        if (!(id in set)) setRequestHeader.call(this, CLIENT_HEADER, client);
        const mine = set[release] === ours;
        this.addEventListener('load', () => report((name) => this.getResponseHeader(name), mine));
      }
      return send.call(this, body);
    };
  }

  return () => {
    if (fetch) win.fetch = fetch;
    if (xhr) Object.assign(xhr, { open, send, setRequestHeader });
  };
}
