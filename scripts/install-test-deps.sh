#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: Node.js and
# npm for the browser library, Debian's Chromium for the browser tests,
# curl for the quickstart check, PostgreSQL (a server on 127.0.0.1:5432 for
# the state conformance suite, initdb/pg_ctl for private servers, psql) and
# HAProxy for the cluster tests, and moto (an S3 server, from PyPI) in a
# virtualenv under target/moto-venv for the object-store tests.
set -euo pipefail

need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi

# The conformance suite needs a server on 127.0.0.1:5432 (user postgres,
# trust auth on loopback): start Debian's cluster if nothing answers there.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  if [ -f "$hba" ] && ! grep -q "skewless tests" "$hba"; then
    printf '# skewless tests\nhost all postgres 127.0.0.1/32 trust\n' | $sudo_cmd sh -c "cat - $hba > $hba.new && mv $hba.new $hba"
  fi
  $sudo_cmd pg_ctlcluster "$ver" main start || $sudo_cmd pg_ctlcluster "$ver" main reload || true
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi

# moto's S3 server for the object-store tests, in a virtualenv of its own.
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/moto-venv"
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "installing moto[server] into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
