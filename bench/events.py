#!/usr/bin/env python3
"""Event-stream fan-out: N concurrent `/_skewless/events` streams against one
gateway process, the server memory each costs, and how long after a promote
call the last of them hears of it.

The streams are opened by several processes of bench/streams (a small
tokio client), spread over source addresses 127.0.0.2 onwards so that each
address stays under the gateway's per-address stream limit (1000) and port
range. The gateway runs with its default limits (19,000 streams in all);
each process here may hold at most 20,000 open files, so 19,000 is 95 % of
what one gateway process can hold. Writes bench/results/events.json.

Usage: bench/events.py [--streams N] [--procs P]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import apps  # noqa: E402
import common  # noqa: E402
from common import log  # noqa: E402

STREAMS_TOOL = os.path.join(common.REPO, "target", "bench-streams", "release", "skewless-bench-streams")
PER_ADDRESS = 950  # under the gateway's default per-address limit of 1000


def build_tool():
    if os.environ.get("BENCH_SKIP_BUILD") and os.path.exists(STREAMS_TOOL):
        return
    common.run(["cargo", "build", "--release", "-q", "--manifest-path",
                os.path.join(common.BENCH, "streams", "Cargo.toml"),
                "--target-dir", os.path.join(common.REPO, "target", "bench-streams")])


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Client:
    """One load-generator process and the lines it prints."""

    def __init__(self, addr, count, sources, deadline):
        cmd = common.taskset(common.CLIENT_CPUS) + [
            STREAMS_TOOL, "--addr", addr, "--release", "r1", "--expect", "r2",
            "--count", str(count), "--sources", ",".join(sources), "--deadline", str(deadline)]
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.ready = None
        self.result = None
        self.stderr = []
        self.ready_event = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.p.stderr), daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            if line.startswith("READY "):
                opened, failed = map(int, line.split()[1:3])
                self.ready = (opened, failed)
                self.ready_event.set()
            elif line.startswith("RESULT "):
                self.result = json.loads(line[len("RESULT "):])
        self.ready_event.set()

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            self.p.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=19_000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--deadline", type=int, default=30, help="seconds to wait for the event")
    ap.add_argument("--label", default="",
                    help="result name suffix, e.g. to keep a run of another build (BENCH_SKEWLESS)")
    args = ap.parse_args()

    common.ensure_tools(nginx=False, wrk=False)
    common.build()
    build_tool()
    work = tempfile.mkdtemp(prefix="bench-events-")
    app = os.path.join(work, "app")
    apps.static_app(app)
    sk, url = common.start_skewless(os.path.join(work, "data"))
    common.deploy(url, app, "r1")
    common.deploy(url, app, "r2", promote=False)
    addr = url.replace("http://", "")

    # Warm up (runtime, allocator, first stream) so the baseline is fair.
    warm = Client(addr, 50, ["127.0.0.2"], 1)
    warm.ready_event.wait(30)
    warm.stop()
    time.sleep(1.0)
    rss_before = sk.rss_kib()
    fds_before = fd_count(sk.pid)

    per_proc = [args.streams // args.procs + (1 if i < args.streams % args.procs else 0)
                for i in range(args.procs)]
    sources = []
    clients = []
    t_open = time.monotonic()
    for count in per_proc:
        # Each process gets addresses of its own, at most PER_ADDRESS streams each.
        mine = [f"127.0.0.{2 + len(sources) + i}" for i in range(-(-count // PER_ADDRESS))]
        sources += mine
        clients.append(Client(addr, count, mine, args.deadline))
    for c in clients:
        c.ready_event.wait(180)
    open_secs = time.monotonic() - t_open
    opened = sum(c.ready[0] for c in clients if c.ready)
    failed = sum(c.ready[1] for c in clients if c.ready)
    log(f"  {opened} streams open, {failed} failed, in {open_secs:.1f}s")
    for c in clients:
        for line in c.stderr[:3]:
            log(f"    client: {line.rstrip()}")
    time.sleep(2.0)
    rss_open = sk.rss_kib()
    fds_open = fd_count(sk.pid)
    status = common.admin("GET", url, "/status")
    log(f"  server: RSS {rss_before} -> {rss_open} KiB, fds {fds_before} -> {fds_open}, "
        f"event_streams {status.get('event_streams')}")

    t0 = time.time_ns()
    common.admin("POST", url, "/releases/r2/promote", {})
    promote_ms = (time.time_ns() - t0) / 1e6
    for c in clients:
        c.p.wait(timeout=args.deadline + 30)
    times = [t for c in clients if c.result for t in c.result["times_ns"]]
    received = len(times)
    lost = sum(c.result["lost"] for c in clients if c.result)
    lat_ms = sorted((t - t0) / 1e6 for t in times)
    rss_after = sk.rss_kib()

    per_stream = (rss_open - rss_before) * 1024 / opened if opened else None
    result = {
        "setup": {
            "workers": common.WORKERS,
            "server_cpus": common.SERVER_CPUS,
            "client_cpus": common.CLIENT_CPUS,
            "client_processes": args.procs,
            "source_addresses": len(sources),
            "open_files_limit": common.machine()["open_files_limit"],
        },
        "streams_wanted": args.streams,
        "streams_open": opened,
        "streams_failed": failed,
        "open_seconds": round(open_secs, 2),
        "server_event_streams": status.get("event_streams"),
        "server_fds_open": fds_open,
        "rss_before_kib": rss_before,
        "rss_open_kib": rss_open,
        "rss_after_promote_kib": rss_after,
        "bytes_per_stream": round(per_stream) if per_stream else None,
        "promote_call_ms": round(promote_ms, 2),
        "received": received,
        "lost": lost,
        "delivery_ms": {
            "p50": round(common.percentile(lat_ms, 50), 2) if lat_ms else None,
            "p99": round(common.percentile(lat_ms, 99), 2) if lat_ms else None,
            "max": round(lat_ms[-1], 2) if lat_ms else None,
            "min": round(lat_ms[0], 2) if lat_ms else None,
        },
        "client_errors": [e for c in clients if c.result for e in c.result["errors"]][:10],
    }
    out = common.save("events" + (f"-{args.label}" if args.label else ""), result)
    d = out["delivery_ms"]
    common.table(
        ["streams open", "failed", "server fds", "RSS delta MiB", "bytes/stream", "promote call ms",
         "received", "p50 ms", "p99 ms", "max ms"],
        [[opened, failed, fds_open, round((rss_open - rss_before) / 1024, 1), out["bytes_per_stream"],
          out["promote_call_ms"], received, d["p50"], d["p99"], d["max"]]])


if __name__ == "__main__":
    main()
