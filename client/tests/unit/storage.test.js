import { beforeEach, describe, expect, it, vi } from 'vitest';
import { SCHEMA_KEY, freezeStorage, isFrozen, migrate, withLock } from '../../src/storage.js';

/** The window without Web Locks, to exercise the localStorage lease. */
const withoutLocks = () => new Proxy(window, {
  get(target, key) {
    if (key === 'navigator') return {};
    const value = Reflect.get(target, key);
    return typeof value === 'function' && !/^[A-Z]/.test(String(key)) ? value.bind(target) : value;
  },
});

describe('withLock', () => {
  beforeEach(() => localStorage.clear());

  it('uses Web Locks when available', async () => {
    const request = vi.fn((name, fn) => fn());
    const win = { navigator: { locks: { request } } };
    expect(await withLock(win, 'n', async () => 42)).toBe(42);
    expect(request).toHaveBeenCalledWith('n', expect.any(Function));
  });

  it('falls back to a localStorage lease that serialises holders', async () => {
    const win = withoutLocks();
    const log = [];
    const hold = (name) =>
      withLock(win, 'm', async () => {
        log.push('start ' + name);
        await new Promise((r) => setTimeout(r, 20));
        log.push('end ' + name);
      });
    await Promise.all([hold('a'), hold('b')]);
    expect(log).toHaveLength(4);
    expect(log[0].slice(6)).toBe(log[1].slice(4));
    expect(localStorage.getItem('skewless:lock:m')).toBeNull();
  });
});

describe('migrate', () => {
  beforeEach(() => localStorage.clear());

  it('runs each missing step once, in order, and records the schema', async () => {
    localStorage.setItem('todos', 'a,b');
    const steps = [];
    const migrations = {
      1: (s) => {
        steps.push(1);
        s.setItem('todos', JSON.stringify(s.getItem('todos').split(',')));
      },
      2: async (s) => {
        steps.push(2);
        const todos = JSON.parse(s.getItem('todos'));
        s.setItem('todos', JSON.stringify(todos.map((title) => ({ title }))));
      },
    };
    const onNewer = vi.fn();
    expect(await migrate(window, { version: 2, migrations }, onNewer)).toEqual({ from: 0, to: 2, migrated: true, newer: false });
    expect(JSON.parse(localStorage.getItem('todos'))).toEqual([{ title: 'a' }, { title: 'b' }]);
    expect(localStorage.getItem(SCHEMA_KEY)).toBe('2');
    expect(await migrate(window, { version: 2, migrations }, onNewer)).toEqual({ from: 2, to: 2, migrated: false, newer: false });
    expect(steps).toEqual([1, 2]);
    expect(onNewer).not.toHaveBeenCalled();
  });

  it('runs a migration once when several tabs start together', async () => {
    const win = withoutLocks();
    let runs = 0;
    const migrations = {
      1: async () => {
        runs++;
        await new Promise((r) => setTimeout(r, 10));
      },
    };
    await Promise.all([1, 2, 3].map(() => migrate(win, { version: 1, migrations }, () => {})));
    expect(runs).toBe(1);
  });

  it('refuses to touch a newer schema: freezes storage and asks for a reload', async () => {
    const win = storageWindow();
    const storage = win.localStorage;
    storage.setItem(SCHEMA_KEY, '3');
    storage.setItem('todos', 'new format');
    const onNewer = vi.fn();
    const step = vi.fn();
    const result = await migrate(win, { version: 2, migrations: { 2: step } }, onNewer);
    expect(result).toEqual({ from: 3, to: 3, migrated: false, newer: true });
    expect(step).not.toHaveBeenCalled();
    expect(onNewer).toHaveBeenCalledTimes(1);
    expect(isFrozen(storage)).toBe(true);
    storage.setItem('todos', 'old format');
    storage.removeItem('todos');
    storage.clear();
    expect(storage.getItem('todos')).toBe('new format');
    // Another Storage object (sessionStorage) keeps working.
    const other = new win.Storage();
    other.setItem('k', 'v');
    expect(other.getItem('k')).toBe('v');
  });
});

/** A window double with its own Storage class, so freezing does not leak into other tests. */
function storageWindow() {
  class FakeStorage {
    constructor() {
      this.store = new Map();
    }
    getItem(key) {
      return this.store.has(key) ? this.store.get(key) : null;
    }
    setItem(key, value) {
      this.store.set(key, String(value));
    }
    removeItem(key) {
      this.store.delete(key);
    }
    clear() {
      this.store.clear();
    }
  }
  const target = new EventTarget();
  return {
    navigator: {},
    Storage: FakeStorage,
    localStorage: new FakeStorage(),
    addEventListener: target.addEventListener.bind(target),
    dispatchEvent: target.dispatchEvent.bind(target),
  };
}

describe('migrate: another tab moves to a newer schema', () => {
  it('freezes and asks for a reload when the storage event announces it', async () => {
    const onNewer = vi.fn();
    const win = storageWindow();
    await migrate(win, { version: 1 }, onNewer);
    const announce = (value) => win.dispatchEvent(Object.assign(new Event('storage'), { key: SCHEMA_KEY, newValue: value }));
    announce('1');
    expect(onNewer).not.toHaveBeenCalled();
    expect(isFrozen(win.localStorage)).toBe(false);
    announce('2');
    announce('3');
    expect(onNewer).toHaveBeenCalledTimes(1);
    expect(isFrozen(win.localStorage)).toBe(true);
  });
});

describe('freezeStorage', () => {
  it('wraps the methods once however often it is called', () => {
    const win = storageWindow();
    freezeStorage(win, win.localStorage);
    const setItem = win.Storage.prototype.setItem;
    freezeStorage(win, new win.Storage());
    expect(win.Storage.prototype.setItem).toBe(setItem);
  });
});
