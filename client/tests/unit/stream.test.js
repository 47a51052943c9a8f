import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { backoff, openStream } from '../../src/stream.js';
import { FakeEventSource } from './fakes.js';

describe('backoff', () => {
  it('doubles with attempts and stays between half and all of the cap', () => {
    expect(backoff(0, 1000, 30000, () => 0)).toBe(500);
    expect(backoff(0, 1000, 30000, () => 1)).toBe(1000);
    expect(backoff(3, 1000, 30000, () => 0)).toBe(4000);
    expect(backoff(3, 1000, 30000, () => 1)).toBe(8000);
  });
  it('never exceeds the maximum', () => {
    expect(backoff(50, 1000, 30000, () => 1)).toBe(30000);
    expect(backoff(50, 1000, 30000, () => 0)).toBe(15000);
  });
  it('spreads clients out (jitter)', () => {
    const delays = new Set(Array.from({ length: 20 }, () => backoff(2)));
    expect(delays.size).toBeGreaterThan(10);
  });
});

describe('openStream', () => {
  beforeEach(() => {
    FakeEventSource.instances = [];
    vi.useFakeTimers();
  });
  afterEach(() => vi.useRealTimers());

  it('connects to the URL and passes release and required events on', () => {
    const seen = [];
    openStream(() => '/_skewless/events?release=v1', (type, state) => seen.push([type, state]), FakeEventSource);
    const es = FakeEventSource.latest();
    expect(es.url).toBe('/_skewless/events?release=v1');
    es.open();
    es.emit('release', { current: 'v2', generation: 2 });
    es.emit('required', { current: 'v3', generation: 3, required: true });
    es.emit('release', 'not json');
    expect(seen).toEqual([
      ['release', { current: 'v2', generation: 2 }],
      ['required', { current: 'v3', generation: 3, required: true }],
    ]);
  });

  it('reconnects after an error with growing, jittered delays, reset by a successful open', () => {
    vi.spyOn(Math, 'random').mockReturnValue(1);
    openStream(() => '/e', () => {}, FakeEventSource);
    FakeEventSource.latest().fail();
    expect(FakeEventSource.latest().closed).toBe(true);
    vi.advanceTimersByTime(999);
    expect(FakeEventSource.instances).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(FakeEventSource.instances).toHaveLength(2);
    FakeEventSource.latest().fail();
    vi.advanceTimersByTime(1999);
    expect(FakeEventSource.instances).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(FakeEventSource.instances).toHaveLength(3);
    FakeEventSource.latest().open();
    FakeEventSource.latest().fail();
    vi.advanceTimersByTime(1000);
    expect(FakeEventSource.instances).toHaveLength(4);
    vi.mocked(Math.random).mockRestore();
  });

  it('follows the URL function on reconnect and stops for good when closed', () => {
    let release = 'v1';
    const stream = openStream(() => '/e?release=' + release, () => {}, FakeEventSource);
    release = 'v3';
    stream.reconnect();
    expect(FakeEventSource.instances[0].closed).toBe(true);
    expect(FakeEventSource.latest().url).toBe('/e?release=v3');
    FakeEventSource.latest().open();
    expect(stream.open).toBe(true);
    stream.close();
    FakeEventSource.latest().fail();
    vi.advanceTimersByTime(60000);
    expect(FakeEventSource.instances).toHaveLength(2);
    expect(stream.open).toBe(false);
  });
});
