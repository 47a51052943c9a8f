import { describe, expect, it, vi } from 'vitest';
import { serviceWorker } from '../../src/serviceworker.js';

/** A `navigator.serviceWorker` double. */
function container(controllerURL = null) {
  const target = new EventTarget();
  const posted = [];
  const registration = { update: vi.fn(() => Promise.resolve()), unregister: vi.fn(() => Promise.resolve(true)) };
  return Object.assign(target, {
    posted,
    registration,
    controller: controllerURL && { scriptURL: controllerURL, postMessage: (m) => posted.push(m) },
    startMessages: vi.fn(),
    register: vi.fn(() => Promise.resolve(registration)),
    getRegistration: vi.fn(() => Promise.resolve(registration)),
  });
}

const win = (c) => /** @type {any} */ ({ navigator: { serviceWorker: c } });

describe('serviceWorker', () => {
  it('registers /_skewless/sw.js for the whole origin and tells it the release', async () => {
    const c = container('http://app.test/_skewless/sw.js');
    let release = 'v1';
    const sw = serviceWorker(win(c), () => release);
    sw.set('on');
    expect(c.register).toHaveBeenCalledWith('/_skewless/sw.js', { scope: '/', updateViaCache: 'none' });
    expect(c.startMessages).toHaveBeenCalled();
    expect(c.posted).toEqual([{ skewless: 'release', release: 'v1' }]);
    // After a stylesheet swap, and when a worker takes control.
    release = 'v2';
    sw.announce();
    c.dispatchEvent(new Event('controllerchange'));
    expect(c.posted.slice(1)).toEqual([
      { skewless: 'release', release: 'v2' },
      { skewless: 'release', release: 'v2' },
    ]);
    await Promise.resolve();
    sw.update();
    expect(c.registration.update).toHaveBeenCalled();
    sw.stop();
  });

  it('answers the worker when it asks which release the tab runs', () => {
    const c = container();
    const sw = serviceWorker(win(c), () => 'v7');
    sw.set('on');
    const port = { postMessage: vi.fn() };
    c.dispatchEvent(Object.assign(new Event('message'), { data: { skewless: 'release?' }, ports: [port] }));
    expect(port.postMessage).toHaveBeenCalledWith('v7');
    sw.stop();
    c.dispatchEvent(Object.assign(new Event('message'), { data: { skewless: 'release?' }, ports: [port] }));
    expect(port.postMessage).toHaveBeenCalledTimes(1);
  });

  it('when turned off, removes a skewless worker left from before, and only that', async () => {
    const ours = container('http://app.test/_skewless/sw.js');
    serviceWorker(win(ours), () => 'v1').set('off');
    expect(ours.register).not.toHaveBeenCalled();
    await vi.waitFor(() => expect(ours.registration.unregister).toHaveBeenCalled());
    const theirs = container('http://app.test/app-sw.js');
    serviceWorker(win(theirs), () => 'v1').set('off');
    await Promise.resolve();
    expect(theirs.getRegistration).not.toHaveBeenCalled();
  });

  it("with a worker of the app's own, tells and answers it without registering", () => {
    const c = container('http://app.test/app-sw.js');
    const sw = serviceWorker(win(c), () => 'v3');
    sw.set('own');
    expect(c.register).not.toHaveBeenCalled();
    expect(c.posted).toEqual([{ skewless: 'release', release: 'v3' }]);
    const port = { postMessage: vi.fn() };
    c.dispatchEvent(Object.assign(new Event('message'), { data: { skewless: 'release?' }, ports: [port] }));
    expect(port.postMessage).toHaveBeenCalledWith('v3');
    sw.stop();
  });

  it('does nothing where the browser has no service workers', () => {
    const sw = serviceWorker(win(undefined), () => 'v1');
    expect(() => (sw.set('on'), sw.announce(), sw.update(), sw.stop())).not.toThrow();
  });
});
