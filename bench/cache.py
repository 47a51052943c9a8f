#!/usr/bin/env python3
"""Serving from the blob cache against serving a local blob directory.

Two skewless servers with the same worker count serve the same release:
"local" keeps its blobs in its data directory as a single node does;
"cached" reads a separate blob directory (`--blobs`) through its disk cache
(`--cache-dir`), which prefetch fills after the deploy. Once every stored
form is in the cache (and before any request), wrk alternates between the
two on the same cases as bench/static.py: the shell, a 1 KB file, a 200 KB
bundle with br, a 304, and a large incompressible file with 16 concurrent
downloads. The ratio cached/local is the cost of the cache on the hot path
(target: at least 0.95). The cached server must report no cache miss
during the runs: every request was a hit. Writes bench/results/cache.json.

With --callgrind, both servers are then restarted alone under valgrind's
callgrind and the instructions per request of the 1 KB file and the
bundle are counted (deterministic, for a busy machine).

Usage: bench/cache.py [--rounds N] [--duration S] [--connections C] [--big-mib M] [--callgrind]
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps  # noqa: E402
import common  # noqa: E402
from common import http, log  # noqa: E402

RELEASE = "cache-1"
SPA_ROUTE = "/inbox/42"
HTML = "Accept: text/html,application/xhtml+xml"
BR_GZIP = "Accept-Encoding: br, gzip"


def metric(base, name):
    _, _, body = http("GET", f"{base}/_skewless/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def stored_forms(blobs):
    """The stored files (one per blob and encoding) of a blob directory."""
    n = 0
    for d in os.listdir(blobs):
        if len(d) == 2 and os.path.isdir(os.path.join(blobs, d)):
            n += sum(1 for f in os.listdir(os.path.join(blobs, d)) if not f.endswith(".raw"))
    return n


def main():
    args = common.comparison_args(__doc__, extra=[
        (("--big-mib",), {"type": int, "default": 16,
                          "help": "size of the large-file case's file (MiB)"}),
        (("--callgrind",), {"action": "store_true",
                            "help": "also count instructions per request under callgrind"})])
    common.ensure_tools(nginx=False, wrk=True)
    common.build()
    work = tempfile.mkdtemp(prefix="bench-cache-")
    app = os.path.join(work, "app")
    files = apps.static_app(app, big=args.big_mib << 20)
    remote = os.path.join(work, "remote-blobs")
    cache_args = ["--blobs", remote, "--cache-dir", os.path.join(work, "cache")]
    local_proc, local = common.start_skewless(os.path.join(work, "local"))
    cached_proc, cached = common.start_skewless(os.path.join(work, "cached"), args=cache_args)
    for base in (local, cached):
        common.deploy(base, app, RELEASE)
    want = stored_forms(remote)
    deadline = time.monotonic() + 120
    while metric(cached, "skewless_cache_files") < want:
        if time.monotonic() > deadline:
            raise RuntimeError("prefetch did not fill the cache within 120 s")
        time.sleep(0.1)
    # The deploy itself read the shell through the cache to rewrite it.
    misses_before = metric(cached, "skewless_cache_misses_total")
    log(f"cache holds all {want} stored forms "
        f"({metric(cached, 'skewless_cache_bytes'):.0f} bytes); misses so far {misses_before:.0f}")

    paths = {
        "shell": (SPA_ROUTE, [HTML, BR_GZIP]),
        "1k": ("/" + files["small"], []),
        "js-200k-br": (f"/_r/{RELEASE}/{files['js']}", [BR_GZIP]),
    }
    checks = {}
    cases = []
    for name, (path, hdrs) in paths.items():
        bodies = {}
        for t, base in (("local", local), ("cached", cached)):
            status, h, body = http("GET", base + path,
                                   headers=dict(x.split(": ", 1) for x in hdrs))
            if status != 200:
                raise RuntimeError(f"{t} {path}: {status}")
            bodies[t] = body
            checks[f"{name}/{t}"] = {"status": status, "bytes": len(body), "etag": h.get("etag"),
                                     "encoding": h.get("content-encoding", "identity")}
        if name != "shell" and bodies["local"] != bodies["cached"]:
            raise RuntimeError(f"{name}: the two servers answer different bytes")
        cases.append((name, {t: (base + path, hdrs) for t, base in (("local", local), ("cached", cached))}))
    targets = {}
    for t, base in (("local", local), ("cached", cached)):
        etag = checks[f"shell/{t}"]["etag"]
        targets[t] = (base + SPA_ROUTE, [HTML, BR_GZIP, f"If-None-Match: {etag}"])
    cases.append(("shell-304", targets))

    load = os.getloadavg()
    log(f"load average before: {load[0]:.2f}")
    summary = common.compare(cases, rounds=args.rounds, duration=args.duration,
                             connections=args.connections, reference="local")
    big = {t: (f"{base}/{files['big']}", []) for t, base in (("local", local), ("cached", cached))}
    large = common.compare([("large", big)], rounds=args.rounds, duration=2 * args.duration,
                           connections=16, reference="local")
    rate = {}
    for row in large:
        rate[row["target"]] = [r["bytes"] / (r["duration_us"] / 1e6) for r in row["rounds"]]
        row["throughput_mib_s"] = round(common.median(rate[row["target"]]) / 2**20)
    for row in large:
        if row["target"] == "cached":
            row["throughput_ratio"] = round(common.median(
                [a / b for a, b in zip(rate["cached"], rate["local"])]), 3)
    summary += large
    misses = metric(cached, "skewless_cache_misses_total") - misses_before
    hits = metric(cached, "skewless_cache_hits_total")
    if misses:
        raise RuntimeError(f"{misses:.0f} requests missed the cache")
    threads = cached_proc.threads()
    instructions = {}
    if args.callgrind:
        local_proc.stop()
        cached_proc.stop()
        instructions = count_instructions(work, files, cache_args, args.duration)
    out = common.save("cache" + (f"-{args.label}" if args.label else ""), {
        "setup": {
            "workers": common.WORKERS,
            "server_cpus": common.SERVER_CPUS,
            "client_cpus": common.CLIENT_CPUS,
            "connections": args.connections,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "large_file_bytes": args.big_mib << 20,
            "load_average_before": round(load[0], 2),
            "load_average_after": round(os.getloadavg()[0], 2),
            "skewless_threads_cached": threads,
        },
        "instructions_per_request": instructions,
        "cache": {"forms": want, "hits": hits, "misses": misses},
        "checks": checks,
        "summary": summary,
    })
    common.print_comparison(out["summary"])
    common.table(["case", "target", "MiB/s", "throughput ratio"],
                 [[s["case"], s["target"], s["throughput_mib_s"], s.get("throughput_ratio", "")]
                  for s in out["summary"] if s["case"] == "large"])
    print(f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after; "
          f"cache hits {hits:.0f}, misses {misses:.0f}")
    if instructions:
        common.table(["case", "local instr/request", "cached instr/request", "local/cached"],
                     [[c, v["local"], v["cached"], v["local_over_cached"]]
                      for c, v in instructions.items()])


def count_instructions(work, files, cache_args, duration):
    """Instructions per request (callgrind, start-up and warm-up excluded)
    of each server restarted alone over its data: deterministic where
    timings on a busy machine are not. The cached server finds its cache
    on disk."""
    from callgrind import under_callgrind  # noqa: E402
    out = {}
    for case, path, headers in (("1k", "/" + files["small"], []),
                                ("js-200k-br", f"/_r/{RELEASE}/{files['js']}", [BR_GZIP])):
        per = {}
        for target, extra in (("local", []), ("cached", cache_args)):
            port = common.free_port()
            out_file = os.path.join(work, f"callgrind-{case}-{target}.out")
            log(f"{target} under callgrind: {case}")
            _, _, reqs, instr = under_callgrind(
                [common.SKEWLESS, "serve", "--listen", f"127.0.0.1:{port}",
                 "--data", os.path.join(work, target), "--admin-token", common.TOKEN, *extra],
                out_file, common.skewless_env(1), port,
                f"http://127.0.0.1:{port}{path}", headers, duration)
            per[target] = round(instr / reqs)
        per["local_over_cached"] = round(per["local"] / per["cached"], 3)
        out[case] = per
    return out


if __name__ == "__main__":
    main()
