/**
 * CSS hot swap: when two releases differ only in stylesheets, point this
 * page's `<link rel="stylesheet">`s at the new release instead of reloading.
 */

/**
 * The gateway's answer to `/_skewless/diff`: paths with a leading slash.
 * @typedef {{changed: string[], added: string[], removed: string[]}} ReleaseDiff
 */

/**
 * Whether a diff allows adopting the new release without a reload: nothing
 * but `.css` files differ (an empty diff qualifies too).
 * @param {ReleaseDiff} diff
 */
export function onlyStylesheets(diff) {
  return [...diff.changed, ...diff.added, ...diff.removed].every((path) => /\.css$/i.test(path));
}

/** Links this module inserted; their load failures are handled here, not by chunk recovery. */
export const swapping = new WeakSet();

/**
 * Replaces each stylesheet link under `/_r/<from>/` by the same path under
 * `/_r/<to>/`. The new link is loaded next to the old one, and the old one is
 * removed only once the new one applied, so nothing flashes unstyled.
 * @param {Document} doc
 * @param {string} from
 * @param {string} to
 * @param {ReleaseDiff} diff
 * @returns {Promise<boolean>} false when some new stylesheet failed to load
 */
export async function swapStylesheets(doc, from, to, diff) {
  const prefix = '/_r/' + from + '/';
  const removed = new Set(diff.removed);
  const origin = doc.location ? doc.location.origin : '';
  /** @type {Promise<boolean>[]} */
  const loads = [];
  for (const link of /** @type {NodeListOf<HTMLLinkElement>} */ (doc.querySelectorAll('link[rel~="stylesheet"][href]'))) {
    const url = new URL(link.href, doc.baseURI);
    if (url.origin !== origin || !url.pathname.startsWith(prefix)) continue;
    const path = url.pathname.slice(prefix.length - 1);
    if (removed.has(path)) continue;
    const next = /** @type {HTMLLinkElement} */ (link.cloneNode());
    swapping.add(next);
    next.href = '/_r/' + to + path + url.search;
    loads.push(
      new Promise((resolve) => {
        next.onload = () => {
          link.remove();
          resolve(true);
        };
        next.onerror = () => {
          next.remove();
          resolve(false);
        };
      }),
    );
    link.after(next);
  }
  return (await Promise.all(loads)).every(Boolean);
}
