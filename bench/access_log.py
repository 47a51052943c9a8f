#!/usr/bin/env python3
"""The cost of the access log: the same build serving the same app twice,
once without and once with `--access-log FILE` (one JSON line per request
written to a file), measured in alternating rounds on the shell, a 1 KB
file and a proxied `/api/` call. The figure is the requests/s ratio
logged/unlogged (the cost is 1 minus it). nginx runs beside it the same
way, without and with a buffered access log of the same JSON fields, so
the peer's cost is measured in the same rounds. Writes
bench/results/access-log.json.

`--devnull` adds a third skewless writing its log to /dev/null: its cost
over the unlogged one is the line's own, without the file's page-cache
writes. `--prior PATH` also runs another build of skewless (say, main
before a change) without and with the log in the same rounds, as
`prior` and `prior-log`; `--cases` picks cases (e.g. `--cases 1k`).
Beside each server's CPU time per request, the log writer thread's own
(`writer µs/req`, part of the server's) is measured: it moves far less
between rounds than the rest.

Usage: bench/access_log.py [--rounds N] [--duration S] [--connections C] [--devnull]
                           [--prior PATH] [--cases shell,1k,api]
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps  # noqa: E402
import common  # noqa: E402
from common import log  # noqa: E402
from static import BR_GZIP, HTML, SPA_ROUTE, check, mirror_for_nginx  # noqa: E402
from pool import median_ratios  # noqa: E402

RELEASE = "log-1"
CASES = ("shell", "1k", "api")
# Each logging target and the unlogged one it is measured against.
UNLOGGED = {"skewless-log": "skewless", "skewless-devnull": "skewless", "nginx-log": "nginx",
            "prior-log": "prior"}
# The servers with a log writer thread of their own.
WRITERS = ("skewless-log", "skewless-devnull", "prior-log")


def main():
    args = common.comparison_args(__doc__, extra=[
        (["--devnull"], {"action": "store_true",
                         "help": "also run skewless with --access-log /dev/null"}),
        (["--prior"], {"metavar": "PATH",
                       "help": "also run this skewless binary, without and with the log"}),
        (["--cases"], {"default": ",".join(CASES),
                       "help": f"comma-separated cases: {', '.join(CASES)}"})])
    wanted = args.cases.split(",")
    unknown = set(wanted) - set(CASES)
    if unknown:
        sys.exit(f"unknown case(s): {', '.join(sorted(unknown))}")
    if args.prior and not os.access(args.prior, os.X_OK):
        sys.exit(f"--prior: {args.prior} is not an executable file")
    common.ensure_tools()
    common.build()
    work = tempfile.mkdtemp(prefix="bench-access-log-")
    # The logs grow by gigabytes over a long run.
    common.remove_at_exit(work)
    # nginx's workers (www-data) read the app from here.
    os.chmod(work, 0o755)
    app = os.path.join(work, "app")
    files = apps.static_app(app)
    be, be_url = common.start_backend(RELEASE)
    log_file = os.path.join(work, "access.log")
    prior_log = os.path.join(work, "prior-access.log")
    servers = {}
    skewlesses = [("skewless", []), ("skewless-log", ["--access-log", log_file])]
    if args.devnull:
        skewlesses.append(("skewless-devnull", ["--access-log", "/dev/null"]))
    binaries = {}
    if args.prior:
        skewlesses += [("prior", []), ("prior-log", ["--access-log", prior_log])]
        binaries = {"prior": args.prior, "prior-log": args.prior}
    for name, extra in skewlesses:
        sk, url = common.start_skewless(os.path.join(work, f"data-{name}"), args=extra,
                                        binary=binaries.get(name, common.SKEWLESS))
        common.deploy(url, app, RELEASE, backend=be_url)
        servers[name] = (sk, url)
    # nginx serves what skewless serves: the same shell and compressed forms.
    root = os.path.join(work, "nginx-root")
    sk_url = servers["skewless"][1]
    mirror_for_nginx(sk_url, common.admin("GET", sk_url, f"/releases/{RELEASE}")["manifest"], root,
                     release=RELEASE)
    nginx_log = os.path.join(work, "nginx-access.log")
    for name, file in (("nginx", None), ("nginx-log", nginx_log)):
        ng, url = common.start_nginx(root, upstream=be_url, access_log=file)
        servers[name] = (ng, url)

    pin = f"Skewless-Release: {RELEASE}"
    cases = []
    for case, path, hdrs, status, enc in (
            ("shell", SPA_ROUTE, [HTML, BR_GZIP], 200, "br"),
            ("1k", f"/{files['small']}", [], 200, "identity"),
            ("api", "/api/items", [pin], 200, "identity")):
        if case not in wanted:
            continue
        targets = {}
        for name, (proc, url) in servers.items():
            check(f"{url}{path}", hdrs, status, enc)
            # The CPU time the server (every thread, the log writer's
            # included) and, proxying, the back end spend per request.
            cpu = {"proxy": [proc.pid], "backend": [be.pid]} if case == "api" else {"server": [proc.pid]}
            # skewless's log writer thread alone (it is also in the
            # server's figure): the steadiest reading of the line's cost.
            if name in WRITERS:
                cpu["writer"] = [common.named_thread(proc.pid, "access-log")]
            targets[name] = (f"{url}{path}", hdrs, cpu)
        cases.append((case, targets))
    logs = [("skewless", log_file), ("nginx", nginx_log)] + ([("prior", prior_log)] if args.prior else [])
    for name, file in logs:
        deadline = time.monotonic() + 10
        while os.path.getsize(file) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}'s access log stayed empty")
            time.sleep(0.05)
        with open(file) as f:
            lines = f.read().splitlines()
        log(f"  {name} access log: {len(lines)} lines so far, e.g. {lines[-1]}")

    # Each server's logged rounds against its own unlogged ones.
    summary = common.compare(cases, rounds=args.rounds, duration=args.duration,
                             connections=args.connections,
                             reference=UNLOGGED)
    log_bytes = os.path.getsize(log_file)
    out = common.save("access-log" + (f"-{args.label}" if args.label else ""), {
        "setup": {
            "workers": common.WORKERS,
            "server_cpus": common.SERVER_CPUS,
            "client_cpus": common.CLIENT_CPUS,
            "connections": args.connections,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "log_bytes": log_bytes,
            "nginx_log_bytes": os.path.getsize(nginx_log),
            "nginx": "access_log FILE (JSON, escape=json) buffer=64k flush=10ms",
            "prior": args.prior,
        },
        "summary": summary,
    })
    common.print_comparison(out["summary"])
    # CPU per request, logged over unlogged (the median of the rounds'
    # ratios); proxying, also over the back end's CPU in the same round,
    # which takes out how fast the host ran at that moment.
    rows = {(s["case"], s["target"]): s for s in out["summary"]}
    table = []
    for (case, target), s in rows.items():
        if target not in UNLOGGED:
            continue
        ref = rows[(case, UNLOGGED[target])]
        key = "proxy" if case == "api" else "server"
        m = median_ratios(s["rounds"], ref["rounds"])
        norm = m.get("CPU / back end CPU")
        writer = s["cpu_us_per_req"].get("writer", "")
        table.append([case, target, s["cpu_us_per_req"][key], ref["cpu_us_per_req"][key],
                      round(m["CPU"], 3), round(norm, 3) if norm else "", writer])
    common.table(["case", "target", "CPU µs/req", "unlogged", "CPU ratio", "over back end's",
                  "writer µs/req"], table)


if __name__ == "__main__":
    main()
