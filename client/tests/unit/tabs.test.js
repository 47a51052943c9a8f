import { describe, expect, it } from 'vitest';
import { openTabs, staggerDelay } from '../../src/tabs.js';

describe('openTabs', () => {
  it('delivers a message from one tab to the others', async () => {
    const received = new Promise((resolve) => {
      const b = openTabs((message) => {
        resolve(message);
        b.close();
      }, 'skewless-test');
    });
    const a = openTabs(() => {}, 'skewless-test');
    a.post({ current: 'v2', generation: 4 });
    expect(await received).toEqual({ current: 'v2', generation: 4 });
    a.close();
  });

  it('ignores posts after it was closed', () => {
    const a = openTabs(() => {}, 'skewless-test');
    a.close();
    expect(() => a.post({ current: 'v3' })).not.toThrow();
    a.close();
  });
});

describe('staggerDelay', () => {
  it('is zero for the visible tab and spread over the window for hidden ones', () => {
    expect(staggerDelay(true, 5000, () => 0.9)).toBe(0);
    expect(staggerDelay(false, 5000, () => 0.5)).toBe(2500);
    expect(staggerDelay(false, 5000, () => 0)).toBe(0);
    const delays = new Set(Array.from({ length: 20 }, () => staggerDelay(false, 5000)));
    expect(delays.size).toBeGreaterThan(10);
  });
});
