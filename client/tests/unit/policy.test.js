import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { effectivePolicy, interceptNavigation, reloadWhenHidden } from '../../src/policy.js';
import { setVisibility } from './fakes.js';

describe('effectivePolicy', () => {
  it('is the chosen policy, reload-on-navigation by default or when unknown', () => {
    expect(effectivePolicy('prompt', false)).toBe('prompt');
    expect(effectivePolicy(undefined, false)).toBe('reload-on-navigation');
    expect(effectivePolicy('bogus', false)).toBe('reload-on-navigation');
  });
  it('is immediate for a required release whatever the app chose', () => {
    for (const policy of ['prompt', 'when-hidden', 'reload-on-navigation']) {
      expect(effectivePolicy(policy, true)).toBe('immediate');
    }
  });
});

describe('interceptNavigation', () => {
  let active;
  let load;
  let undo;
  let routed;
  const click = (html, init = {}) => {
    document.body.innerHTML = html;
    const el = document.body.querySelector('[data-click]') || document.body.firstElementChild;
    const event = new MouseEvent('click', { bubbles: true, cancelable: true, button: 0, ...init });
    el.dispatchEvent(event);
    return event;
  };
  beforeEach(() => {
    history.replaceState(null, '', '/start');
    active = true;
    load = vi.fn();
    routed = vi.fn((event) => event.preventDefault());
    // The app's router, listening where routers listen.
    document.addEventListener('click', routed);
    undo = interceptNavigation(window, () => active, load);
  });
  afterEach(() => {
    undo();
    document.removeEventListener('click', routed);
  });

  it('turns a same-origin link click into a full load, before the router sees it', () => {
    const event = click('<a href="/orders/7">orders</a>');
    expect(load).toHaveBeenCalledWith('http://app.test/orders/7');
    expect(event.defaultPrevented).toBe(true);
    expect(routed).not.toHaveBeenCalled();
  });

  it('finds the link from a click on its content', () => {
    click('<a href="/orders"><span data-click>orders</span></a>');
    expect(load).toHaveBeenCalledWith('http://app.test/orders');
  });

  it('leaves clicks alone when no update is ready', () => {
    active = false;
    const event = click('<a href="/orders">orders</a>');
    expect(load).not.toHaveBeenCalled();
    expect(routed).toHaveBeenCalledWith(event);
  });

  it('ignores other origins, new tabs, downloads, modified clicks and in-page anchors', () => {
    click('<a href="https://elsewhere.test/x">x</a>');
    click('<a href="/x" target="_blank">x</a>');
    click('<a href="/x" download>x</a>');
    click('<a href="/x">x</a>', { ctrlKey: true });
    click('<a href="/x">x</a>', { button: 1 });
    click('<a href="#section">x</a>');
    expect(load).not.toHaveBeenCalled();
  });

  it('turns pushState to another URL into a full load, and passes it through otherwise', () => {
    history.pushState({}, '', '/next');
    expect(load).toHaveBeenCalledWith('http://app.test/next');
    expect(location.pathname).toBe('/start');
    active = false;
    history.pushState({}, '', '/later');
    expect(location.pathname).toBe('/later');
    expect(load).toHaveBeenCalledTimes(1);
  });

  it('reloads on back/forward', () => {
    window.dispatchEvent(new PopStateEvent('popstate'));
    expect(load).toHaveBeenCalledWith(location.href);
  });
});

describe('reloadWhenHidden', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => {
    vi.useRealTimers();
    setVisibility(document, 'visible');
  });

  it('fires after the tab stayed hidden for the delay', () => {
    const fire = vi.fn();
    const watch = reloadWhenHidden(document, () => 1000, () => true, fire);
    setVisibility(document, 'hidden');
    vi.advanceTimersByTime(999);
    expect(fire).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(fire).toHaveBeenCalledTimes(1);
    watch.stop();
  });

  it('is cancelled when the tab becomes visible again', () => {
    const fire = vi.fn();
    const watch = reloadWhenHidden(document, () => 1000, () => true, fire);
    setVisibility(document, 'hidden');
    vi.advanceTimersByTime(500);
    setVisibility(document, 'visible');
    vi.advanceTimersByTime(5000);
    expect(fire).not.toHaveBeenCalled();
    watch.stop();
  });

  it('starts counting when armed with the tab already hidden, only while active', () => {
    const fire = vi.fn();
    let active = false;
    const watch = reloadWhenHidden(document, () => 1000, () => active, fire);
    setVisibility(document, 'hidden');
    vi.advanceTimersByTime(5000);
    expect(fire).not.toHaveBeenCalled();
    active = true;
    watch.arm();
    vi.advanceTimersByTime(1000);
    expect(fire).toHaveBeenCalledTimes(1);
    watch.stop();
  });
});
