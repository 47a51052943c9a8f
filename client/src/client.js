/**
 * Entry point served as `/_skewless/client.js` and injected into every
 * shell: starts the page's client as `window.skewless`, configured from
 * `<meta name="skewless-*">` tags. Apps may also import it for the API.
 */

import { start } from './index.js';

export * from './index.js';

if (typeof window === 'object' && typeof document === 'object') start();
