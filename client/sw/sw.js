/**
 * The skewless service worker, served as `/_skewless/sw.js` with
 * `Service-Worker-Allowed: /` and registered by the browser client when the
 * app opts in (`<meta name="skewless-service-worker" content="on">`).
 *
 * All it does is pin (see sw-pin.js): it caches nothing and every answer
 * comes from the network. When the gateway's kill switch is on
 * (`self.skewlessOff`), it unregisters itself as soon as the browser fetches
 * it again (at the next page load, or when the client checks for a new
 * release).
 */
importScripts('/_skewless/sw-pin.js');

/** @type {ServiceWorkerGlobalScope & {skewlessPin: SkewlessPin}} */
const worker = /** @type {any} */ (self);

worker.addEventListener('install', () => worker.skipWaiting());

worker.addEventListener('activate', (event) => {
  event.waitUntil(worker.skewlessPin.off ? worker.registration.unregister() : worker.clients.claim());
});

worker.addEventListener('fetch', (event) => {
  worker.skewlessPin.handle(event);
});
