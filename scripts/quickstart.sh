#!/usr/bin/env bash
# Runs the README's quickstart exactly as printed — `cargo run --release --
# serve --demo`, then `cargo run --release -- deploy examples/app-v2
# --promote` — and checks that v1 and then v2 are served. The environment
# only moves the data directory and port out of the way (SKEWLESS_DATA,
# SKEWLESS_LISTEN, SKEWLESS_SERVER), so a developer's own server is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "quickstart: $*" >&2; exit 1; }

tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SKEWLESS_DATA="$tmp/data"
export SKEWLESS_LISTEN="127.0.0.1:$port"
export SKEWLESS_SERVER="http://127.0.0.1:$port"
unset SKEWLESS_TOKEN SKEWLESS_ADMIN_TOKEN SKEWLESS_CONFIG SKEWLESS_STATE SKEWLESS_BLOBS

cargo build --release --quiet
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

cargo run --release -- serve --demo >"$tmp/serve.log" 2>&1 &
server_pid=$!

# The page served at / loads entry script $1 (v1: index-4f1c9a2e.js,
# v2: index-9d2b6c71.js) from its release under /_r/<id>/, and that script is
# served.
served() {
  local page src
  page=$(curl -fsS --max-time 5 "$SKEWLESS_SERVER/" 2>/dev/null) || return 1
  src=$(grep -o "/_r/[^\"]*/assets/$1" <<<"$page") || return 1
  curl -fsS --max-time 5 -o /dev/null "$SKEWLESS_SERVER$src"
}
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 600); do
    if "$@"; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/serve.log" >&2; fail "server exited while waiting for $what"; }
    sleep 0.1
  done
  cat "$tmp/serve.log" >&2
  fail "timed out waiting for $what"
}

wait_for "the demo's v1 page" served index-4f1c9a2e.js
cargo run --release -- deploy examples/app-v2 --promote >"$tmp/deploy.log" 2>&1 \
  || { cat "$tmp/deploy.log" >&2; fail "deploy of examples/app-v2 failed"; }
wait_for "v2's page after the promote" served index-9d2b6c71.js
grep -q "demo: deployed example v1" "$tmp/serve.log" || fail "serve --demo did not report its deploy"
echo "quickstart: ok (v1 served by serve --demo, v2 after deploy --promote)"
