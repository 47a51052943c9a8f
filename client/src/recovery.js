/**
 * Chunk-load recovery: notices when a lazily loaded script, module or
 * stylesheet of this origin fails to load, which after a deploy usually
 * means the tab asks for a file its release no longer has.
 */

import { isSameOrigin } from './pin.js';

/** @typedef {{url?: string, error?: unknown}} ChunkFailure */

const IMPORT_FAILURE =
  /dynamically imported module|Importing a module script failed|error loading dynamically imported|Unable to preload CSS/i;

/**
 * Whether a rejection reason is a failed dynamic `import()`.
 * @param {unknown} reason
 */
export function isImportFailure(reason) {
  const message = reason && typeof reason === 'object' && 'message' in reason ? reason.message : reason;
  return IMPORT_FAILURE.test(String(message));
}

/**
 * Reports chunk failures to `onFailure`; when it returns true (it will
 * recover), the browser's default handling is suppressed.
 * @param {Window} win
 * @param {(failure: ChunkFailure) => boolean} onFailure
 * @param {(el: Element) => boolean} [ignore] elements whose failures are handled elsewhere
 * @returns {() => void} stops watching
 */
export function watchChunkFailures(win, onFailure, ignore = () => false) {
  /** @param {Event} event */
  const onPreload = (event) => {
    if (onFailure({ error: /** @type {any} */ (event).payload })) event.preventDefault();
  };
  /** @param {Event} event */
  const onError = (event) => {
    const el = /** @type {Element} */ (event.target);
    const url =
      el.localName === 'script'
        ? /** @type {HTMLScriptElement} */ (el).src
        : el.localName === 'link' && /\b(stylesheet|modulepreload|preload)\b/.test(/** @type {HTMLLinkElement} */ (el).rel)
          ? /** @type {HTMLLinkElement} */ (el).href
          : '';
    if (url && isSameOrigin(url, win.location.href) && !ignore(el)) onFailure({ url });
  };
  /** @param {PromiseRejectionEvent} event */
  const onRejection = (event) => {
    if (isImportFailure(event.reason) && onFailure({ error: event.reason })) event.preventDefault();
  };
  win.addEventListener('vite:preloadError', onPreload);
  // Resource errors do not bubble; they reach the window only in the capture phase.
  win.addEventListener('error', onError, true);
  win.addEventListener('unhandledrejection', onRejection);
  return () => {
    win.removeEventListener('vite:preloadError', onPreload);
    win.removeEventListener('error', onError, true);
    win.removeEventListener('unhandledrejection', onRejection);
  };
}
