// Global setup of the end-to-end tests: builds the test apps (tests/apps)
// with the real bundlers once per run, in a process of its own (production
// mode, away from the test runner's own Vite), into artifacts/apps.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const CLIENT_DIR = fileURLToPath(new URL('../../', import.meta.url));
export const APPS_OUT = path.join(CLIENT_DIR, 'artifacts/apps');

export default function setup() {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(CLIENT_DIR, 'tests/apps/build.js'), APPS_OUT], { timeout: 300000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`building the test apps failed: ${error.message}\n${stderr}`));
      else resolve(undefined);
    });
  });
}
