/**
 * Storage migrations: upgrade the app's localStorage data step by step,
 * exactly once however many tabs start at the same time, and keep a tab whose
 * code is older than the stored data from writing to it.
 */

/** localStorage key holding the schema version the data is in. */
export const SCHEMA_KEY = 'skewless:schema';

/**
 * @typedef {{
 *   version: number,
 *   migrations?: Record<number, (storage: Storage) => void | Promise<void>>,
 * }} MigrationOptions
 * `migrations[n]` turns data of schema n - 1 into schema n; missing steps are no-ops.
 * Data without a recorded schema counts as schema 0.
 */

/**
 * @typedef {{from: number, to: number, migrated: boolean, newer: boolean}} MigrationResult
 * `newer` means the stored schema is newer than `version`: this tab must not write.
 */

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `fn` while holding an origin-wide lock: Web Locks where the browser
 * has them, else a lease in localStorage (write, wait, check who won).
 * @template T
 * @param {Window} win
 * @param {string} name
 * @param {() => Promise<T>} fn
 * @returns {Promise<T>}
 */
export async function withLock(win, name, fn) {
  const locks = win.navigator && win.navigator.locks;
  if (locks) return locks.request(name, fn);
  const storage = win.localStorage;
  const key = 'skewless:lock:' + name;
  const me = Math.random().toString(36).slice(2);
  const holder = () => {
    try {
      return JSON.parse(storage.getItem(key) || 'null');
    } catch {
      return null;
    }
  };
  for (;;) {
    const lease = holder();
    if (!lease || lease.until < Date.now()) {
      storage.setItem(key, JSON.stringify({ me, until: Date.now() + 10000 }));
      // Another tab may have written in the same instant; the last write wins
      // and both see it after the pause.
      await sleep(30);
      if ((holder() || {}).me === me) break;
    } else {
      await sleep(50 + Math.random() * 50);
    }
  }
  try {
    return await fn();
  } finally {
    if ((holder() || {}).me === me) storage.removeItem(key);
  }
}

/**
 * Reads (without `value`) or records the schema the last migration reached,
 * in IndexedDB: a tab reads there what another tab committed before it let
 * go of the lock, while its copy of localStorage may still lag behind the
 * other tab's writes. 0 when unknown or unavailable.
 * @param {Window} win
 * @param {number} [value]
 * @returns {Promise<number>}
 */
async function schemaMark(win, value) {
  try {
    const open = win.indexedDB.open(SCHEMA_KEY);
    open.onupgradeneeded = () => open.result.createObjectStore(SCHEMA_KEY);
    await new Promise((done) => (open.onsuccess = open.onerror = done));
    // Throws if opening failed. Left open: it closes with the page.
    const tx = open.result.transaction(SCHEMA_KEY, 'readwrite');
    const store = tx.objectStore(SCHEMA_KEY);
    const req = value ? store.put(value, SCHEMA_KEY) : store.get(SCHEMA_KEY);
    // A failed request aborts the transaction.
    await new Promise((done) => (tx.oncomplete = tx.onabort = done));
    return +req.result || 0;
  } catch {
    return 0;
  }
}

/** @type {WeakSet<Storage>} */
const frozen = new WeakSet();

/**
 * Makes `storage` read-only for the rest of this page's life: writes are
 * dropped, since data in a schema this code does not know must not be
 * overwritten in the old format.
 * @param {Window & typeof globalThis} win
 * @param {Storage} storage
 */
export function freezeStorage(win, storage) {
  // Methods are wrapped on the prototype: an own property on a Storage object
  // would itself become a stored item.
  const proto = /** @type {any} */ (win.Storage.prototype);
  for (const name of ['setItem', 'removeItem', 'clear']) {
    const original = proto[name];
    if (original.skewless) continue;
    /** @this {Storage} */
    const guarded = function (/** @type {any[]} */ ...args) {
      if (!frozen.has(this)) return original.apply(this, args);
    };
    guarded.skewless = true;
    proto[name] = guarded;
  }
  frozen.add(storage);
}

/**
 * Whether writes to `storage` are being dropped.
 * @param {Storage} storage
 */
export function isFrozen(storage) {
  return frozen.has(storage);
}

/**
 * Brings the stored data to `options.version`, or reports that it is newer.
 * Afterwards watches for another tab moving the data to a newer schema.
 * @param {Window & typeof globalThis} win
 * @param {MigrationOptions} options
 * @param {() => void} onNewer called (once) when this tab meets a newer schema; it is frozen by then
 * @returns {Promise<MigrationResult>}
 */
export async function migrate(win, options, onNewer) {
  const storage = win.localStorage;
  const { version, migrations = {} } = options;
  const stored = () => Number(storage.getItem(SCHEMA_KEY)) || 0;
  let told = false;
  const newer = () => {
    freezeStorage(win, storage);
    if (!told) onNewer();
    told = true;
  };
  const result = await withLock(win, 'skewless:migrate', async () => {
    // A migration another tab just finished may not have reached this tab's
    // copy of localStorage yet: wait for it (bounded; a mark left from data
    // cleared since is rewritten below).
    const last = await schemaMark(win);
    for (let i = 100; stored() < last && i--; ) await sleep(20);
    const from = stored();
    if (from > version) return { from, to: from, migrated: false, newer: true };
    for (let step = from + 1; step <= version; step++) {
      if (migrations[step]) await migrations[step](storage);
      // Recorded per step: a tab closed half-way leaves a schema the next
      // tab resumes from rather than redoing finished steps.
      storage.setItem(SCHEMA_KEY, String(step));
    }
    if (from < version) await schemaMark(win, version);
    return { from, to: version, migrated: from < version, newer: false };
  });
  win.addEventListener('storage', (event) => {
    if (event.key === SCHEMA_KEY && Number(event.newValue) > version) newer();
  });
  if (result.newer) newer();
  return result;
}
