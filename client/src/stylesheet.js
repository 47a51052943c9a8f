/**
 * CSS hot swap: when two releases differ only in stylesheets (once renamed
 * content-hashed files are paired up), point this page's stylesheets at the
 * new release instead of reloading, and keep doing so for the stylesheets
 * the page's code inserts later (a lazy route's CSS).
 */

/**
 * The gateway's answer to `/_skewless/diff`: paths with a leading slash.
 * `renamed` maps a content-hashed file of the older release to its
 * counterpart; `stylesheets` lists the stylesheets that differ;
 * `only_stylesheets` says whether nothing else does.
 * @typedef {{
 *   changed: string[], added: string[], removed: string[],
 *   renamed?: Record<string, string>,
 *   stylesheets?: {from: string | null, to: string | null}[],
 *   only_stylesheets?: boolean
 * }} ReleaseDiff
 */

/**
 * Whether a diff allows adopting the new release without a reload: the
 * gateway's rename-aware verdict, or, from a gateway without one, nothing but
 * `.css` files differing (an empty diff qualifies too).
 * @param {ReleaseDiff} diff
 */
export function onlyStylesheets(diff) {
  return diff.only_stylesheets ?? [...diff.changed, ...diff.added, ...diff.removed].every((path) => /\.css$/i.test(path));
}

/**
 * Stylesheet path in this page's code → its path in the release the tab has
 * adopted. Paths are release-relative (`/assets/about-Bq8c.css`).
 * @typedef {Map<string, string>} Names
 */

/**
 * Adds the stylesheet changes of `diff` to `names`: a path the page's code
 * knows now maps to the newest counterpart.
 * @param {Names} names
 * @param {ReleaseDiff} diff
 */
export function followRenames(names, diff) {
  const renamed = diff.renamed || {};
  const known = new Set(names.values());
  for (const [code, now] of names) names.set(code, renamed[now] || now);
  for (const { from, to } of diff.stylesheets || diff.changed.map((path) => ({ from: path, to: path }))) {
    if (from && to && !known.has(from) && !names.has(from)) names.set(from, to);
  }
}

/** Links this module inserted; their load failures are handled here, not by chunk recovery. */
export const swapping = new WeakSet();

/**
 * The release-relative path of a same-origin URL: `/_r/<id>/x.css` and
 * `/x.css` are both `/x.css`; null for another origin.
 * @param {URL} url
 * @param {string} origin
 */
const relative = (url, origin) => (url.origin === origin ? url.pathname.replace(/^\/_r\/[^/]+\//, '/') : null);

/**
 * Replaces each stylesheet link of release `from` (under `/_r/<from>/`, or a
 * changed stylesheet at its plain path) by its counterpart under `/_r/<to>/`.
 * The new link is loaded next to the old one, and the old one is removed
 * only once the new one applied, so nothing flashes unstyled.
 * @param {Document} doc
 * @param {string} from
 * @param {string} to
 * @param {ReleaseDiff} diff
 * @returns {Promise<boolean>} false when some new stylesheet failed to load
 */
export async function swapStylesheets(doc, from, to, diff) {
  const removed = new Set(diff.removed);
  /** @type {Names} */
  const changes = new Map();
  followRenames(changes, diff);
  const origin = doc.location ? doc.location.origin : '';
  /** @type {Promise<boolean>[]} */
  const loads = [];
  for (const link of /** @type {NodeListOf<HTMLLinkElement>} */ (doc.querySelectorAll('link[rel~="stylesheet"][href]'))) {
    const url = new URL(link.href, doc.baseURI);
    const path = relative(url, origin);
    const mine = url.pathname.startsWith('/_r/' + from + '/') || (path === url.pathname && changes.has(path));
    if (!path || !mine || removed.has(path)) continue;
    const next = /** @type {HTMLLinkElement} */ (link.cloneNode());
    swapping.add(next);
    next.href = '/_r/' + to + (changes.get(path) || path) + url.search;
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

/**
 * After a swap, the page's code still names the stylesheets of the release
 * it was built with: a lazy route's CSS inserted later (Vite's preload
 * helper, webpack's CSS runtime) would style the page as the old release.
 * Redirects such a `<link rel=stylesheet>` to its counterpart in the adopted
 * release as it is inserted (`appendChild`, `insertBefore`), before it loads.
 * @param {Window & typeof globalThis} win
 * @param {Names} names
 * @param {() => string | null} release the adopted release
 * @returns {() => void} undoes the wrapping
 */
export function redirectInserted(win, names, release) {
  const proto = win.Node.prototype;
  const { appendChild, insertBefore } = proto;
  /** @param {Node} node */
  const redirect = (node) => {
    const link = /** @type {HTMLLinkElement} */ (node);
    if (names.size && node instanceof win.HTMLLinkElement && /\bstylesheet\b/i.test(link.rel) && link.href) {
      const url = new URL(link.href);
      const path = relative(url, win.location.origin);
      const now = path && names.get(path);
      if (now) link.href = '/_r/' + release() + now + url.search;
    }
  };
  /** @type {any} */ (proto).appendChild = function (/** @type {Node} */ node) {
    redirect(node);
    return appendChild.call(this, node);
  };
  /** @type {any} */ (proto).insertBefore = function (/** @type {Node} */ node, /** @type {Node | null} */ child) {
    redirect(node);
    return insertBefore.call(this, node, child);
  };
  return () => Object.assign(proto, { appendChild, insertBefore });
}
