#!/usr/bin/env python3
"""Pools the per-round ratios of several result files of `bench/proxy.py`
(or of another comparison with nginx: static.py, access_log.py; each
round's two sides come from the same moment of the same run) and prints,
per case, connection count and reference, the median over all rounds
with a 95 % bootstrap interval of the median, the quartiles, and the share
of rounds at or above 1.0.

Figures pooled: skewless over the reference in requests/s and p99, and,
where the rounds measured CPU time, the server's (the proxy's) CPU time
per request ("CPU") and, proxying, that CPU time divided by the back
end's in the same round ("CPU / back end CPU"). The back end serves the
same request in every round, so the latter takes out how fast the host
ran at that moment: on a host whose speed drifts, it is the steadiest of
these figures.

Usage: bench/pool.py [--target T] [--against REF]... RESULT.json...
"""

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median  # noqa: E402

FIGURES = ("rps", "p99", "CPU", "CPU / back end CPU")


def ratios(a, b):
    """The ratios of round `a` (the target) over round `b` (the reference),
    by figure."""
    out = {"rps": a["rps"] / b["rps"], "p99": a["p99_us"] / b["p99_us"]}
    ca, cb = a.get("cpu_us_per_req") or {}, b.get("cpu_us_per_req") or {}
    # The server's own CPU time: "proxy" where a back end is measured too.
    key = "proxy" if "proxy" in ca else "server"
    if ca.get(key) and cb.get(key):
        out["CPU"] = ca[key] / cb[key]
        if ca.get("backend") and cb.get("backend"):
            out["CPU / back end CPU"] = (ca[key] / ca["backend"]) / (cb[key] / cb["backend"])
    return out


def median_ratios(rounds, ref_rounds):
    """{figure: median over rounds} of `ratios` for two targets' rounds of
    one run (the same moments)."""
    per_round = [ratios(a, b) for a, b in zip(rounds, ref_rounds)]
    return {fig: median([r[fig] for r in per_round if fig in r])
            for fig in FIGURES if any(fig in r for r in per_round)}


def bootstrap(xs, draws=2000, seed=1):
    """A 95 % interval of the median, from `draws` resamples."""
    rng = random.Random(seed)
    ms = sorted(median(rng.choices(xs, k=len(xs))) for _ in range(draws))
    return ms[int(0.025 * draws)], ms[int(0.975 * draws) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="skewless", help="the target set against each reference")
    ap.add_argument("--against", action="append", metavar="REFERENCE",
                    help="a reference target, repeatable (default: nginx and nginx-fields; "
                         "for access_log.py results: --target skewless-log --against skewless)")
    ap.add_argument("files", nargs="+", metavar="RESULT.json")
    args = ap.parse_args()
    refs = args.against or ["nginx", "nginx-fields"]
    pooled = {}
    for fn in args.files:
        try:
            with open(fn) as f:
                summary = json.load(f)["summary"]
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"pool.py: {fn}: not a benchmark comparison's result ({e})")
        rows = {(s["case"], s["target"], s["connections"]): s for s in summary}
        for (case, target, conns), row in rows.items():
            if target != args.target:
                continue
            for ref in refs:
                if (case, ref, conns) not in rows:
                    continue
                for a, b in zip(row["rounds"], rows[(case, ref, conns)]["rounds"]):
                    for fig, r in ratios(a, b).items():
                        pooled.setdefault((case, conns, ref, fig), []).append(r)
    if not pooled:
        raise SystemExit(f"pool.py: no rounds of {args.target!r} beside {' or '.join(refs)} "
                         f"in {', '.join(args.files)}")
    print(f"{'case':<12}  {'conns':>5}  {'reference':<12}  {'figure':<24}  {'rounds':>6}  {'median':>6}  "
          f"{'95 % interval':>13}  {'quartiles':>11}  {'≥ 1.0':>5}")
    for case, conns in sorted({k[:2] for k in pooled}, key=lambda k: (k[0], -k[1])):
        for ref in refs:
            for fig in FIGURES:
                xs = pooled.get((case, conns, ref, fig))
                if not xs:
                    continue
                lo, hi = bootstrap(xs)
                s = sorted(xs)
                q1, q3 = s[len(s) // 4], s[(3 * len(s)) // 4]
                share = sum(x >= 1.0 for x in xs) / len(xs)
                print(f"{case:<12}  {conns:>5}  {ref:<12}  {fig:<24}  {len(xs):>6}  {median(xs):>6.3f}  "
                      f"{lo:>6.3f}–{hi:<6.3f}  {q1:.3f}–{q3:.3f}  {share:>5.2f}")


if __name__ == "__main__":
    main()
