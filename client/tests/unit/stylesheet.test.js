import { describe, expect, it } from 'vitest';
import { onlyStylesheets, swapStylesheets, swapping } from '../../src/stylesheet.js';

describe('onlyStylesheets', () => {
  it('accepts diffs of .css files only, and the empty diff', () => {
    expect(onlyStylesheets({ changed: ['/style.css'], added: ['/x/new.CSS'], removed: ['/old.css'] })).toBe(true);
    expect(onlyStylesheets({ changed: [], added: [], removed: [] })).toBe(true);
  });
  it('rejects a diff with anything else, the shell included', () => {
    expect(onlyStylesheets({ changed: ['/style.css', '/index.html'], added: [], removed: [] })).toBe(false);
    expect(onlyStylesheets({ changed: [], added: ['/assets/chunk.js'], removed: [] })).toBe(false);
    expect(onlyStylesheets({ changed: [], added: [], removed: ['/style.css.map'] })).toBe(false);
  });
});

/**
 * A document double whose links load when the test says so (a DOM
 * implementation without a network cannot load stylesheets).
 */
function page(hrefs) {
  const links = [];
  const make = (href) => {
    let resolved = '';
    const link = {
      // Like the DOM property: assigning a relative URL reads back absolute.
      get href() {
        return resolved;
      },
      set href(value) {
        resolved = new URL(value, 'http://app.test/').href;
      },
      onload: null,
      onerror: null,
      connected: true,
      cloneNode: () => make(link.href),
      remove() {
        link.connected = false;
      },
      after(next) {
        links.push(next);
      },
    };
    link.href = href;
    return link;
  };
  for (const href of hrefs) links.push(make(href));
  return {
    links,
    live: () => links.filter((l) => l.connected).map((l) => l.href),
    doc: {
      baseURI: 'http://app.test/',
      location: { origin: 'http://app.test' },
      querySelectorAll: () => links.filter((l) => l.connected),
    },
  };
}

describe('swapStylesheets', () => {
  const diff = { changed: ['/style.css'], added: [], removed: ['/gone.css'] };

  it('loads the new stylesheet before removing the old one', async () => {
    const p = page(['/_r/v1/style.css', '/_r/v1/theme/dark.css?x=1', '/_r/v1/gone.css', 'https://cdn.test/lib.css']);
    const done = swapStylesheets(p.doc, 'v1', 'v2', diff);
    const added = p.links.slice(4);
    expect(added.map((l) => l.href)).toEqual(['http://app.test/_r/v2/style.css', 'http://app.test/_r/v2/theme/dark.css?x=1']);
    expect(added.every((l) => swapping.has(l))).toBe(true);
    // Both old and new are present until the new one has loaded: no flash.
    expect(p.live()).toContain('http://app.test/_r/v1/style.css');
    for (const link of added) link.onload();
    expect(await done).toBe(true);
    expect(p.live()).toEqual([
      'http://app.test/_r/v1/gone.css',
      'https://cdn.test/lib.css',
      'http://app.test/_r/v2/style.css',
      'http://app.test/_r/v2/theme/dark.css?x=1',
    ]);
  });

  it('keeps the old stylesheet and reports failure when the new one does not load', async () => {
    const p = page(['/_r/v1/style.css']);
    const done = swapStylesheets(p.doc, 'v1', 'v2', diff);
    p.links[1].onerror();
    expect(await done).toBe(false);
    expect(p.live()).toEqual(['http://app.test/_r/v1/style.css']);
  });

  it('leaves links of other releases alone', async () => {
    const p = page(['/_r/v10/style.css', '/style.css']);
    expect(await swapStylesheets(p.doc, 'v1', 'v2', diff)).toBe(true);
    expect(p.links).toHaveLength(2);
  });
});
