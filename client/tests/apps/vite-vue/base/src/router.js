import { createRouter, createWebHistory } from 'vue-router';
import Home from './views/Home.vue';

export const router = createRouter({
  history: createWebHistory(),
  routes: [
    { path: '/', component: Home },
    // Lazy routes: each its own chunk, About with a stylesheet of its own.
    { path: '/about', component: () => import('./views/About.vue') },
    { path: '/settings', component: () => import('./views/Settings.vue') },
  ],
});
