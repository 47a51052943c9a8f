#!/usr/bin/env python3
"""Three nodes over one PostgreSQL database: promote-to-served on every node,
and a node's serving throughput in cluster mode against a single node.

Three `skewless serve` nodes share a fresh database (on BENCH_POSTGRES,
default postgres://postgres@127.0.0.1:5432) and a blob directory. Two small
releases are deployed through node 1 and promoted in turn, each time through
the next node. For every promotion, one thread per node polls that node's
shell (a fresh navigation: no pin, no cookie) from just before the promote
call until the promoted release answers: promote-to-served on each node, the
slowest of the three, and the spread between the first and the last node.

Then wrk alternates between a cluster node and a single node (embedded
state) serving the same 1 KB file of the same release: the ratio of their
requests/s is the cost of cluster mode on the hot path (which never touches
the database). Writes bench/results/cluster.json.

Usage: bench/cluster.py [--promotions N] [--rounds N] [--duration S]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps  # noqa: E402
import common  # noqa: E402
from common import http, log  # noqa: E402

PG = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")


def psql(sql):
    subprocess.run(["psql", "-X", "-q", "-d", f"{PG}/postgres", "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def served_by(url):
    status, h, _ = http("GET", f"{url}/inbox/42", headers={"Accept": "text/html"})
    return h.get("skewless-served-by") if status == 200 else None


def one_promotion(nodes, via, target):
    """Promotes `target` through `via`; returns the call time and the time
    each node first served it (ms from just before the call)."""
    served = [None] * len(nodes)
    start = threading.Event()
    t0 = [0.0]

    def poll(i, url):
        start.wait()
        while served[i] is None:
            if served_by(url) == target:
                served[i] = (time.perf_counter() - t0[0]) * 1000
            if time.perf_counter() - t0[0] > 10:
                raise RuntimeError(f"node {i + 1} never served {target}")

    threads = [threading.Thread(target=poll, args=(i, u)) for i, u in enumerate(nodes)]
    for t in threads:
        t.start()
    t0[0] = time.perf_counter()
    start.set()
    common.admin("POST", via, f"/releases/{target}/promote", {})
    call = (time.perf_counter() - t0[0]) * 1000
    for t in threads:
        t.join()
    return call, served


def summary(xs):
    return {"p50": round(common.percentile(xs, 50), 2), "p99": round(common.percentile(xs, 99), 2),
            "max": round(max(xs), 2), "n": len(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--promotions", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=4)
    args = ap.parse_args()

    common.ensure_tools(nginx=False, wrk=True)
    common.build()
    work = tempfile.mkdtemp(prefix="bench-cluster-")
    db = f"skewless_bench_{os.getpid()}"
    psql(f"CREATE DATABASE {db}")
    try:
        state = f"{PG}/{db}"
        blobs = os.path.join(work, "blobs")
        nodes = []
        for i in range(3):
            _, url = common.start_skewless(
                os.path.join(work, f"node{i + 1}"),
                args=["--state", state, "--blobs", blobs, "--node-id", f"node{i + 1}"])
            nodes.append(url)
        app = os.path.join(work, "app")
        paths = apps.static_app(app)
        common.deploy(nodes[0], app, "small-1", promote=True)
        apps.write(os.path.join(app, "1k.txt"), "changed\n")
        common.deploy(nodes[0], app, "small-2", promote=False)
        log(f"{args.promotions} promotions through each node in turn")
        calls, slowest, spread, per_node = [], [], [], []
        for i in range(args.promotions):
            target = ["small-2", "small-1"][i % 2]
            call, served = one_promotion(nodes, nodes[i % 3], target)
            calls.append(call)
            slowest.append(max(served))
            spread.append(max(served) - min(served))
            per_node.extend(served)

        # Serving throughput: a cluster node against a single node, same file.
        _, single = common.start_skewless(os.path.join(work, "single"))
        common.deploy(single, app, "small-2", promote=True)
        file_path = "/" + paths["small"]
        cluster_rps, single_rps = [], []
        for r in range(args.rounds):
            for name, base, out in (("cluster", nodes[0], cluster_rps), ("single", single, single_rps)):
                res = common.wrk(f"{base}{file_path}", duration=args.duration)
                log(f"round {r + 1} {name}: {res['rps']:.0f} req/s")
                out.append(res["rps"])
        result = {
            "setup": {"nodes": 3, "cores": common.CORES, "promotions": args.promotions},
            "promote_call_ms": summary(calls),
            "served_on_every_node_ms": summary(slowest),
            "served_per_node_ms": summary(per_node),
            "spread_first_to_last_node_ms": summary(spread),
            "serving_1k": {
                "cluster_rps": round(common.percentile(cluster_rps, 50)),
                "single_rps": round(common.percentile(single_rps, 50)),
                "ratio": round(common.percentile(cluster_rps, 50) / common.percentile(single_rps, 50), 3),
            },
        }
        common.save("cluster", result)
        common.table(["measure (ms)", "p50", "p99", "max"], [
            [k, result[k]["p50"], result[k]["p99"], result[k]["max"]]
            for k in ("promote_call_ms", "served_per_node_ms", "served_on_every_node_ms",
                      "spread_first_to_last_node_ms")
        ])
        s = result["serving_1k"]
        print(f"1 KB file: cluster node {s['cluster_rps']} req/s, single node {s['single_rps']} req/s, "
              f"ratio {s['ratio']}")
    finally:
        common._stop_all()
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


if __name__ == "__main__":
    main()
