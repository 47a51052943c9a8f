#!/usr/bin/env python3
"""Deploy cost and promote-to-served latency.

A generated app of 5,000 files / ~100 MB (mostly JavaScript, CSS and source
maps, some images and fonts) is deployed to an empty server; then 1 % of its
files are rewritten as a rebuild would and it is deployed again as a second
release: bytes uploaded and time of each. Then the two releases are promoted
in turn, and each time the clock runs from the promote call until a fresh
shell request (no pin, no cookie) is answered by the promoted release. The
same is measured for a small app (5 files), where the manifest is tiny.

The gateway runs with its default worker count on all cores (deploy-time
compression uses them). Writes bench/results/deploy.json.

Usage: bench/deploy.py [--files N] [--promotions N]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps  # noqa: E402
import common  # noqa: E402
from common import http, log  # noqa: E402


def promote_to_served(url, releases, rounds):
    """Promotes `releases` in turn; returns the promote-call and
    promote-to-served durations (ms)."""
    calls, served = [], []
    for i in range(rounds):
        target = releases[i % len(releases)]
        t0 = time.perf_counter()
        common.admin("POST", url, f"/releases/{target}/promote", {})
        t_call = time.perf_counter()
        for _ in range(1000):
            status, h, _ = http("GET", f"{url}/inbox/42", headers={"Accept": "text/html"})
            if status == 200 and h.get("skewless-served-by") == target:
                break
        else:
            raise RuntimeError(f"the shell never came from {target}")
        t1 = time.perf_counter()
        calls.append((t_call - t0) * 1000)
        served.append((t1 - t0) * 1000)
    return calls, served


def summary(xs):
    return {"p50": round(common.percentile(xs, 50), 2), "p99": round(common.percentile(xs, 99), 2),
            "max": round(max(xs), 2), "n": len(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--promotions", type=int, default=40)
    args = ap.parse_args()

    common.ensure_tools(nginx=False, wrk=False)
    common.build()
    work = tempfile.mkdtemp(prefix="bench-deploy-")
    app = os.path.join(work, "app")
    log(f"generating an app of {args.files} files")
    paths = apps.large_app(app, files=args.files)
    files, size = apps.tree_bytes(app)
    sk, url = common.start_skewless(os.path.join(work, "data"), workers=common.CORES, cpus="")

    log("first deploy")
    first, first_s = common.deploy(url, app, "big-1")
    changed = apps.change_files(app, paths, 0.01)
    log(f"second deploy, {changed} files changed")
    second, second_s = common.deploy(url, app, "big-2")

    log("promote-to-served, large releases")
    big_calls, big_served = promote_to_served(url, ["big-1", "big-2"], args.promotions)
    small = os.path.join(work, "small")
    apps.static_app(small)
    common.deploy(url, small, "small-1")
    apps.write(os.path.join(small, "1k.txt"), "changed\n")
    common.deploy(url, small, "small-2")
    log("promote-to-served, small releases")
    small_calls, small_served = promote_to_served(url, ["small-1", "small-2"], args.promotions)

    result = {
        "setup": {"workers": common.CORES, "server_cpus": "all", "files": files, "bytes": size},
        "first_deploy": {**first, "seconds": round(first_s, 2)},
        "second_deploy": {**second, "seconds": round(second_s, 2), "files_changed": changed},
        "second_uploaded_share": round(second["uploaded_bytes"] / second["bytes"], 4),
        "second_time_share": round(second_s / first_s, 4),
        "promote_to_served_ms": {
            "large": {"promote_call": summary(big_calls), "served": summary(big_served)},
            "small": {"promote_call": summary(small_calls), "served": summary(small_served)},
        },
    }
    out = common.save("deploy", result)
    f, s = out["first_deploy"], out["second_deploy"]
    common.table(["deploy", "files", "MB", "uploaded files", "uploaded MB", "seconds"], [
        ["first", f["files"], round(f["bytes"] / 1e6, 1), f["uploaded_files"],
         round(f["uploaded_bytes"] / 1e6, 2), f["seconds"]],
        ["second (1 % changed)", s["files"], round(s["bytes"] / 1e6, 1), s["uploaded_files"],
         round(s["uploaded_bytes"] / 1e6, 2), s["seconds"]],
    ])
    print(f"second deploy: {out['second_uploaded_share'] * 100:.2f} % of the bytes, "
          f"{out['second_time_share'] * 100:.1f} % of the first deploy's time")
    rows = []
    for name, d in out["promote_to_served_ms"].items():
        rows.append([name, d["served"]["n"], d["promote_call"]["p50"], d["served"]["p50"],
                     d["served"]["p99"], d["served"]["max"]])
    common.table(["releases", "promotions", "call p50 ms", "served p50 ms", "served p99 ms",
                  "served max ms"], rows)


if __name__ == "__main__":
    main()
