/**
 * Across tabs: one tab's discovery of a new release reaches every tab of the
 * origin over a BroadcastChannel, and reloads of many tabs are spread out.
 */

/**
 * @param {(message: any) => void} onMessage
 * @param {string} [name]
 * @returns {{post(message: unknown): void, close(): void}}
 */
export function openTabs(onMessage, name = 'skewless') {
  if (typeof BroadcastChannel !== 'function') return { post() {}, close() {} };
  /** @type {BroadcastChannel | null} */
  let channel = new BroadcastChannel(name);
  channel.onmessage = (event) => onMessage(event.data);
  return {
    post(message) {
      // A request still under way when the client stopped may finish later.
      if (channel) channel.postMessage(message);
    },
    close() {
      if (channel) channel.close();
      channel = null;
    },
  };
}

/**
 * How long a tab waits before a policy reload. The tab the person is looking
 * at goes at once; background tabs spread over `window` ms so that many tabs
 * do not hit the gateway in the same instant.
 * @param {boolean} visible
 * @param {number} window
 * @param {() => number} [random]
 */
export function staggerDelay(visible, window, random = Math.random) {
  return visible ? 0 : Math.round(random() * window);
}
