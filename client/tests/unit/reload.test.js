import { beforeEach, describe, expect, it } from 'vitest';
import { clearPinCookie, randomClientId, sessionRecords } from '../../src/reload.js';

describe('sessionRecords', () => {
  beforeEach(() => sessionStorage.clear());

  it('hands the snapshot to the next page exactly once', () => {
    sessionRecords(sessionStorage).saveSnapshot({ draft: 'hello' });
    const next = sessionRecords(sessionStorage);
    expect(next.takeSnapshot()).toEqual({ data: { draft: 'hello' } });
    expect(next.takeSnapshot()).toBeUndefined();
  });

  it('keeps falsy snapshots and stores nothing for undefined', () => {
    const records = sessionRecords(sessionStorage);
    records.saveSnapshot(0);
    expect(records.takeSnapshot()).toEqual({ data: 0 });
    records.saveSnapshot(undefined);
    expect(records.takeSnapshot()).toBeUndefined();
  });

  it('remembers why the last reload happened, once', () => {
    const records = sessionRecords(sessionStorage);
    records.recordReload({ from: 'v1', to: 'v2', reason: 'required' });
    expect(records.takeReload()).toEqual({ from: 'v1', to: 'v2', reason: 'required' });
    expect(records.takeReload()).toBeUndefined();
  });

  it('allows one chunk-error reload per release', () => {
    const records = sessionRecords(sessionStorage);
    expect(records.chunkReloadAllowed('v1')).toBe(true);
    records.markChunkReload('v1');
    expect(sessionRecords(sessionStorage).chunkReloadAllowed('v1')).toBe(false);
    expect(records.chunkReloadAllowed('v2')).toBe(true);
  });

  it('works without storage and with corrupt entries', () => {
    const none = sessionRecords(undefined);
    none.saveSnapshot({ a: 1 });
    expect(none.takeSnapshot()).toBeUndefined();
    expect(none.chunkReloadAllowed('v1')).toBe(true);
    sessionStorage.setItem('skewless:chunk', '{not json');
    expect(sessionRecords(sessionStorage).chunkReloadAllowed('v1')).toBe(true);
    const throwing = { getItem() { throw new Error('denied'); }, setItem() { throw new Error('full'); }, removeItem() {} };
    const records = sessionRecords(throwing);
    records.saveSnapshot(1);
    expect(records.takeSnapshot()).toBeUndefined();
  });
});

describe('client ids', () => {
  beforeEach(() => sessionStorage.clear());

  it('are 22 random characters the gateway accepts', () => {
    const ids = new Set(Array.from({ length: 100 }, () => randomClientId(crypto)));
    expect(ids.size).toBe(100);
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });

  it('are handed from a page to the next page of the tab once', () => {
    sessionRecords(sessionStorage).keepClientId('abcdefghijklmnop-_01');
    const next = sessionRecords(sessionStorage);
    expect(next.takeClientId()).toBe('abcdefghijklmnop-_01');
    expect(next.takeClientId()).toBeUndefined();
  });

  it('are not taken when malformed', () => {
    const records = sessionRecords(sessionStorage);
    for (const bad of ['short', 'has space in it!!!!!', 'x'.repeat(65), 42]) {
      sessionStorage.setItem('skewless:client', JSON.stringify(bad));
      expect(records.takeClientId()).toBeUndefined();
    }
    expect(sessionRecords(undefined).takeClientId()).toBeUndefined();
  });
});

describe('clearPinCookie', () => {
  it('expires the pin cookie', () => {
    document.cookie = 'skewless_release=v1; Path=/';
    expect(document.cookie).toContain('skewless_release=v1');
    clearPinCookie(document);
    expect(document.cookie).not.toContain('skewless_release=v1');
  });
});
