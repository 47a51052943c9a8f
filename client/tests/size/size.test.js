// @vitest-environment node
// The whole client, as a browser receives it, must stay small: it is loaded
// by every page of every app behind the gateway.
import { build } from 'esbuild';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { expect, it } from 'vitest';

const BUDGET = 6 * 1024;
const root = fileURLToPath(new URL('../../', import.meta.url));

it(`client.js bundled, minified and gzipped stays under ${BUDGET} bytes`, async () => {
  const result = await build({
    entryPoints: [root + 'src/client.js'],
    bundle: true,
    minify: true,
    format: 'esm',
    target: 'es2022',
    write: false,
  });
  const minified = result.outputFiles[0].contents;
  const gzipped = gzipSync(minified, { level: 9 }).length;
  mkdirSync(root + 'artifacts', { recursive: true });
  writeFileSync(root + 'artifacts/size.json', JSON.stringify({ minified: minified.length, gzipped, budget: BUDGET }) + '\n');
  console.log(`client size: ${minified.length} bytes minified, ${gzipped} bytes minified+gzipped (budget ${BUDGET})`);
  expect(gzipped).toBeLessThan(BUDGET);
});
