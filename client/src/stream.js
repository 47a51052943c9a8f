/**
 * The push channel: `/_skewless/events` as server-sent events, reconnected
 * with jittered exponential backoff so a gateway restart is not met by every
 * open tab at the same instant.
 */

/** @typedef {import('./poll.js').ReleaseState} ReleaseState */

/**
 * Delay before reconnect attempt `attempt` (0-based): "equal jitter", half
 * fixed and half random, doubling up to `max`.
 * @param {number} attempt
 * @param {number} [base]
 * @param {number} [max]
 * @param {() => number} [random]
 */
export function backoff(attempt, base = 1000, max = 30000, random = Math.random) {
  const cap = Math.min(max, base * 2 ** attempt);
  return cap / 2 + (random() * cap) / 2;
}

/**
 * Opens the event stream and keeps it open until `close()`.
 * @param {() => string} url evaluated on each (re)connect, so it can follow the tab's release
 * @param {(type: string, state: ReleaseState) => void} onEvent
 * @param {typeof EventSource} [Source]
 */
export function openStream(url, onEvent, Source = globalThis.EventSource) {
  /** @type {EventSource | null} */
  let source = null;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  let attempt = 0;
  let closed = false;

  /** @param {Event} event */
  const handle = (event) => {
    try {
      onEvent(event.type, JSON.parse(/** @type {MessageEvent} */ (event).data));
    } catch {
      // A malformed event is skipped; the next one or a poll catches up.
    }
  };

  const connect = () => {
    clearTimeout(timer);
    if (source) source.close();
    const es = (source = new Source(url()));
    es.onopen = () => {
      attempt = 0;
    };
    es.addEventListener('release', handle);
    es.addEventListener('required', handle);
    // EventSource's own retry is fixed-interval and gives up for good on an
    // HTTP error status, so reconnection is taken over here.
    es.onerror = () => {
      es.close();
      if (!closed && source === es) timer = setTimeout(connect, backoff(attempt++));
    };
  };

  if (Source) connect();
  return {
    /** Reconnects now, e.g. when the browser comes back online or the tab's release changed. */
    reconnect() {
      if (!closed && Source) connect();
    },
    /** Whether the stream is currently connected. */
    get open() {
      return !!source && source.readyState === 1;
    },
    close() {
      closed = true;
      clearTimeout(timer);
      if (source) source.close();
    },
  };
}
