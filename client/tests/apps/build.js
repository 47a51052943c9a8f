// Builds the test apps in each of their versions with the real bundlers
// from npm. A version is the base sources with overlays copied on top:
// v1 = base, v2 = base + v2 (code, public/ files), v3 = base + v2 + v3
// (stylesheets only).
//
//   vite-vue/       Vite + Vue + vue-router
//   webpack-plain/  webpack 5 + mini-css-extract-plugin, plain JavaScript
//
//   node tests/apps/build.js OUT_DIR   →   OUT_DIR/<app>/v1, v2, v3
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

process.env.NODE_ENV = 'production';

const APPS = fileURLToPath(new URL('./', import.meta.url));
// Sources are assembled under client/ so that packages resolve from client/node_modules.
const WORK = fileURLToPath(new URL('../../artifacts/apps-src/', import.meta.url));
const NODE_MODULES = fileURLToPath(new URL('../../node_modules/', import.meta.url));
export const VERSIONS = { v1: ['base'], v2: ['base', 'v2'], v3: ['base', 'v2', 'v3'] };

/** @param {string} root @param {string} outDir */
async function vite(root, outDir) {
  const { build } = await import('vite');
  const { default: vue } = await import('@vitejs/plugin-vue');
  await build({ root, configFile: false, logLevel: 'warn', plugins: [vue()], build: { outDir, emptyOutDir: true } });
}

/** @param {string} root @param {string} outDir */
async function webpack(root, outDir) {
  const { default: webpack } = await import('webpack');
  const { default: MiniCssExtractPlugin } = await import('mini-css-extract-plugin');
  const { default: HtmlWebpackPlugin } = await import('html-webpack-plugin');
  const compiler = webpack({
    mode: 'production',
    context: root,
    entry: './src/index.js',
    output: {
      path: outDir,
      filename: 'assets/[name].[contenthash:8].js',
      chunkFilename: 'assets/[name].[contenthash:8].js',
      // Chunks and their stylesheets load next to the entry script.
      publicPath: 'auto',
      clean: true,
    },
    module: { rules: [{ test: /\.css$/, use: [MiniCssExtractPlugin.loader, 'css-loader'] }] },
    plugins: [
      new HtmlWebpackPlugin({ template: './src/index.html', publicPath: '/' }),
      new MiniCssExtractPlugin({ filename: 'assets/[name].[contenthash:8].css', chunkFilename: 'assets/[name].[contenthash:8].css' }),
    ],
    resolveLoader: { modules: [NODE_MODULES] },
    infrastructureLogging: { level: 'warn' },
  });
  const stats = await new Promise((resolve, reject) => compiler.run((error, result) => (error ? reject(error) : resolve(result))));
  await new Promise((resolve) => compiler.close(resolve));
  if (stats.hasErrors()) throw new Error(stats.toString('errors-only'));
}

const BUNDLERS = { 'vite-vue': vite, 'webpack-plain': webpack };

/**
 * @param {string} out
 * @returns {Promise<Record<string, Record<string, string>>>} app → version → built directory
 */
export async function buildAll(out) {
  /** @type {Record<string, Record<string, string>>} */
  const built = {};
  for (const [app, bundle] of Object.entries(BUNDLERS)) {
    built[app] = {};
    for (const [version, overlays] of Object.entries(VERSIONS)) {
      const root = path.join(WORK, app, version);
      rmSync(root, { recursive: true, force: true });
      mkdirSync(root, { recursive: true });
      for (const overlay of overlays) cpSync(path.join(APPS, app, overlay), root, { recursive: true });
      const outDir = path.join(out, app, version);
      await bundle(root, outDir);
      built[app][version] = outDir;
    }
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
