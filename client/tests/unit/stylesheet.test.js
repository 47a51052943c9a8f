import { describe, expect, it } from 'vitest';
import { followRenames, onlyStylesheets, redirectInserted, swapStylesheets, swapping } from '../../src/stylesheet.js';

describe('onlyStylesheets', () => {
  it('accepts diffs of .css files only, and the empty diff', () => {
    expect(onlyStylesheets({ changed: ['/style.css'], added: ['/x/new.CSS'], removed: ['/old.css'] })).toBe(true);
    expect(onlyStylesheets({ changed: [], added: [], removed: [] })).toBe(true);
  });
  it("takes the gateway's rename-aware verdict when there is one", () => {
    expect(onlyStylesheets({ changed: ['/index.html'], added: [], removed: [], only_stylesheets: true })).toBe(true);
    expect(onlyStylesheets({ changed: ['/s.css'], added: [], removed: [], only_stylesheets: false })).toBe(false);
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

  it('leaves links of other releases and unchanged plain paths alone', async () => {
    const p = page(['/_r/v10/style.css', '/other.css']);
    expect(await swapStylesheets(p.doc, 'v1', 'v2', diff)).toBe(true);
    expect(p.links).toHaveLength(2);
  });

  it('moves renamed stylesheets to their counterparts, also those the code inserted at plain paths', async () => {
    const renamedDiff = {
      changed: ['/index.html'],
      added: [],
      removed: [],
      renamed: { '/assets/index-AAAA1111.css': '/assets/index-BBBB2222.css', '/assets/about-CCCC3333.css': '/assets/about-DDDD4444.css', '/assets/index-EEEE5555.js': '/assets/index-FFFF6666.js' },
      stylesheets: [
        { from: '/assets/index-AAAA1111.css', to: '/assets/index-BBBB2222.css' },
        { from: '/assets/about-CCCC3333.css', to: '/assets/about-DDDD4444.css' },
      ],
      only_stylesheets: true,
    };
    const p = page(['/_r/v1/assets/index-AAAA1111.css', '/assets/about-CCCC3333.css', '/assets/keep-GGGG7777.css']);
    const done = swapStylesheets(p.doc, 'v1', 'v2', renamedDiff);
    for (const link of p.links.slice(3)) link.onload();
    expect(await done).toBe(true);
    expect(p.live()).toEqual([
      'http://app.test/assets/keep-GGGG7777.css',
      'http://app.test/_r/v2/assets/index-BBBB2222.css',
      'http://app.test/_r/v2/assets/about-DDDD4444.css',
    ]);
  });
});

describe('followRenames', () => {
  it('maps the names the page code knows to the newest counterparts, across swaps', () => {
    const names = new Map();
    followRenames(names, {
      changed: ['/style.css'],
      added: [],
      removed: [],
      renamed: { '/a-AAAA1111.css': '/a-BBBB2222.css' },
      stylesheets: [
        { from: '/a-AAAA1111.css', to: '/a-BBBB2222.css' },
        { from: '/style.css', to: '/style.css' },
      ],
    });
    followRenames(names, {
      changed: [],
      added: [],
      removed: [],
      renamed: { '/a-BBBB2222.css': '/a-CCCC3333.css' },
      stylesheets: [{ from: '/a-BBBB2222.css', to: '/a-CCCC3333.css' }],
    });
    expect(Object.fromEntries(names)).toEqual({ '/a-AAAA1111.css': '/a-CCCC3333.css', '/style.css': '/style.css' });
  });
});

describe('redirectInserted', () => {
  it('points a stylesheet link the old code inserts at the adopted release, before it loads', () => {
    const names = new Map([['/assets/about-CCCC3333.css', '/assets/about-DDDD4444.css']]);
    const undo = redirectInserted(window, names, () => 'v3');
    // A detached parent: the DOM double would otherwise try to load them.
    const head = document.createElement('div');
    try {
      const make = (href, rel = 'stylesheet') => Object.assign(document.createElement('link'), { rel, href });
      const late = head.appendChild(make('/assets/about-CCCC3333.css'));
      const before = head.insertBefore(make('/_r/v2/assets/about-CCCC3333.css'), late);
      const other = head.appendChild(make('/assets/other-GGGG7777.css'));
      const preload = head.appendChild(make('/assets/about-CCCC3333.css', 'modulepreload'));
      expect([late, before, other, preload].map((l) => new URL(l.href).pathname)).toEqual([
        '/_r/v3/assets/about-DDDD4444.css',
        '/_r/v3/assets/about-DDDD4444.css',
        '/assets/other-GGGG7777.css',
        '/assets/about-CCCC3333.css',
      ]);
    } finally {
      undo();
    }
    expect(document.head.appendChild).toBe(Node.prototype.appendChild);
  });
});
