#!/usr/bin/env bash
# Install Debian's redis-server for the Redis tests (server/tests/redis_store.rs), once.
# Idempotent: does nothing when redis-server is already on PATH. The tests start their own
# throw-away redis-server on a free port; this script never starts or configures a service.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: redis-server is not installed and apt-get is not available; install Redis >= 6" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: redis-server is not installed; run as root or: sudo apt-get install -y redis-server" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet (or stale ones that point at removed files).
if ! apt-get install -y --no-install-recommends redis-server; then
  apt-get update
  apt-get install -y --no-install-recommends redis-server
fi
# The package may start a system service; the tests do not use it, so stop it if it runs.
if command -v service >/dev/null 2>&1; then
  service redis-server stop >/dev/null 2>&1 || true
fi
command -v redis-server >/dev/null 2>&1 || {
  echo "error: redis-server still not on PATH after installing the package" >&2
  exit 1
}
echo "installed $(redis-server --version)"
