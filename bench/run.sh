#!/usr/bin/env bash
# Runs the whole benchmark suite (a few minutes on 2 cores): static serving
# and API proxying against nginx, the access log's cost, event-stream fan-out, deploy cost and
# promote-to-served. Results: bench/results/*.json, tables on stdout.
#
# Environment: BENCH_WORKERS (worker threads / processes per server, default
# 1), BENCH_SERVER_CPUS / BENCH_CLIENT_CPUS (taskset lists, default: first
# core for servers, last core for load generators), BENCH_SKEWLESS (another
# skewless binary to measure), BENCH_SKIP_BUILD.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
python3 bench/static.py "$@"
BENCH_SKIP_BUILD=1 python3 bench/proxy.py "$@"
BENCH_SKIP_BUILD=1 python3 bench/access_log.py "$@"
BENCH_SKIP_BUILD=1 python3 bench/events.py
BENCH_SKIP_BUILD=1 python3 bench/deploy.py
BENCH_SKIP_BUILD=1 python3 bench/s3.py
echo "suite took $(( $(date +%s) - start ))s"
