"""Shared plumbing of the benchmark scripts: tools, the build, starting and
stopping skewless, nginx and the example back end on loopback, running wrk,
and writing results (JSON under bench/results/, a table on stdout).

Only the Python standard library is used. Every process a script starts is
stopped by its pid when the script ends, also on error or Ctrl-C.
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, "results")
TARGET = os.path.join(REPO, "target", "release")
# BENCH_SKEWLESS points the scripts at another build, e.g. to compare a change.
SKEWLESS = os.environ.get("BENCH_SKEWLESS", os.path.join(TARGET, "skewless"))
BACKEND = os.path.join(TARGET, "example-backend")
TOKEN = "bench-admin-token-0123456789"

CORES = os.cpu_count() or 1
# Server side on the first core(s), load generator on the last one.
SERVER_CPUS = os.environ.get("BENCH_SERVER_CPUS", "0" if CORES > 1 else "")
CLIENT_CPUS = os.environ.get("BENCH_CLIENT_CPUS", str(CORES - 1) if CORES > 1 else "")
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))

_procs = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools(nginx=True, wrk=True):
    """Installs Debian's wrk, nginx and nginx's brotli_static module when
    missing."""
    want = []
    if wrk and not shutil.which("wrk"):
        want.append("wrk")
    if nginx and not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        want.append("nginx")
    if nginx and not os.path.exists("/usr/lib/nginx/modules/ngx_http_brotli_static_module.so"):
        want.append("libnginx-mod-http-brotli-static")
    if not want:
        return
    log(f"installing {' '.join(want)} from Debian's packages")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(sudo + ["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
    run(sudo + ["apt-get", "install", "-y", "-qq", *want], env=env, stdout=subprocess.DEVNULL)


def build():
    """Builds the release binaries unless BENCH_SKIP_BUILD is set."""
    if os.environ.get("BENCH_SKIP_BUILD"):
        return
    log("building target/release/skewless and example-backend")
    run(["cargo", "build", "--release", "-q", "-p", "skewless", "-p", "skewless-example-backend"],
        cwd=REPO)


def taskset(cpus):
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", deadline_s=20):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {host}:{port} after {deadline_s}s")


class Proc:
    """A started server process, stopped (SIGTERM, then SIGKILL) by pid."""

    def __init__(self, name, cmd, env=None, cpus=None, log_path=None):
        self.name = name
        self.log_path = log_path or tempfile.mktemp(prefix=f"bench-{name}-", suffix=".log")
        self.log_file = open(self.log_path, "wb")
        full = taskset(cpus) + cmd
        self.p = subprocess.Popen(full, env=dict(os.environ, **(env or {})),
                                  stdout=self.log_file, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        _procs.append(self)

    @property
    def pid(self):
        return self.p.pid

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def peak_rss_kib(self):
        """VmHWM: the peak RSS since start or since "5" was written to
        /proc/<pid>/clear_refs."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def threads(self):
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log_file.close()
        if self in _procs:
            _procs.remove(self)


# Directories removed at exit, once the servers writing into them stopped.
_remove_at_exit = []


def remove_at_exit(path):
    """Removes `path` (a work directory) when the script ends, after the
    servers it started have stopped."""
    _remove_at_exit.append(path)


def _stop_all(*_):
    for p in list(reversed(_procs)):
        try:
            p.stop()
        except Exception:
            pass
    while _remove_at_exit:
        shutil.rmtree(_remove_at_exit.pop(), ignore_errors=True)


atexit.register(_stop_all)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))


def skewless_env(workers=WORKERS):
    """The environment `skewless serve` runs with here: `workers` worker
    threads (`SKEWLESS_WORKERS`; 1 is the single-threaded scheduler; builds
    older than that setting read `TOKIO_WORKER_THREADS`) and warnings only."""
    return {"SKEWLESS_WORKERS": str(workers), "TOKIO_WORKER_THREADS": str(workers),
            "SKEWLESS_LOG": "warn"}


def start_skewless(data_dir, workers=WORKERS, cpus=SERVER_CPUS, args=(), env=None, binary=SKEWLESS):
    """Starts `skewless serve` (`binary`, by default the build under test)
    with `workers` worker threads (see `skewless_env`). Returns
    (proc, base_url)."""
    port = free_port()
    e = skewless_env(workers)
    e.update(env or {})
    p = Proc("skewless", [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data", data_dir,
                          "--admin-token", TOKEN, *args], env=e, cpus=cpus)
    wait_port(port)
    return p, f"http://127.0.0.1:{port}"


def start_backend(name="bench", api=1, cpus=SERVER_CPUS, workers=1):
    port = free_port()
    p = Proc(f"backend-{name}", [BACKEND, "--port", str(port), "--api", str(api), "--name", name],
             env={"TOKIO_WORKER_THREADS": str(workers)}, cpus=cpus)
    wait_port(port)
    return p, f"http://127.0.0.1:{port}"


NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
load_module /usr/lib/nginx/modules/ngx_http_brotli_static_module.so;
events {{ worker_connections 8192; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    gzip_static on;
    brotli_static on;
    upstream api {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        etag on;
        location / {{
            try_files $uri /index.html;
        }}
        location = /index.html {{
            add_header Cache-Control "no-cache";
        }}
        location /assets/ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
        location /api/ {{
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;{more_fields}
        }}
    }}
}}
"""


# nginx's access log as close to skewless's as its variables allow: the
# same JSON fields, buffered and flushed as skewless batches its lines.
NGINX_ACCESS_LOG = """log_format skewless escape=json '{{"time":"$time_iso8601",'
        '"client":"$remote_addr","method":"$request_method","path":"$uri",'
        '"status":$status,"bytes":$body_bytes_sent,"duration_ms":$request_time,'
        '"release":"$upstream_http_skewless_served_by","pin":"$http_skewless_release",'
        '"kind":"-"}}';
    access_log {file} skewless buffer=64k flush=10ms;"""


# The forwarding fields skewless sends a back end beyond nginx's usual two
# (docs/protocol.md), so that both proxies ask the back end for the same work.
NGINX_SKEWLESS_FIELDS = """
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header Forwarded "for=$remote_addr;host=$host;proto=$scheme";"""


def nginx_conf(d, port, root, upstream, workers=WORKERS, access_log=None, skewless_fields=False):
    """The text of nginx's configuration: files and state under `d`,
    serving `root` on `port` and proxying /api/ to `upstream` with
    keep-alive, logging each request to the file `access_log` if given, and
    sending the back end the same forwarding fields as skewless if
    `skewless_fields`."""
    text = NGINX_CONF.format(workers=workers, dir=d, port=port, root=root,
                             upstream=upstream.replace("http://", ""),
                             more_fields=NGINX_SKEWLESS_FIELDS if skewless_fields else "")
    if access_log:
        text = text.replace("access_log off;", NGINX_ACCESS_LOG.format(file=access_log))
    return text


def start_nginx(root, upstream="127.0.0.1:9", workers=WORKERS, cpus=SERVER_CPUS, access_log=None,
                skewless_fields=False):
    """Starts nginx (one master, `workers` worker processes) configured by
    `nginx_conf`. Returns (proc, url)."""
    d = tempfile.mkdtemp(prefix="bench-nginx-")
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_conf(d, port, root, upstream, workers=workers, access_log=access_log,
                           skewless_fields=skewless_fields))
    p = Proc("nginx", ["nginx", "-c", conf, "-e", os.path.join(d, "error.log")], cpus=cpus)
    wait_port(port)
    return p, f"http://127.0.0.1:{port}"


def drop_page_cache():
    """Writes dirty pages back and empties the page cache (needs root)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1")


def http(method, url, body=None, headers=None, timeout=60):
    """One HTTP request. Returns (status, headers dict lower-cased, body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def admin(method, base, path, body=None):
    status, _, data = http(method, f"{base}/_skewless/api/v1{path}", body,
                           {"Authorization": f"Bearer {TOKEN}"})
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {data[:200]!r}")
    return json.loads(data) if data else None


def deploy(base, directory, release, backend=None, promote=True):
    """`skewless deploy`, timed. Returns (report dict, seconds)."""
    cmd = [SKEWLESS, "deploy", directory, "--release", release, "--server", base,
           "--token", TOKEN, "--json"]
    if promote:
        cmd.append("--promote")
    if backend:
        cmd += ["--backend", backend]
    t = time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, SKEWLESS_LOG="warn"))
    secs = time.monotonic() - t
    return json.loads(out.stdout), secs


WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


# CPU steal (per round) from which print_comparison warns.
STEAL_WARN_PCT = 2.0


def cpu_ticks():
    """(steal, total) clock ticks of all CPUs so far, from /proc/stat; (0, 0)
    where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    # user nice system idle iowait irq softirq steal [guest guest_nice],
    # guest time being counted in user time already.
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def tree_cpu_ns(pid, into=None):
    """{thread id: CPU time (ns) it has run so far} for every thread of `pid`
    and of its descendants, from /proc/<pid>/task/*/schedstat. Two readings
    are compared thread by thread (see `cpu_ns_between`), so a thread that
    ends in between takes only its own time away, not its past."""
    into = {} if into is None else into
    if isinstance(pid, tuple):
        # (pid, tid): that one thread alone (see `named_thread`).
        pid, tid = pid
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                into[tid] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        return into
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return into
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                into[int(tid)] = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for child in f.read().split():
                    tree_cpu_ns(int(child), into)
        except (OSError, ValueError, IndexError):
            pass
    return into


def named_thread(pid, name, timeout=10):
    """`(pid, tid)` of the thread of `pid` named `name` (its comm), waited
    for up to `timeout` seconds: as an entry of `wrk`'s `pids`, that
    thread's CPU time alone."""
    deadline = time.monotonic() + timeout
    while True:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    if f.read().strip() == name:
                        return (pid, int(tid))
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} has no thread named {name}")
        time.sleep(0.05)


def cpu_ns_between(before, after):
    """The CPU time (ns) run between two `tree_cpu_ns` readings by the
    threads of the second."""
    return sum(ns - before.get(tid, 0) for tid, ns in after.items())


def wrk(url, headers=(), connections=64, duration=4, threads=1, cpus=CLIENT_CPUS, pids=None):
    """Runs wrk against `url`. Returns requests/s, latency percentiles (µs),
    bytes per response, error counts, the share of CPU time the host took
    from this machine meanwhile (`steal_pct`: a virtual machine's other
    guests; rounds with much of it are not comparable), and, for `pids`
    ({name: [pid]}, each with its descendants, or `(pid, tid)` for one
    thread), the CPU time each group of processes spent per request
    (`cpu_us_per_req`)."""
    lua = os.path.join(tempfile.gettempdir(), "bench-wrk-report.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA)
    cmd = taskset(cpus) + ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
                           "--timeout", "5s", "-s", lua]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = {k: [tree_cpu_ns(p) for p in ps] for k, ps in (pids or {}).items()}
    steal0, total0 = cpu_ticks()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=duration + 30).stdout
    steal1, total1 = cpu_ticks()
    cpu1 = {k: [tree_cpu_ns(p) for p in ps] for k, ps in (pids or {}).items()}
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = re.search(r"^WRKJSON (.*)$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no report:\n{out}")
    r = json.loads(m.group(1))
    # wrk's own CPU time (taskset execs it), user and system.
    r["client_cpu_s"] = round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 3)
    secs = r["duration_us"] / 1e6
    r["rps"] = r["requests"] / secs if secs else 0.0
    r["bytes_per_response"] = r["bytes"] / r["requests"] if r["requests"] else 0
    r["error_total"] = sum(r["errors"].values())
    r["steal_pct"] = round(100 * (steal1 - steal0) / (total1 - total0), 2) if total1 > total0 else 0.0
    if pids and r["requests"]:
        r["cpu_us_per_req"] = {
            k: round(sum(map(cpu_ns_between, cpu0[k], cpu1[k])) / 1e3 / r["requests"], 2)
            for k in cpu0}
    return r


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return None
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = 0.0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip() \
        if shutil.which("nginx") else None
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True).stdout.strip()
    except OSError:
        rev = None
    return {
        "cpu": cpu,
        "cores": CORES,
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "nginx": nginx_v,
        "commit": rev,
        "skewless_binary": os.path.relpath(SKEWLESS, REPO) if SKEWLESS.startswith(REPO) else SKEWLESS,
    }


def save(name, data):
    """Writes bench/results/<name>.json with the date and machine."""
    os.makedirs(RESULTS, exist_ok=True)
    out = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        **data,
    }
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    log(f"wrote {os.path.relpath(path, REPO)}")
    return out


def table(headers, rows):
    """Prints a plain aligned table."""
    cells = [[str(h) for h in headers]] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for j, r in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def comparison_args(doc, extra=()):
    """Parses the flags shared by the scripts that compare against nginx
    (and `extra` ones: (names, argparse keywords) pairs)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    for names, kw in extra:
        ap.add_argument(*names, **kw)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=4, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--label", default="",
                    help="result name suffix, e.g. to keep a run of another build (BENCH_SKEWLESS)")
    return ap.parse_args()


def round_ratio(runs, ref_runs, key):
    """The median over rounds of `key` in `runs` over `key` in `ref_runs`
    (the same rounds of another target), to three places."""
    return round(median([a[key] / b[key] for a, b in zip(runs, ref_runs)]), 3)


def compare(cases, rounds=3, duration=4, connections=64, reference="nginx"):
    """Runs every case against every target, alternating the order each
    round, and summarises each (case, target) by the median over rounds.
    Ratios to the reference are the medians of the per-round ratios, so
    both sides of a ratio always come from the same moment of the same run.

    `cases` is a list of (case name, {target: (url, [headers])}), a target
    may add a third item, {name: [pid]}, to have the CPU time those
    processes spend per request measured (see `wrk`);
    `reference` is the target every other one is set against, or a dict
    naming each target's own (targets it does not name get no ratio)."""
    runs = {}
    for rnd in range(rounds):
        for case, targets in cases:
            order = list(targets)
            if rnd % 2:
                order.reverse()
            for target in order:
                url, headers, *pids = targets[target]
                r = wrk(url, headers, connections=connections, duration=duration,
                        pids=pids[0] if pids else None)
                cpu = "".join(f"  {k} {v} µs/req" for k, v in r.get("cpu_us_per_req", {}).items())
                log(f"  round {rnd + 1}/{rounds} {case:<14} {target:<9} {r['rps']:>9.0f} req/s  "
                    f"p50 {r['p50_us']:>6} µs  p99 {r['p99_us']:>6} µs  errors {r['error_total']}"
                    f"{cpu}")
                runs.setdefault((case, target), []).append(r)
    summary = []
    for case, targets in cases:
        for target in targets:
            rs = runs[(case, target)]
            row = {
                "case": case,
                "target": target,
                "connections": connections,
                "rps": round(median([r["rps"] for r in rs])),
                "p50_us": median([r["p50_us"] for r in rs]),
                "p99_us": median([r["p99_us"] for r in rs]),
                "bytes_per_response": round(median([r["bytes_per_response"] for r in rs])),
                "errors": sum(r["error_total"] for r in rs),
                "steal_pct_max": max(r.get("steal_pct", 0.0) for r in rs),
                "rounds": rs,
            }
            if "cpu_us_per_req" in rs[0]:
                row["cpu_us_per_req"] = {k: round(median([r["cpu_us_per_req"][k] for r in rs]), 2)
                                         for k in rs[0]["cpu_us_per_req"]}
            ref_target = (reference.get(target) if isinstance(reference, dict)
                          else reference)
            if ref_target in targets and target != ref_target:
                ref = runs[(case, ref_target)]
                row["rps_ratio"] = round_ratio(rs, ref, "rps")
                row["p99_ratio"] = round_ratio(rs, ref, "p99_us")
                row["p50_ratio"] = round_ratio(rs, ref, "p50_us")
            summary.append(row)
    return summary


def print_comparison(summary):
    rows = []
    for s in summary:
        rows.append([s["case"], s["target"], s["connections"], s["rps"], s["p50_us"], s["p99_us"],
                     s["bytes_per_response"], s["errors"],
                     s.get("rps_ratio", ""), s.get("p99_ratio", "")])
    table(["case", "target", "conns", "req/s", "p50 µs", "p99 µs", "bytes/resp", "errors",
           "req/s ratio", "p99 ratio"], rows)
    steal = [r.get("steal_pct", 0.0) for s in summary for r in s.get("rounds", [])]
    if steal and max(steal) >= STEAL_WARN_PCT:
        log(f"warning: the host took {median(steal):.1f} % of the CPU time (median round; "
            f"up to {max(steal):.1f} %) for other guests during these rounds: "
            "their ratios are unreliable")

