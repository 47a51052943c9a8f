// A plain-JS single-page app built by webpack: a tiny router over the
// History API, a lazy route with a stylesheet of its own.
import { BUILD } from './build.js';
import './theme.css';

const skewless = window.skewless;
window.appBuild = BUILD;
window.appEvents = [];
for (const type of ['update-available', 'css-swapped']) {
  skewless.on(type, (detail) => window.appEvents.push({ type, ...detail }));
}

const view = document.getElementById('view');
const routes = {
  '/': async () => `<p id="home">Home of build ${BUILD}</p>`,
  // webpack's CSS runtime inserts the route's stylesheet when it loads.
  '/about': async () => (await import(/* webpackChunkName: "about" */ './about.js')).render(),
};

async function show() {
  const route = routes[location.pathname] || routes['/'];
  view.innerHTML = await route();
}

document.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-route]');
  if (!link) return;
  event.preventDefault();
  history.pushState(null, '', link.href);
  show();
});
window.addEventListener('popstate', show);
show();
