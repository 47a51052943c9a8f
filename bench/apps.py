"""Deterministic generated single-page apps for the benchmarks.

`static_app` is a small app whose files match the static cases (a shell, a
1 KB file, a 200 KB content-hashed bundle); `large_app` is a build of
5,000 files / ~100 MB shaped like a real one (mostly JavaScript, CSS and
source maps, some fonts and images that do not compress); `change_files`
rewrites 1 % of a large app's files the way a rebuild does.
"""

import hashlib
import os
import random

WORDS = (
    "const let var function return if else for while switch case break new this "
    "import export default from async await class extends super null undefined "
    "true false typeof instanceof Object Array Promise Map Set JSON Math String "
    "render state props useEffect useState dispatch reducer selector component "
    "element children createElement fragment key ref value onClick onChange "
    "fetch response request headers method body then catch finally resolve reject "
    "length push pop slice splice map filter reduce forEach indexOf includes"
).split()


def js_text(rng, size):
    """Minified-JavaScript-like text of about `size` bytes: compresses about
    as well as a real bundle (3-5x)."""
    out = []
    n = 0
    idents = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_$") for _ in range(rng.randint(1, 3)))
              for _ in range(400)]
    while n < size:
        kind = rng.random()
        if kind < 0.45:
            s = f"{rng.choice(WORDS)} {rng.choice(idents)}={rng.choice(idents)}.{rng.choice(WORDS)}("
        elif kind < 0.7:
            s = f"{rng.choice(idents)}[{rng.randint(0, 99999)}],"
        elif kind < 0.85:
            s = f'"{rng.choice(WORDS)}-{rng.getrandbits(24):06x}":'
        else:
            s = "});" if rng.random() < 0.5 else "){"
        out.append(s)
        n += len(s)
    return "".join(out)[:size]


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(path, mode) as f:
        f.write(data)


def short_hash(data):
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()[:8]


SHELL = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Benchmark app</title>
  <link rel="stylesheet" href="/assets/{css}">
  <link rel="icon" href="/favicon.svg">
  <link rel="modulepreload" href="/assets/{js}">
  <script type="module" src="/assets/{js}"></script>
</head>
<body>
  <header><img src="/favicon.svg" alt="" width="32" height="32"> <strong>Benchmark</strong></header>
  <nav><a href="/">Home</a> <a href="/inbox/42">Message 42</a> <a href="/settings">Settings</a></nav>
  <main id="app">Loading…</main>
  <noscript>This app needs JavaScript.</noscript>
{filler}
</body>
</html>
"""


def static_app(root, seed=1, big=0):
    """The app of the static cases (with `big` > 0, also an incompressible
    file of that many bytes). Returns the paths the cases request."""
    rng = random.Random(seed)
    js = js_text(rng, 200 * 1024)
    js_name = f"app-{short_hash(js)}.js"
    css = js_text(rng, 12 * 1024).replace("(", "{").replace(")", "}")
    css_name = f"style-{short_hash(css)}.css"
    small = js_text(rng, 1024)
    # A shell of typical size (~2.5 KB) for an app with a few preloads.
    filler = "\n".join(f'  <link rel="preload" as="image" href="/img/pic-{i}.svg">' for i in range(20))
    write(os.path.join(root, "index.html"), SHELL.format(css=css_name, js=js_name, filler=filler))
    write(os.path.join(root, "assets", js_name), js)
    write(os.path.join(root, "assets", css_name), css)
    write(os.path.join(root, "1k.txt"), small)
    write(os.path.join(root, "favicon.svg"),
          '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="14"/></svg>\n')
    paths = {"js": f"assets/{js_name}", "small": "1k.txt"}
    if big:
        # In 64 MiB pieces: randbytes of more than 256 MiB overflows.
        piece = 64 << 20
        data = b"".join(rng.randbytes(min(piece, big - at)) for at in range(0, big, piece))
        paths["big"] = f"media/video-{short_hash(data)}.bin"
        write(os.path.join(root, paths["big"]), data)
    return paths


# (extension, share of files, mean size in bytes, compressible)
LARGE_MIX = [
    ("js", 0.46, 19_000, True),
    ("css", 0.10, 9_000, True),
    ("map", 0.14, 36_000, True),
    ("json", 0.06, 4_000, True),
    ("svg", 0.06, 3_000, True),
    ("woff2", 0.04, 30_000, False),
    ("png", 0.08, 30_000, False),
    ("webp", 0.06, 20_000, False),
]


def _large_file(rng, ext, mean, compressible):
    size = max(200, int(rng.lognormvariate(0, 0.6) * mean * 0.84))
    if compressible:
        return js_text(rng, size).encode()
    return rng.randbytes(size)


def large_app(root, files=5000, seed=7):
    """A build of `files` files (about 100 MB for 5,000). Returns the list of
    relative paths, index.html first."""
    rng = random.Random(seed)
    paths = ["index.html"]
    write(os.path.join(root, "index.html"),
          SHELL.format(css="main.css", js="main.js", filler=""))
    i = 0
    for ext, share, mean, compressible in LARGE_MIX:
        for _ in range(round(share * (files - 1))):
            if len(paths) >= files:
                break
            data = _large_file(rng, ext, mean, compressible)
            rel = f"assets/{ext}/{i // 200:02d}/f{i:05d}-{short_hash(data)}.{ext}"
            write(os.path.join(root, rel), data)
            paths.append(rel)
            i += 1
    while len(paths) < files:
        data = _large_file(rng, "js", 19_000, True)
        rel = f"assets/js/extra/f{i:05d}-{short_hash(data)}.js"
        write(os.path.join(root, rel), data)
        paths.append(rel)
        i += 1
    return paths


def change_files(root, paths, fraction=0.01, seed=11):
    """Rewrites `fraction` of the files (every 1/fraction-th, never the
    shell) in place with new content of similar size, as a rebuild that
    touched them would. Returns the number changed."""
    rng = random.Random(seed)
    step = round(1 / fraction)
    changed = 0
    for rel in paths[1::step]:
        p = os.path.join(root, rel)
        old = os.path.getsize(p)
        compressible = not rel.endswith((".woff2", ".png", ".webp"))
        data = js_text(rng, old).encode() if compressible else rng.randbytes(old)
        write(p, data)
        changed += 1
    return changed


def tree_bytes(root):
    total = 0
    count = 0
    for d, _, fs in os.walk(root):
        for f in fs:
            total += os.path.getsize(os.path.join(d, f))
            count += 1
    return count, total


if __name__ == "__main__":
    import sys
    import tempfile
    t = tempfile.mkdtemp()
    large_app(t)
    print(tree_bytes(t), t, file=sys.stderr)
