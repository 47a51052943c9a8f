#!/usr/bin/env python3
"""User-space instructions per request, skewless against nginx, counted by
valgrind's callgrind (deterministic, unlike timings on a noisy machine).

Each server runs alone under callgrind with one worker; wrk sends
`--duration` seconds of the chosen case over 8 connections (or
`--connections`; at 1 every request pays the server's sleep and wake-up,
and results are named callgrind-<case>-c1); the program's
instruction total (start-up included, which is small next to tens of
thousands of requests) is divided by the requests answered; so is the
count after start-up and a 1 s warm-up alone ("steady"). Kernel time
(the TCP stack) is not counted: it is about the same for both. The
skewless profile is kept (bench/results/callgrind-<case>.out) for
`callgrind_annotate --inclusive=yes`.

`--access-log` runs skewless with `--access-log FILE` (the cost of the
log per request); `--skewless-only` leaves nginx out. `--cache-sim` also
simulates the caches and branch predictor (valgrind's model of this
machine's L1 and last-level caches; user space only, so what the kernel
and the other processes evict between requests is not in it) and reports
misses and mispredictions per request after start-up.

Usage: bench/callgrind.py [--case 1k|shell|shell-304|js-200k-br|api] [--duration S]
                          [--connections C] [--access-log] [--skewless-only] [--cache-sim]
                          [--mangled] [--label L]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps  # noqa: E402
import common  # noqa: E402
from common import log  # noqa: E402
from static import BR_GZIP, HTML, RELEASE, SPA_ROUTE, mirror_for_nginx  # noqa: E402


def events(out_file):
    """The program's totals of each event callgrind counted (Ir, and with
    the simulation I1mr, D1mr, Bcm and the rest)."""
    text = subprocess.run(["callgrind_annotate", out_file], capture_output=True, text=True).stdout
    names = re.search(r"^Events shown:\s+(.+)$", text, re.M).group(1).split()
    m = re.search(r"^\s*([\d,]+ \(100\.0%\).*?)\s+PROGRAM TOTALS", text, re.M)
    counts = [int(c.replace(",", "")) for c in re.findall(r"([\d,]+) \([\d.]+%\)", m.group(1))]
    return dict(zip(names, counts))


def totals(out_file):
    return events(out_file).get("Ir")


# Simulated events reported per request: (name, callgrind events summed).
SIMULATED = [("I1 misses", ["I1mr"]), ("LL instruction misses", ["ILmr"]),
             ("D1 misses", ["D1mr", "D1mw"]), ("LL data misses", ["DLmr", "DLmw"]),
             ("branches", ["Bc", "Bi"]), ("mispredicted", ["Bcm", "Bim"])]


def under_callgrind(cmd, out_file, env, port, url, headers, duration, connections, sim=False,
                    mangled=False):
    """Returns the requests answered and the instructions of the whole run
    (start-up included), the same for the part after start-up and a 1 s
    warm-up (which runs what is set up on first use), and that part's
    simulated events per request when `sim`."""
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", "--dump-instr=no",
          # Each dump names its functions itself, so callgrind_annotate
          # reads the steady part on its own.
          "--compress-strings=no"]
    if sim:
        vg += ["--cache-sim=yes", "--branch-sim=yes"]
    if mangled:
        vg += ["--demangle=no"]
    p = common.Proc("callgrind", vg + cmd, env=env)
    common.wait_port(port, deadline_s=60)
    warm = common.wrk(url, headers, connections=connections, duration=1, cpus="")
    # The counts so far go to <out_file>.1 and are reset.
    subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, capture_output=True)
    r = common.wrk(url, headers, connections=connections, duration=duration, cpus="")
    p.stop()
    ev = events(out_file)
    steady = ev.get("Ir")
    simulated = None
    if sim and r["requests"]:
        simulated = {name: round(sum(ev.get(e, 0) for e in evs) / r["requests"], 1)
                     for name, evs in SIMULATED}
    return (warm["requests"] + r["requests"], totals(out_file + ".1") + steady,
            r["requests"], steady, simulated)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", default="1k", choices=["1k", "shell", "shell-304", "js-200k-br", "api"])
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=8,
                    help="at 1, every request pays the server's sleep and wake-up")
    ap.add_argument("--label", default="", help="result name suffix (e.g. for another build)")
    ap.add_argument("--access-log", action="store_true",
                    help="run skewless with --access-log FILE (a file in the work directory)")
    ap.add_argument("--skewless-only", action="store_true", help="do not profile nginx")
    ap.add_argument("--mangled", action="store_true",
                    help="keep symbol names mangled in the profile (for bench/hot_symbols.py)")
    ap.add_argument("--cache-sim", action="store_true",
                    help="simulate caches and branch prediction; report misses per request")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed: apt-get install valgrind")
    common.ensure_tools()
    common.build()
    work = tempfile.mkdtemp(prefix="bench-callgrind-")
    os.chmod(work, 0o755)
    app = os.path.join(work, "app")
    files = apps.static_app(app)
    data = os.path.join(work, "data")
    be, be_url = common.start_backend(RELEASE)
    # Deploy with a normal server, then profile a fresh one over the same data.
    sk, sk_url = common.start_skewless(data)
    common.deploy(sk_url, app, RELEASE, backend=be_url)
    manifest = common.admin("GET", sk_url, f"/releases/{RELEASE}")["manifest"]
    root = os.path.join(work, "nginx-root")
    mirror_for_nginx(sk_url, manifest, root)
    etags = {}
    for name, url in (("skewless", sk_url), ("nginx", None)):
        if url:
            etags[name] = common.http("GET", f"{url}{SPA_ROUTE}", headers={
                "Accept": "text/html", "Accept-Encoding": "br, gzip"})[1]["etag"]
    sk.stop()

    case = args.case
    paths = {"1k": f"/{files['small']}", "shell": SPA_ROUTE, "shell-304": SPA_ROUTE, "api": "/api/items"}
    headers = {"shell": [HTML, BR_GZIP], "shell-304": [HTML, BR_GZIP], "js-200k-br": [BR_GZIP],
               "api": [f"Skewless-Release: {RELEASE}"]}.get(case, [])
    results = {}

    port = common.free_port()
    sk_path = f"/_r/{RELEASE}/{files['js']}" if case == "js-200k-br" else paths[case]
    sk_headers = headers + ([f"If-None-Match: {etags['skewless']}"] if case == "shell-304" else [])
    name = (f"callgrind-{case}" + ("-access-log" if args.access_log else "")
            + (f"-c{args.connections}" if args.connections != 8 else "")
            + ("-sim" if args.cache_sim else "")
            + (f"-{args.label}" if args.label else ""))
    log_args = ["--access-log", os.path.join(work, "access.log")] if args.access_log else []
    out_file = os.path.join(common.RESULTS, f"{name}.out")
    os.makedirs(common.RESULTS, exist_ok=True)
    log(f"skewless under callgrind: {case}")
    reqs, instr, steady_reqs, steady, sim = under_callgrind(
        [common.SKEWLESS, "serve", "--listen", f"127.0.0.1:{port}", "--data", data,
         "--admin-token", common.TOKEN, *log_args],
        out_file, common.skewless_env(1), port,
        f"http://127.0.0.1:{port}{sk_path}", sk_headers, args.duration, args.connections,
        args.cache_sim, args.mangled)
    results["skewless"] = per_request(reqs, instr, steady_reqs, steady, sim)
    if args.access_log:
        with open(os.path.join(work, "access.log")) as f:
            logged = sum(1 for _ in f)
        log(f"  access log: {logged} lines for {reqs} requests")
        results["skewless"]["access_log_lines"] = logged
    if args.skewless_only:
        common.save(name, {"case": case, "connections": args.connections, "results": results})
        r = results["skewless"]
        common.table(["server", "requests", "instructions", "per request", "per request, steady"],
                     [["skewless", r["requests"], r["instructions"], r["per_request"],
                       r["per_request_steady"]]])
        return

    d = tempfile.mkdtemp(prefix="bench-callgrind-nginx-")
    port = common.free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(common.nginx_conf(d, port, root, be_url, workers=1)
                .replace("daemon off;", "daemon off;\nmaster_process off;"))
    ng_path = f"/{files['js']}" if case == "js-200k-br" else paths[case]
    ng_headers = list(headers)
    if case == "api":
        ng_headers = []
    if case == "shell-304":
        # nginx's ETag of the shell, from a plain nginx run.
        ng, ng_url = common.start_nginx(root)
        etag = common.http("GET", f"{ng_url}{SPA_ROUTE}", headers={
            "Accept": "text/html", "Accept-Encoding": "br, gzip"})[1]["etag"]
        ng.stop()
        ng_headers.append(f"If-None-Match: {etag}")
    log(f"nginx under callgrind: {case}")
    nout = os.path.join(d, "callgrind-nginx.out")
    reqs, instr, steady_reqs, steady, sim = under_callgrind(
        ["nginx", "-c", conf, "-e", os.path.join(d, "error.log")],
        nout, {}, port, f"http://127.0.0.1:{port}{ng_path}",
        ng_headers, args.duration, args.connections, args.cache_sim)
    results["nginx"] = per_request(reqs, instr, steady_reqs, steady, sim)
    sk, ng = results["skewless"], results["nginx"]
    ratio = sk["per_request"] / ng["per_request"] if ng["per_request"] else None
    steady_ratio = (sk["per_request_steady"] / ng["per_request_steady"]
                    if ng["per_request_steady"] else None)
    out = common.save(name, {"case": case, "connections": args.connections, "results": results,
                             "skewless_nginx_ratio": round(ratio, 2) if ratio else None,
                             "skewless_nginx_ratio_steady":
                                 round(steady_ratio, 2) if steady_ratio else None})
    common.table(["server", "requests", "instructions", "per request", "per request, steady"],
                 [[k, v["requests"], v["instructions"], v["per_request"], v["per_request_steady"]]
                  for k, v in out["results"].items()])
    print(f"skewless/nginx instructions per request: {out['skewless_nginx_ratio']} "
          f"(start-up and warm-up excluded: {out['skewless_nginx_ratio_steady']})")
    if args.cache_sim:
        common.table(["per request, steady (simulated)", "skewless", "nginx", "ratio"],
                     [[name, sk["simulated"][name], ng["simulated"][name],
                       round(sk["simulated"][name] / ng["simulated"][name], 2)
                       if ng["simulated"][name] else ""]
                      for name, _ in SIMULATED])


def per_request(reqs, instr, steady_reqs, steady, simulated=None):
    out = {"requests": reqs, "instructions": instr,
           "requests_steady": steady_reqs, "instructions_steady": steady,
           "per_request": round(instr / reqs) if reqs else None,
           "per_request_steady": round(steady / steady_reqs) if steady_reqs else None}
    if simulated is not None:
        out["simulated"] = simulated
    return out


if __name__ == "__main__":
    main()
