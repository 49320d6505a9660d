#!/usr/bin/env bash
# Install Debian's redis-server for the Redis tests (server/tests/redis_store.rs), once.
# Idempotent: does nothing when redis-server is already on PATH. The tests start their own
# throw-away redis-server on a free port; this script never starts or configures a service.
#
# Also, for benchmarks (scripts/bench-serving.sh, the redis-outage load-test scenario):
#   scripts/redis-server.sh start PORT   a throw-away redis-server on 127.0.0.1:PORT (no
#                                        persistence, in the background), once it answers
#   scripts/redis-server.sh stop PORT    shut it down
set -euo pipefail

MODE=${1:-install}
case "$MODE" in
  install) ;;
  start|stop)
    PORT=${2:?usage: redis-server.sh start|stop PORT}
    case "$PORT" in ''|*[!0-9]*) echo "error: PORT must be a number, got '$PORT'" >&2; exit 2 ;; esac
    ;;
  *) echo "usage: redis-server.sh [install | start PORT | stop PORT]" >&2; exit 2 ;;
esac

if [ "$MODE" = stop ]; then
  if redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1; then
    echo "redis-server on port $PORT stopped"
    exit 0
  fi
  echo "error: no redis-server answered on 127.0.0.1:$PORT" >&2
  exit 1
fi

start_redis() {
  redis-server --bind 127.0.0.1 --port "$PORT" --save '' --appendonly no \
    --daemonize yes --logfile "/tmp/sidrec-redis-$PORT.log" --pidfile "/tmp/sidrec-redis-$PORT.pid"
  for _ in $(seq 1 50); do
    if redis-cli -h 127.0.0.1 -p "$PORT" ping >/dev/null 2>&1; then
      echo "redis-server on 127.0.0.1:$PORT"
      return 0
    fi
    sleep 0.1
  done
  echo "error: redis-server on port $PORT did not answer (see /tmp/sidrec-redis-$PORT.log)" >&2
  return 1
}

if command -v redis-server >/dev/null 2>&1; then
  if [ "$MODE" = start ]; then start_redis; fi
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
if [ "$MODE" = start ]; then start_redis; fi
