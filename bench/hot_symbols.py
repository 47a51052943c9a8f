#!/usr/bin/env python3
"""Writes crates/skewless/hot-symbols.txt: the functions of the release
binary that requests run through, hottest first, for the linker to place
together (see crates/skewless/build.rs).

Profiles skewless alone under callgrind (bench/callgrind.py --skewless-only
--mangled) for each request case: proxied /api/ at one connection and at
eight, the shell, the 304 revalidation, a 1 KB file, the 200 KB br
file, and the 1 KB file again with the access log on (so the log's
request-side code sits with the rest when it is on). Each case's functions are weighted by their share of that case's
instructions after start-up, so every case counts alike, and summed.
Run it on a release build of the code being laid out (the list names its
symbols, and names change with the code), then rebuild. `--check` only
reports how many of the listed functions the release binary has, and how
many 4 KiB pages of code they span.

Usage: bench/hot_symbols.py [--duration S] [--check]
"""

import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import log  # noqa: E402

# (case, connections, with the access log on)
CASES = [("api", 1, False), ("api", 8, False), ("shell", 8, False), ("shell-304", 8, False),
         ("1k", 8, False), ("js-200k-br", 8, False), ("1k", 8, True)]
OUT = os.path.join(common.REPO, "crates", "skewless", "hot-symbols.txt")
LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:(\S+) \[(.+)\]$")


def functions(profile, binary):
    """Self instructions of each function of `binary` in a callgrind profile."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", profile],
                          capture_output=True, text=True, check=True).stdout
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m or os.path.realpath(m.group(3)) != binary:
            continue
        name = m.group(2)
        # Addresses without a symbol, and callgrind's "(below main)".
        if name.startswith("0x") or name.startswith("("):
            continue
        out[name] = out.get(name, 0) + int(m.group(1).replace(",", ""))
    return out


def check(binary):
    """Prints how many listed functions `binary` has and the pages they span."""
    with open(OUT) as f:
        listed = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    text = subprocess.run(["nm", "-S", binary], capture_output=True, text=True, check=True).stdout
    symbols = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tT":
            symbols[parts[3]] = (int(parts[0], 16), int(parts[1], 16))
    found = [symbols[name] for name in listed if name in symbols]
    pages = {p for at, size in found for p in range(at >> 12, ((at + max(size, 1) - 1) >> 12) + 1)}
    print(f"{len(found)} of {len(listed)} listed functions are in {binary}, "
          f"{sum(size for _, size in found)} bytes over {len(pages)} pages of 4 KiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="only report the list's coverage")
    args = ap.parse_args()
    if args.check:
        check(os.path.realpath(common.SKEWLESS))
        return
    common.build()
    binary = os.path.realpath(common.SKEWLESS)
    weight = {}
    here = os.path.dirname(os.path.abspath(__file__))
    for case, conns, access_log in CASES:
        label = "hot"
        log(f"profiling {case} at {conns} connection(s)" + (" with the access log" if access_log else ""))
        subprocess.run([sys.executable, os.path.join(here, "callgrind.py"), "--case", case,
                        "--connections", str(conns), "--duration", str(args.duration),
                        "--skewless-only", "--mangled", "--label", label]
                       + (["--access-log"] if access_log else []),
                       check=True, env=dict(os.environ, BENCH_SKIP_BUILD="1"),
                       stdout=subprocess.DEVNULL)
        name = (f"callgrind-{case}" + ("-access-log" if access_log else "")
                + (f"-c{conns}" if conns != 8 else "") + f"-{label}")
        base = os.path.join(common.RESULTS, name)
        fns = functions(base + ".out", binary)
        total = sum(fns.values()) or 1
        for f, n in fns.items():
            weight[f] = weight.get(f, 0) + n / total
        for suffix in (".out", ".out.1", ".json"):
            if os.path.exists(base + suffix):
                os.remove(base + suffix)
        log(f"  {len(fns)} functions")
    order = sorted(weight, key=lambda f: (-weight[f], f))
    with open(OUT, "w") as f:
        f.write("# Hot functions of the release binary, hottest first, for the linker's\n"
                "# --symbol-ordering-file (see build.rs). Written by bench/hot_symbols.py.\n")
        for name in order:
            f.write(name + "\n")
    log(f"wrote {OUT}: {len(order)} functions; rebuild to lay them out")


if __name__ == "__main__":
    main()
