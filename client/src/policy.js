/**
 * Policies: what an open tab does once it knows a newer release is current.
 * The app picks one; a release the server marks required always gets
 * `immediate`.
 */

/** @typedef {'reload-on-navigation' | 'prompt' | 'when-hidden' | 'immediate'} Policy */

/** @type {readonly Policy[]} */
export const POLICIES = ['reload-on-navigation', 'prompt', 'when-hidden', 'immediate'];

/**
 * The policy in force for one update.
 * @param {Policy | string | undefined} chosen
 * @param {boolean} required
 * @returns {Policy}
 */
export function effectivePolicy(chosen, required) {
  if (required) return 'immediate';
  return POLICIES.includes(/** @type {Policy} */ (chosen)) ? /** @type {Policy} */ (chosen) : 'reload-on-navigation';
}

/**
 * Turns same-origin in-app navigations into full page loads while `active()`
 * holds: plain left clicks on links (caught before the app's router sees
 * them), `history.pushState` to another URL, and back/forward.
 * @param {Window} win
 * @param {() => boolean} active
 * @param {(href: string) => void} load
 * @returns {() => void} removes the interception
 */
export function interceptNavigation(win, active, load) {
  const { history, location } = win;
  const pushState = history.pushState;
  /** @param {string | URL} href */
  const target = (href) => {
    const url = new URL(href, location.href);
    const elsewhere = url.origin === location.origin && (url.pathname !== location.pathname || url.search !== location.search);
    return elsewhere && active() ? url.href : null;
  };
  /** @param {MouseEvent} event */
  const onClick = (event) => {
    if (event.button || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const link = /** @type {HTMLAnchorElement | undefined} */ (
      event.composedPath().find((node) => /** @type {Element} */ (node).localName === 'a')
    );
    if (!link || !link.href || link.hasAttribute('download')) return;
    if (link.target && link.target !== '_self') return;
    const href = target(link.href);
    if (!href) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    load(href);
  };
  const onPop = () => {
    if (active()) load(location.href);
  };
  history.pushState = function (data, unused, url) {
    const href = url == null ? null : target(url);
    if (href) return load(href);
    return pushState.call(this, data, unused, url);
  };
  win.addEventListener('click', onClick, true);
  win.addEventListener('popstate', onPop);
  return () => {
    history.pushState = pushState;
    win.removeEventListener('click', onClick, true);
    win.removeEventListener('popstate', onPop);
  };
}

/**
 * Calls `fire` once the document has stayed hidden for `delay()` ms while
 * `active()` holds. Call the returned `arm` when `active()` may have become
 * true with the tab already hidden.
 * @param {Document} doc
 * @param {() => number} delay
 * @param {() => boolean} active
 * @param {() => void} fire
 */
export function reloadWhenHidden(doc, delay, active, fire) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const arm = () => {
    clearTimeout(timer);
    timer = undefined;
    if (doc.visibilityState === 'hidden' && active()) {
      timer = setTimeout(() => {
        if (doc.visibilityState === 'hidden' && active()) fire();
      }, delay());
    }
  };
  doc.addEventListener('visibilitychange', arm);
  return {
    arm,
    stop() {
      clearTimeout(timer);
      doc.removeEventListener('visibilitychange', arm);
    },
  };
}
