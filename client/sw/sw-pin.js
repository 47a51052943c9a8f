/**
 * skewless pinning for service workers, served as `/_skewless/sw-pin.js`.
 *
 * Adds `Skewless-Release: <release of the tab>` to the same-origin requests a
 * tab (or a dedicated worker it started) makes by itself: images, fonts,
 * worker scripts, a worker's `fetch`, files of `public/` at unversioned paths.
 * It never caches and never answers from anything but the network.
 *
 * `/_skewless/sw.js` is built on it. An app with a service worker of its own
 * imports it instead:
 *
 *   importScripts('/_skewless/sw-pin.js');
 *   self.addEventListener('fetch', (event) => {
 *     if (self.skewlessPin.handle(event)) return; // pinned and sent
 *     // … the app's own handling
 *   });
 *
 * or, where the app's worker fetches by itself (a Workbox plugin):
 *
 *   { requestWillFetch: ({ request, event }) => self.skewlessPin.pin(request, event.clientId) }
 *
 * The gateway's kill switch (`service_worker = false`) serves this file with
 * `self.skewlessOff = true;` in front: then nothing is pinned or answered.
 */
/**
 * The worker's global scope, with what the gateway and this file put on it.
 * @typedef {ServiceWorkerGlobalScope & {skewlessOff?: boolean, skewlessPin?: SkewlessPin}} Scope
 * @typedef {{
 *   off: boolean,
 *   pin(request: Request, clientId: string): Promise<Request>,
 *   handle(event: FetchEvent): boolean,
 *   releaseOf(clientId: string): Promise<string | null>
 * }} SkewlessPin
 */
(function (/** @type {Scope} */ scope) {
  const HEADER = 'Skewless-Release';
  const ID = /^[A-Za-z0-9._-]{1,64}$/;
  const off = scope.skewlessOff === true;
  /** client id → its release (null: asked, none) @type {Map<string, string | null>} */
  const releases = new Map();
  /** client id → the pending question @type {Map<string, Promise<string | null>>} */
  const asking = new Map();

  /** The release a URL under `/_r/<id>/` belongs to. @param {string} url */
  const fromUrl = (url) => {
    const m = /^\/_r\/([^/]+)\//.exec(new URL(url).pathname);
    return m && ID.test(m[1]) && m[1] !== '.' && m[1] !== '..' ? m[1] : null;
  };

  // A tab's client announces its release, at start and after a stylesheet swap.
  scope.addEventListener('message', (event) => {
    const data = event.data;
    const source = /** @type {Client | null} */ (event.source);
    if (data && data.skewless === 'release' && source && ID.test(data.release)) {
      releases.set(source.id, data.release);
    }
  });

  /**
   * Asks a tab which release it runs (after this worker restarted and forgot).
   * @param {string} id
   * @returns {Promise<string | null>}
   */
  const ask = async (id) => {
    const client = await scope.clients.get(id);
    if (!client) return null;
    // A dedicated worker this service worker has not seen start: its script's URL.
    if (client.type !== 'window') return fromUrl(client.url);
    return new Promise((resolve) => {
      const channel = new MessageChannel();
      const timer = setTimeout(() => resolve(fromUrl(client.url)), 3000);
      channel.port1.onmessage = (event) => {
        clearTimeout(timer);
        resolve(ID.test(event.data) ? event.data : null);
      };
      client.postMessage({ skewless: 'release?' }, [channel.port2]);
    });
  };

  /**
   * The release of client `id`, asking it once if unknown.
   * @param {string} id
   * @returns {Promise<string | null>}
   */
  const releaseOf = (id) => {
    if (!id) return Promise.resolve(null);
    if (releases.has(id)) return Promise.resolve(releases.get(id) ?? null);
    let pending = asking.get(id);
    if (!pending) {
      pending = ask(id)
        .catch(() => null)
        .then((release) => {
          asking.delete(id);
          if (!releases.has(id)) releases.set(id, release);
          return releases.get(id) ?? null;
        });
      asking.set(id, pending);
    }
    return pending;
  };

  /** Whether a request needs the header: same origin, not a page load, not already pinned. @param {Request} request */
  const wanted = (request) => {
    if (off || request.mode === 'navigate' || request.headers.has(HEADER)) return false;
    const url = new URL(request.url);
    return (
      url.origin === scope.location.origin &&
      // Versioned paths name their release; system endpoints need no pin.
      !url.pathname.startsWith('/_r/') &&
      !url.pathname.startsWith('/_skewless/')
    );
  };

  /**
   * `request` with the release of client `clientId` as `Skewless-Release`
   * (unchanged when it is unknown or the request is not the gateway's to pin).
   * @param {Request} request
   * @param {string} clientId
   */
  const pin = async (request, clientId) => {
    if (!wanted(request)) return request;
    const release = await releaseOf(clientId);
    if (!release) return request;
    const headers = new Headers(request.headers);
    headers.set(HEADER, release);
    /** @type {RequestInit & {duplex?: 'half'}} */
    const init = {
      headers,
      // A no-cors request may carry no header of its own; same-origin it may,
      // and its response is the same.
      mode: request.mode === 'no-cors' ? 'same-origin' : request.mode,
    };
    if (request.method !== 'GET' && request.method !== 'HEAD') init.duplex = 'half';
    return new Request(request, init);
  };

  /**
   * Sends the request with its tab's release, when it needs one; returns
   * whether it answered the event.
   * @param {FetchEvent} event
   */
  const handle = (event) => {
    const request = event.request;
    // A dedicated worker belongs to the tab that fetched its script.
    if (event.resultingClientId && (request.destination === 'worker' || request.destination === 'sharedworker')) {
      const worker = event.resultingClientId;
      // Set before the worker's first request can ask for it.
      asking.set(
        worker,
        releaseOf(event.clientId).then((release) => {
          asking.delete(worker);
          releases.set(worker, release);
          return release;
        }),
      );
    }
    if (!wanted(request)) return false;
    event.respondWith(
      pin(request, event.clientId).then((pinned) =>
        // Sent as `same-origin`, a URL that redirects to another origin
        // fails: then it goes as the page made it, unpinned.
        pinned === request ? fetch(request) : fetch(pinned).catch(() => fetch(request)),
      ),
    );
    return true;
  };

  scope.skewlessPin = { off, pin, handle, releaseOf };
})(/** @type {any} */ (self));
