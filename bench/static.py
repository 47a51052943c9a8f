#!/usr/bin/env python3
"""Static serving, skewless against nginx over the same bytes.

Cases: the shell through an SPA fallback route, a 1 KB file, a 200 KB
content-hashed bundle with `Accept-Encoding: br, gzip`, a 304
revalidation of the shell, and a large incompressible file (64 MiB, 16
concurrent downloads; with the gateway's peak RSS during them). nginx serves a directory holding exactly the bytes
skewless serves (the rewritten shell and the deploy-time br/gzip variants)
with `gzip_static on` and `brotli_static on`, so both answer the bundle with
the same brotli bytes.

Both servers run at once on the server core(s) with the same worker count
(skewless: SKEWLESS_WORKERS, nginx: worker_processes); wrk runs on the
other core. Writes bench/results/static.json.

Usage: bench/static.py [--rounds N] [--duration S] [--connections C] [--big-mib M]
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps  # noqa: E402
import common  # noqa: E402
from common import http, log  # noqa: E402
from pool import median_ratios  # noqa: E402

RELEASE = "static-1"
SPA_ROUTE = "/inbox/42"
HTML = "Accept: text/html,application/xhtml+xml"
BR_GZIP = "Accept-Encoding: br, gzip"


def mirror_for_nginx(base, manifest, root, release=RELEASE):
    """Writes every file of `release` as skewless serves it (identity, br,
    gzip) under `root`, and the rewritten shell as root/index.html."""
    def fetch(url, encoding, extra=()):
        headers = {"Accept-Encoding": encoding}
        headers.update(dict(h.split(": ", 1) for h in extra))
        status, h, body = http("GET", url, headers=headers)
        if status != 200:
            raise RuntimeError(f"GET {url}: {status}")
        got = h.get("content-encoding", "identity")
        return body if got == encoding else None

    def put(rel, url, extra=()):
        for enc, suffix in (("identity", ""), ("br", ".br"), ("gzip", ".gz")):
            body = fetch(url, enc, extra)
            if body is not None:
                apps.write(os.path.join(root, rel.lstrip("/") + suffix), body)

    for path in manifest:
        if path != "/index.html":
            put(path, f"{base}/_r/{release}{path}")
    put("/index.html", f"{base}{SPA_ROUTE}", [HTML])


CASES = ("shell", "1k", "js-200k-br", "shell-304", "large")


def check(url, headers, expect_status, expect_encoding):
    h = dict(x.split(": ", 1) for x in headers)
    status, rh, body = http("GET", url, headers=h)
    enc = rh.get("content-encoding", "identity")
    ok = status == expect_status and enc == expect_encoding
    if not ok:
        raise RuntimeError(f"GET {url} {headers}: {status} {enc}, wanted {expect_status} {expect_encoding}")
    return {"status": status, "encoding": enc, "body_bytes": len(body), "etag": rh.get("etag")}


def large_file(args, sk, sk_url, ng_url, files):
    """Runs the large-file case; returns its summary rows."""
    # The large file: throughput at 16 concurrent downloads, and how much
    # the gateway's memory rises meanwhile (peak RSS, reset before).
    big = {t: (f"{u}/{files['big']}", []) for t, u in (("skewless", sk_url), ("nginx", ng_url))}
    # Each copy of the file comes to the page cache the way its server's
    # reads bring it in: the cache is dropped and each is read once through
    # its server. Otherwise skewless's copy is cached as the upload wrote it
    # (in small pieces) and nginx's as one large write, and with sendfile
    # the receiving side copies from those pages (more CPU per byte from
    # small folios): a difference of set-up, not of the servers.
    common.drop_page_cache()
    for url, _ in big.values():
        http("GET", url)
    with open(f"/proc/{sk.pid}/clear_refs", "w") as f:
        f.write("5")
    rss_before = sk.rss_kib()
    large = common.compare([("large", big)], rounds=args.rounds, duration=2 * args.duration,
                           connections=16)
    peak = sk.peak_rss_kib()
    # Few downloads complete in a run, so the figure is bytes received per
    # second (partial downloads at the end included), not requests/s.
    rate = {}
    for row in large:
        rate[row["target"]] = [r["bytes"] / (r["duration_us"] / 1e6) for r in row["rounds"]]
        row["throughput_mib_s"] = round(common.median(rate[row["target"]]) / 2**20)
        # The client's CPU time per GiB received: on one machine the
        # receiver's copy is often what bounds the throughput.
        row["client_cpu_s_per_gib"] = round(common.median(
            [r["client_cpu_s"] / (r["bytes"] / 2**30) for r in row["rounds"] if r["bytes"]]), 3)
    large[0]["throughput_ratio"] = round(common.median(
        [a / b for a, b in zip(rate["skewless"], rate["nginx"])]), 3)
    large[0]["rss_before_kib"] = rss_before
    large[0]["rss_peak_kib"] = peak
    log(f"  large file: skewless RSS {rss_before} KiB before, peak {peak} KiB during")
    return large


def main():
    args = common.comparison_args(__doc__, extra=[
        (("--big-mib",), {"type": int, "default": 64,
                          "help": "size of the large-file case's file (MiB)"}),
        (("--cases",), {"default": ",".join(CASES),
                        "help": "comma-separated cases to run (default: all: %(default)s)"})])
    wanted = args.cases.split(",")
    unknown = sorted(set(wanted) - set(CASES))
    if unknown:
        raise SystemExit(f"error: unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")

    common.ensure_tools()
    common.build()
    work = tempfile.mkdtemp(prefix="bench-static-")
    os.chmod(work, 0o755)  # nginx's workers run unprivileged
    app = os.path.join(work, "app")
    files = apps.static_app(app, big=args.big_mib << 20)
    sk, sk_url = common.start_skewless(os.path.join(work, "data"))
    common.deploy(sk_url, app, RELEASE)
    manifest = common.admin("GET", sk_url, f"/releases/{RELEASE}")["manifest"]
    root = os.path.join(work, "nginx-root")
    mirror_for_nginx(sk_url, manifest, root)
    ng, ng_url = common.start_nginx(root)

    js = files["js"]
    urls = {
        "shell": {"skewless": f"{sk_url}{SPA_ROUTE}", "nginx": f"{ng_url}{SPA_ROUTE}"},
        "1k": {"skewless": f"{sk_url}/{files['small']}", "nginx": f"{ng_url}/{files['small']}"},
        "js-200k-br": {"skewless": f"{sk_url}/_r/{RELEASE}/{js}", "nginx": f"{ng_url}/{js}"},
    }
    # The CPU time each server spends per request is measured beside.
    cpu = {"skewless": {"server": [sk.pid]}, "nginx": {"server": [ng.pid]}}
    checks = {}
    cases = []
    for name, hdrs, enc in (("shell", [HTML, BR_GZIP], "br"), ("1k", [], "identity"),
                            ("js-200k-br", [BR_GZIP], "br")):
        targets = {}
        for t, url in urls[name].items():
            checks[f"{name}/{t}"] = check(url, hdrs, 200, enc)
            targets[t] = (url, hdrs, cpu[t])
        cases.append((name, targets))
    targets = {}
    for t, url in urls["shell"].items():
        etag = checks[f"shell/{t}"]["etag"]
        hdrs = [HTML, BR_GZIP, f"If-None-Match: {etag}"]
        checks[f"shell-304/{t}"] = check(url, hdrs, 304, "identity")
        targets[t] = (url, hdrs, cpu[t])
    cases.append(("shell-304", targets))
    for k, v in checks.items():
        log(f"  check {k}: {v}")

    log(f"skewless: {common.WORKERS} worker thread(s), nginx: {common.WORKERS} worker process(es), "
        f"both on CPU {common.SERVER_CPUS or 'any'}; wrk: 1 thread on CPU {common.CLIENT_CPUS or 'any'}")
    cases = [c for c in cases if c[0] in wanted]
    summary = common.compare(cases, rounds=args.rounds, duration=args.duration,
                             connections=args.connections) if cases else []
    if "large" in wanted:
        summary += large_file(args, sk, sk_url, ng_url, files)
    out = common.save("static" + (f"-{args.label}" if args.label else ""), {
        "setup": {
            "workers": common.WORKERS,
            "server_cpus": common.SERVER_CPUS,
            "client_cpus": common.CLIENT_CPUS,
            "wrk_threads": 1,
            "connections": args.connections,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "skewless_threads": sk.threads(),
            "large_file_bytes": args.big_mib << 20,
            "large_file_connections": 16,
            "nginx": "1 master + worker_processes, sendfile, open_file_cache, gzip_static, brotli_static",
        },
        "checks": checks,
        "summary": summary,
    })
    common.print_comparison(out["summary"])
    rows = {(s["case"], s["target"]): s for s in out["summary"]}
    cpu_rows = []
    for (case, target), s in rows.items():
        if target == "skewless" and "cpu_us_per_req" in s:
            ng = rows[(case, "nginx")]
            cpu_rows.append([case, s["cpu_us_per_req"]["server"], ng["cpu_us_per_req"]["server"],
                             round(median_ratios(s["rounds"], ng["rounds"])["CPU"], 3)])
    common.table(["case", "skewless CPU µs/req", "nginx CPU µs/req", "ratio (median of rounds)"],
                 cpu_rows)
    if "large" in wanted:
        common.table(["case", "target", "conns", "MiB/s", "client CPU s/GiB", "throughput ratio"],
                     [[s["case"], s["target"], s["connections"], s["throughput_mib_s"],
                       s["client_cpu_s_per_gib"], s.get("throughput_ratio", "")]
                      for s in out["summary"] if s["case"] == "large"])


if __name__ == "__main__":
    main()
