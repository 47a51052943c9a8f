/**
 * The opt-in service worker (`/_skewless/sw.js`, see `client/sw/`): registers
 * it for the whole origin, tells it which release this tab runs, answers it
 * when it asks, and unregisters it when the app turns the option off.
 */

const SCRIPT = '/_skewless/sw.js';

/**
 * @param {Window} win
 * @param {() => string | null} getRelease
 */
export function serviceWorker(win, getRelease) {
  const container = win.navigator.serviceWorker;
  /** @type {ServiceWorkerRegistration | undefined} */
  let registration;
  const announce = () => {
    const worker = container && container.controller;
    if (worker) worker.postMessage({ skewless: 'release', release: getRelease() });
  };
  /** @param {MessageEvent} event */
  const answer = (event) => {
    if (event.data && event.data.skewless === 'release?' && event.ports[0]) event.ports[0].postMessage(getRelease());
  };
  const stop = () => {
    if (!container) return;
    container.removeEventListener('message', answer);
    container.removeEventListener('controllerchange', announce);
  };
  return {
    announce,
    stop,
    /**
     * Registers the worker (`on`), or removes a skewless worker left from
     * before (`!on`).
     * @param {boolean} on
     */
    set(on) {
      if (!container) return;
      stop();
      if (on) {
        container.addEventListener('message', answer);
        container.addEventListener('controllerchange', announce);
        container.startMessages();
        container.register(SCRIPT, { scope: '/', updateViaCache: 'none' }).then(
          (r) => (registration = r),
          () => {},
        );
        announce();
      } else if (container.controller && container.controller.scriptURL.endsWith(SCRIPT)) {
        container.getRegistration().then((r) => r && r.unregister());
      }
    },
    /** Asks the browser to check the worker's script (where the gateway's kill switch shows). */
    update() {
      if (registration) registration.update().catch(() => {});
    },
  };
}
