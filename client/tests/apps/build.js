// Builds the Vite + Vue test app (vite-vue/) in each of its versions with
// the real Vite and Vue plugin from npm. A version is the base sources with
// overlays copied on top: v1 = base, v2 = base + v2 (code, public/ files),
// v3 = base + v2 + v3 (stylesheets only).
//
//   node tests/apps/build.js OUT_DIR   →   OUT_DIR/v1, OUT_DIR/v2, OUT_DIR/v3
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

process.env.NODE_ENV = 'production';
const { build } = await import('vite');
const { default: vue } = await import('@vitejs/plugin-vue');

const APP = fileURLToPath(new URL('./vite-vue/', import.meta.url));
// Sources are assembled under client/ so that `vue` resolves from client/node_modules.
const WORK = fileURLToPath(new URL('../../artifacts/vite-vue-src/', import.meta.url));
export const VERSIONS = { v1: ['base'], v2: ['base', 'v2'], v3: ['base', 'v2', 'v3'] };

/**
 * @param {string} out
 * @returns {Promise<Record<string, string>>} version → built directory
 */
export async function buildAll(out) {
  /** @type {Record<string, string>} */
  const built = {};
  for (const [version, overlays] of Object.entries(VERSIONS)) {
    const root = path.join(WORK, version);
    rmSync(root, { recursive: true, force: true });
    mkdirSync(root, { recursive: true });
    for (const overlay of overlays) cpSync(path.join(APP, overlay), root, { recursive: true });
    const outDir = path.join(out, version);
    await build({
      root,
      configFile: false,
      logLevel: 'warn',
      plugins: [vue()],
      build: { outDir, emptyOutDir: true },
    });
    built[version] = outDir;
  }
  return built;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = process.argv[2];
  if (!out) {
    console.error('usage: node tests/apps/build.js OUT_DIR');
    process.exit(2);
  }
  await buildAll(path.resolve(out));
}
