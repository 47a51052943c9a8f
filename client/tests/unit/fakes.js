/** Test doubles shared by the unit tests. */

/** An EventSource double: tests open, emit and fail it by hand. */
export class FakeEventSource {
  /** @type {FakeEventSource[]} */
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.closed = false;
    this.listeners = {};
    this.onopen = null;
    this.onerror = null;
    FakeEventSource.instances.push(this);
  }
  addEventListener(type, fn) {
    (this.listeners[type] ||= []).push(fn);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  open() {
    this.readyState = 1;
    if (this.onopen) this.onopen(new Event('open'));
  }
  emit(type, data) {
    const event = new MessageEvent(type, { data: typeof data === 'string' ? data : JSON.stringify(data) });
    for (const fn of this.listeners[type] || []) fn(event);
  }
  fail() {
    this.readyState = 2;
    if (this.onerror) this.onerror(new Event('error'));
  }
  static latest() {
    return FakeEventSource.instances[FakeEventSource.instances.length - 1];
  }
}

/** Sets document.visibilityState for the test. */
export function setVisibility(doc, state) {
  Object.defineProperty(doc, 'visibilityState', { value: state, configurable: true });
  doc.dispatchEvent(new Event('visibilitychange'));
}

/** A JSON response. */
export function json(body, init = {}) {
  return new Response(JSON.stringify(body), {
    status: 200,
    ...init,
    headers: { 'Content-Type': 'application/json', ...(init.headers || {}) },
  });
}
