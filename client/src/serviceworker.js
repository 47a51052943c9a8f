/**
 * The opt-in service worker (`/_skewless/sw.js`, see `client/sw/`): registers
 * it for the whole origin, tells it which release this tab runs, answers it
 * when it asks, and unregisters it when the app turns the option off. An app
 * whose own worker imports `/_skewless/sw-pin.js` gets the telling and
 * answering without the registration.
 */

/** `on`: register `/_skewless/sw.js`; `own`: the app registers a worker of its own; `off`. @typedef {'on' | 'own' | 'off'} WorkerMode */

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
     * Registers the worker (`on`), talks to the app's own (`own`), or removes
     * a skewless worker left from before (`off`).
     * @param {WorkerMode} mode
     */
    set(mode) {
      if (!container) return;
      stop();
      if (mode !== 'off') {
        container.addEventListener('message', answer);
        container.addEventListener('controllerchange', announce);
        container.startMessages();
        if (mode === 'on') {
          container.register(SCRIPT, { scope: '/', updateViaCache: 'none' }).then(
            (r) => (registration = r),
            () => {},
          );
        }
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
