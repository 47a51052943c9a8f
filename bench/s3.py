#!/usr/bin/env python3
"""Deploys to an S3-compatible object store, and a cold-cache first request.

A moto S3 server (the virtualenv scripts/install-test-deps.sh makes under
target/moto-venv) holds the blobs; skewless runs with `--blobs
s3://bench/blobs` and its default disk cache. The generated app of 5,000
files / ~100 MB is deployed to the empty bucket, then 1 % of its files are
rewritten and it is deployed again: bytes uploaded and time of each, next to
the same two deploys to a blob directory (the default store) in the same
run.

Then a node with an empty cache, started on the same state and bucket with
a cache budget too small for prefetch to fill ahead of requests, is asked
for files it does not have: each first request (fetched from the object
store through the cache) is timed against a second request for the same
file (served from the cache). Writes bench/results/s3.json.

Usage: bench/s3.py [--files N] [--requests N]
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps  # noqa: E402
import common  # noqa: E402
from common import http, log  # noqa: E402

MOTO = os.path.join(common.REPO, "target", "moto-venv", "bin", "moto_server")
BUCKET = "bench"


def start_moto():
    if not os.path.exists(MOTO):
        common.run(["bash", os.path.join(common.REPO, "scripts", "install-test-deps.sh")])
    port = common.free_port()
    p = common.Proc("moto", [MOTO, "-H", "127.0.0.1", "-p", str(port)], cpus="")
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/", timeout=2).read()
            break
        except Exception:
            time.sleep(0.1)
    else:
        raise RuntimeError("moto_server did not answer")
    req = urllib.request.Request(f"{url}/{BUCKET}", method="PUT", data=b"")
    urllib.request.urlopen(req, timeout=10).read()
    return p, url


def s3_env(endpoint):
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }


def deploy(url, directory, release):
    """`common.deploy`, with the CLI's error shown if it fails."""
    try:
        return common.deploy(url, directory, release)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"deploy {release} failed: {e.stderr.decode().strip()}") from None


def timed_get(url):
    t = time.perf_counter()
    status, _, body = http("GET", url)
    ms = (time.perf_counter() - t) * 1000
    if status != 200:
        raise RuntimeError(f"{url}: {status}")
    return ms, len(body)


def summary(xs):
    return {"p50": round(common.percentile(xs, 50), 2), "p90": round(common.percentile(xs, 90), 2),
            "max": round(max(xs), 2), "n": len(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--stores", default="dir,s3",
                    help="which stores to deploy to, of dir and s3 (the cold-cache requests need s3)")
    args = ap.parse_args()

    common.build()
    work = tempfile.mkdtemp(prefix="bench-s3-")
    app = os.path.join(work, "app")
    log(f"generating an app of {args.files} files")
    paths = apps.large_app(app, files=args.files)
    files, size = apps.tree_bytes(app)
    moto, endpoint = start_moto()
    env = s3_env(endpoint)
    blobs = f"s3://{BUCKET}/blobs"

    results = {}
    # The same two deploys to the default blob directory and to the bucket.
    stores = args.stores.split(",")
    for store in stores:
        shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
        app_copy = os.path.join(work, f"app-{store}")
        shutil.copytree(app, app_copy)
        extra = ["--blobs", blobs] if store == "s3" else []
        sk, url = common.start_skewless(os.path.join(work, "data"), workers=common.CORES, cpus="",
                                        args=extra, env=env)
        log(f"{store}: first deploy")
        first, first_s = deploy(url, app_copy, f"{store}-1")
        changed = apps.change_files(app_copy, paths, 0.01)
        log(f"{store}: second deploy, {changed} files changed")
        second, second_s = deploy(url, app_copy, f"{store}-2")
        results[store] = {
            "first_deploy": {**first, "seconds": round(first_s, 2)},
            "second_deploy": {**second, "seconds": round(second_s, 2), "files_changed": changed},
            "second_uploaded_share": round(second["uploaded_bytes"] / second["bytes"], 4),
            "second_time_share": round(second_s / first_s, 4),
        }
        sk.stop()

    # A node with an empty cache over the same state and bucket; the budget
    # keeps prefetch from filling it ahead of the requests.
    cache = os.path.join(work, "data", "cache")
    shutil.rmtree(cache, ignore_errors=True)
    sk, url = common.start_skewless(os.path.join(work, "data"), workers=common.CORES, cpus="",
                                    args=["--blobs", blobs, "--cache-max-bytes", "1000000"],
                                    env=env)
    rng = random.Random(5)
    assets = [p for p in paths if p != "index.html" and os.path.getsize(os.path.join(app, p)) < 50_000]
    picked = rng.sample(assets, min(args.requests, len(assets)))
    cold, warm, sizes = [], [], []
    for p in picked:
        ms, n = timed_get(f"{url}/_r/s3-2/{p}")
        cold.append(ms)
        sizes.append(n)
        ms, _ = timed_get(f"{url}/_r/s3-2/{p}")
        warm.append(ms)
    sk.stop()
    moto.stop()
    results["cold_cache"] = {
        "files": len(picked),
        "mean_bytes": round(sum(sizes) / len(sizes)),
        "first_request_ms": summary(cold),
        "second_request_ms": summary(warm),
    }

    out = common.save("s3", {"setup": {"files": files, "bytes": size, "workers": common.CORES},
                              **results})
    rows = []
    for store in stores:
        f, s = out[store]["first_deploy"], out[store]["second_deploy"]
        rows.append([store, "first", f["files"], round(f["bytes"] / 1e6, 1), f["uploaded_files"],
                     round(f["uploaded_bytes"] / 1e6, 2), f["seconds"]])
        rows.append([store, "second (1 % changed)", s["files"], round(s["bytes"] / 1e6, 1),
                     s["uploaded_files"], round(s["uploaded_bytes"] / 1e6, 2), s["seconds"]])
    common.table(["store", "deploy", "files", "MB", "uploaded files", "uploaded MB", "seconds"], rows)
    c = out["cold_cache"]
    common.table(["request", "p50 ms", "p90 ms", "max ms", "n"], [
        ["first (cold cache, from S3)", c["first_request_ms"]["p50"], c["first_request_ms"]["p90"],
         c["first_request_ms"]["max"], c["first_request_ms"]["n"]],
        ["second (cached)", c["second_request_ms"]["p50"], c["second_request_ms"]["p90"],
         c["second_request_ms"]["max"], c["second_request_ms"]["n"]],
    ])


if __name__ == "__main__":
    main()
