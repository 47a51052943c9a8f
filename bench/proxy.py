#!/usr/bin/env python3
"""API proxying: `/api/items` of the example back end, hit directly, through
skewless (pinned with `Skewless-Release`, routed to that release's back end)
and through nginx (`proxy_pass` with `keepalive 64` to the same back end).

The server side (the proxy under test and the back end, each with the same
worker count) shares the server core(s); wrk runs on the other core. Each
target is measured at 64 connections (throughput) and at 1 connection (the
latency one request pays, where the added hop shows). Writes
bench/results/proxy.json.

A second nginx (target `nginx-fields`) gets the same request as skewless
(with the `Skewless-Release` field) and sends the back end the same
forwarding fields (`X-Forwarded-Host` and `Forwarded` besides nginx's usual
`X-Forwarded-For` and `-Proto`), so that skewless is also set against an
nginx asking the back end for the same work.

`--also BINARY` runs a second skewless build (target `skewless-b`, same
release, same back end) in the same rounds, to measure a change side by side
with the first and with nginx.

Usage: bench/proxy.py [--rounds N] [--duration S] [--connections C] [--also BINARY]
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps  # noqa: E402
import common  # noqa: E402
from common import http, log  # noqa: E402

RELEASE = "proxy-1"
PATH = "/api/items"


def main():
    args = common.comparison_args(__doc__, extra=[
        (["--also"], {"metavar": "BINARY", "help": "a second skewless build, measured as skewless-b"}),
    ])

    common.ensure_tools()
    common.build()
    work = tempfile.mkdtemp(prefix="bench-proxy-")
    os.chmod(work, 0o755)
    app = os.path.join(work, "app")
    apps.static_app(app)
    be, be_url = common.start_backend(RELEASE)
    sk, sk_url = common.start_skewless(os.path.join(work, "data"))
    common.deploy(sk_url, app, RELEASE, backend=be_url)
    ng, ng_url = common.start_nginx(app, upstream=be_url)
    ngf, ngf_url = common.start_nginx(app, upstream=be_url, skewless_fields=True)
    if args.also:
        sk_b, sk_b_url = common.start_skewless(os.path.join(work, "data-b"), binary=args.also)
        common.deploy(sk_b_url, app, RELEASE, backend=be_url)

    pin = f"Skewless-Release: {RELEASE}"

    # The CPU time each proxy and the back end spend per request is
    # measured beside the rates.
    def cpu(proxy):
        return {"proxy": [proxy.pid], "backend": [be.pid]} if proxy else {"backend": [be.pid]}

    targets = {"skewless": (f"{sk_url}{PATH}", [pin], cpu(sk))}
    # skewless-b runs next to skewless in every round, so their ratio
    # compares the same moment.
    if args.also:
        targets["skewless-b"] = (f"{sk_b_url}{PATH}", [pin], cpu(sk_b))
    targets["nginx"] = (f"{ng_url}{PATH}", [], cpu(ng))
    targets["nginx-fields"] = (f"{ngf_url}{PATH}", [pin], cpu(ngf))
    targets["direct"] = (f"{be_url}{PATH}", [], cpu(None))
    checks = {}
    for t, (url, hdrs, _) in targets.items():
        status, h, body = http("GET", url, headers=dict(x.split(": ", 1) for x in hdrs))
        if status != 200:
            raise RuntimeError(f"GET {url}: {status}")
        checks[t] = {"status": status, "body_bytes": len(body),
                     "served_by": h.get("skewless-served-by")}
        log(f"  check {t}: {checks[t]}")
    if any(checks[t]["served_by"] != RELEASE for t in targets if t.startswith("skewless")):
        raise RuntimeError("skewless did not route the pinned call to the release's back end")

    log(f"skewless: {common.WORKERS} worker thread(s), nginx: {common.WORKERS} worker process(es), "
        f"back end: 1 worker thread, all on CPU {common.SERVER_CPUS or 'any'}; "
        f"wrk: 1 thread on CPU {common.CLIENT_CPUS or 'any'}")
    summary = []
    for conns in (args.connections, 1):
        summary += common.compare([("api", targets)], rounds=args.rounds, duration=args.duration,
                                  connections=conns)
    # Added latency of each proxy over the direct hit, at 1 connection.
    direct = {s["connections"]: s for s in summary if s["target"] == "direct"}
    for s in summary:
        if s["target"] != "direct":
            d = direct[s["connections"]]
            s["added_p50_us"] = s["p50_us"] - d["p50_us"]
            s["added_p99_us"] = s["p99_us"] - d["p99_us"]
    # skewless against the nginx that forwards the same fields.
    fields = {s["connections"]: s for s in summary if s["target"] == "nginx-fields"}
    for s in summary:
        if s["target"].startswith("skewless"):
            f = fields[s["connections"]]["rounds"]
            s["rps_ratio_fields"] = common.round_ratio(s["rounds"], f, "rps")
            s["p99_ratio_fields"] = common.round_ratio(s["rounds"], f, "p99_us")
    out = common.save("proxy" + (f"-{args.label}" if args.label else ""), {
        "setup": {
            "workers": common.WORKERS,
            "server_cpus": common.SERVER_CPUS,
            "client_cpus": common.CLIENT_CPUS,
            "backend_workers": 1,
            "wrk_threads": 1,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "nginx": "proxy_pass, proxy_http_version 1.1, upstream keepalive 64",
            "nginx-fields": "the same, and X-Forwarded-Host, Forwarded; sent Skewless-Release",
            "also": args.also,
        },
        "checks": checks,
        "summary": summary,
    })
    common.print_comparison(out["summary"])
    common.table(["conns", "skewless/nginx-fields req/s", "p99"],
                 [[s["connections"], s["rps_ratio_fields"], s["p99_ratio_fields"]]
                  for s in out["summary"] if s["target"] == "skewless"])
    if args.also:
        rows = []
        for conns in (args.connections, 1):
            at = {s["target"]: s["rounds"] for s in out["summary"] if s["connections"] == conns}
            b, a = at["skewless-b"], at["skewless"]
            rows.append([conns, common.round_ratio(b, a, "rps"), common.round_ratio(b, a, "p99_us")])
        common.table(["conns", "skewless-b/skewless req/s", "p99"], rows)
    common.table(["target", "conns", "proxy CPU µs/req", "back end CPU µs/req"],
                 [[s["target"], s["connections"], s["cpu_us_per_req"].get("proxy", ""),
                   s["cpu_us_per_req"]["backend"]] for s in out["summary"]])
    common.table(["target", "conns", "added p50 µs", "added p99 µs"],
                 [[s["target"], s["connections"], s["added_p50_us"], s["added_p99_us"]]
                  for s in out["summary"] if "added_p50_us" in s])


if __name__ == "__main__":
    main()
