import { describe, expect, it, vi } from 'vitest';
import { createEmitter } from '../../src/events.js';

describe('createEmitter', () => {
  it('calls listeners of the emitted type with the detail', () => {
    const emitter = createEmitter();
    const a = vi.fn();
    const b = vi.fn();
    emitter.on('x', a);
    emitter.on('y', b);
    emitter.emit('x', 1);
    expect(a).toHaveBeenCalledWith(1);
    expect(b).not.toHaveBeenCalled();
  });

  it('stops calling a listener once unsubscribed', () => {
    const emitter = createEmitter();
    const a = vi.fn();
    const off = emitter.on('x', a);
    off();
    emitter.emit('x', 1);
    expect(a).not.toHaveBeenCalled();
  });

  it('keeps calling later listeners when one throws, and rethrows it asynchronously', () => {
    vi.useFakeTimers();
    try {
      const emitter = createEmitter();
      const after = vi.fn();
      emitter.on('x', () => {
        throw new Error('listener bug');
      });
      emitter.on('x', after);
      emitter.emit('x', 1);
      expect(after).toHaveBeenCalled();
      expect(() => vi.runAllTimers()).toThrow('listener bug');
    } finally {
      vi.useRealTimers();
    }
  });
});
