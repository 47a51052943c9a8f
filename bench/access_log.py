#!/usr/bin/env python3
"""The cost of the access log: the same build serving the same app twice,
once without and once with `--access-log FILE` (one JSON line per request
written to a file), measured in alternating rounds on the shell, a 1 KB
file and a proxied `/api/` call. The figure is the requests/s ratio
logged/unlogged (the cost is 1 minus it). Writes
bench/results/access-log.json.

Usage: bench/access_log.py [--rounds N] [--duration S] [--connections C]
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps  # noqa: E402
import common  # noqa: E402
from common import log  # noqa: E402
from static import BR_GZIP, HTML, SPA_ROUTE, check  # noqa: E402

RELEASE = "log-1"


def main():
    args = common.comparison_args(__doc__)
    common.ensure_tools(nginx=False)
    common.build()
    work = tempfile.mkdtemp(prefix="bench-access-log-")
    app = os.path.join(work, "app")
    files = apps.static_app(app)
    be, be_url = common.start_backend(RELEASE)
    log_file = os.path.join(work, "access.log")
    servers = {}
    for name, extra in (("skewless", []), ("skewless-log", ["--access-log", log_file])):
        sk, url = common.start_skewless(os.path.join(work, f"data-{name}"), args=extra)
        common.deploy(url, app, RELEASE, backend=be_url)
        servers[name] = (sk, url)

    pin = f"Skewless-Release: {RELEASE}"
    cases = []
    for case, path, hdrs, status, enc in (
            ("shell", SPA_ROUTE, [HTML, BR_GZIP], 200, "br"),
            ("1k", f"/{files['small']}", [], 200, "identity"),
            ("api", "/api/items", [pin], 200, "identity")):
        targets = {}
        for name, (_, url) in servers.items():
            check(f"{url}{path}", hdrs, status, enc)
            targets[name] = (f"{url}{path}", hdrs)
        cases.append((case, targets))
    with open(log_file) as f:
        lines = f.read().splitlines()
    if not lines:
        raise RuntimeError("the access log stayed empty")
    log(f"  access log: {len(lines)} lines so far, e.g. {lines[-1]}")

    summary = common.compare(cases, rounds=args.rounds, duration=args.duration,
                             connections=args.connections, reference="skewless")
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
        },
        "summary": summary,
    })
    common.print_comparison(out["summary"])


if __name__ == "__main__":
    main()
