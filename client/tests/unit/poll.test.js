import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { schedulePolling, versionCheck } from '../../src/poll.js';
import { json, setVisibility } from './fakes.js';

const ID = 'tab-id-0123456789abcdef';
const PINS = { 'Skewless-Release': 'v1', 'Skewless-Client': ID };

describe('versionCheck', () => {
  it('asks with the release and client id, then revalidates with the ETag and reuses the answer on 304', async () => {
    const state = { current: 'v2', generation: 3, required_min: null, required: false };
    const fetchFn = vi
      .fn()
      .mockResolvedValueOnce(json(state, { headers: { ETag: '"g3"' } }))
      .mockResolvedValueOnce(new Response(null, { status: 304 }));
    const check = versionCheck(fetchFn, () => 'v1', ID);
    expect(await check()).toEqual(state);
    expect(await check()).toEqual(state);
    expect(fetchFn.mock.calls[0][0]).toBe('/_skewless/version?release=v1&client=' + ID);
    // The headers too: the gateway records presence from them even when it answers 304.
    expect(fetchFn.mock.calls[0][1].headers).toEqual(PINS);
    expect(fetchFn.mock.calls[1][1].headers).toEqual({ ...PINS, 'If-None-Match': '"g3"' });
    expect(fetchFn.mock.calls[1][1].cache).toBe('no-store');
  });

  it('does not reuse an ETag for another release (required and canary differ per release)', async () => {
    let release = 'v1';
    const fetchFn = vi.fn(async () => json({ current: 'v2', generation: 3 }, { headers: { ETag: '"g3"' } }));
    const check = versionCheck(fetchFn, () => release, ID);
    await check();
    release = 'v2';
    await check();
    expect(fetchFn.mock.calls[1][0]).toBe('/_skewless/version?release=v2&client=' + ID);
    expect(fetchFn.mock.calls[1][1].headers).toEqual({ 'Skewless-Release': 'v2', 'Skewless-Client': ID });
  });

  it('shares one request between concurrent calls', async () => {
    const fetchFn = vi.fn(async () => json({ current: 'v2' }));
    const check = versionCheck(fetchFn, () => 'v1', ID);
    await Promise.all([check(), check(), check()]);
    expect(fetchFn).toHaveBeenCalledTimes(1);
  });

  it('rejects on an HTTP error', async () => {
    const check = versionCheck(async () => new Response('no', { status: 503 }), () => 'v1', ID);
    await expect(check()).rejects.toThrow('503');
  });
});

describe('schedulePolling', () => {
  let polling;
  beforeEach(() => {
    vi.useFakeTimers();
    setVisibility(document, 'visible');
  });
  afterEach(() => {
    polling.stop();
    vi.useRealTimers();
    setVisibility(document, 'visible');
  });

  it('checks on every interval while visible and pauses while hidden', () => {
    const check = vi.fn();
    polling = schedulePolling(window, () => 5000, check);
    vi.advanceTimersByTime(5000);
    expect(check).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(5000);
    expect(check).toHaveBeenCalledTimes(2);
    setVisibility(document, 'hidden');
    vi.advanceTimersByTime(20000);
    expect(check).toHaveBeenCalledTimes(2);
  });

  it('checks at once on focus, on becoming visible and on coming online, at most once a second', () => {
    const check = vi.fn();
    polling = schedulePolling(window, () => 0, check);
    window.dispatchEvent(new Event('focus'));
    setVisibility(document, 'visible');
    expect(check).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(1000);
    window.dispatchEvent(new Event('online'));
    expect(check).toHaveBeenCalledTimes(2);
    vi.advanceTimersByTime(1000);
    setVisibility(document, 'hidden');
    expect(check).toHaveBeenCalledTimes(2);
    setVisibility(document, 'visible');
    expect(check).toHaveBeenCalledTimes(3);
  });

  it('picks up a changed interval on restart; 0 disables the timer', () => {
    let interval = 0;
    const check = vi.fn();
    polling = schedulePolling(window, () => interval, check);
    vi.advanceTimersByTime(100000);
    expect(check).not.toHaveBeenCalled();
    interval = 2000;
    polling.restart();
    vi.advanceTimersByTime(2000);
    expect(check).toHaveBeenCalledTimes(1);
  });
});
