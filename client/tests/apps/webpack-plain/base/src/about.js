import { BUILD } from './build.js';
import './about.css';

export const render = () => `<section id="about" class="about">About build ${BUILD}</section>`;
