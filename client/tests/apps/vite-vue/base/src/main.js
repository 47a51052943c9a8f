import { createApp } from 'vue';
import App from './App.vue';
import { BUILD } from './build.js';
import { router } from './router.js';
import './theme.css';

const skewless = window.skewless;
window.appBuild = BUILD;
window.appEvents = [];
for (const type of ['update-available', 'update-required', 'css-swapped']) {
  skewless.on(type, (detail) => window.appEvents.push({ type, ...detail }));
}
window.appRestored = skewless.restoredState();

createApp(App).use(router).mount('#app');
