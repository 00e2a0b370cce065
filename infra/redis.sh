#!/usr/bin/env bash
# Start/stop a throwaway Debian redis-server for the tests: 127.0.0.1:${REDIS_PORT:-16379}, no persistence.
#   infra/redis.sh start | stop | status
set -euo pipefail
PORT="${REDIS_PORT:-16379}"
RUN="${REPMON_RUN:-/tmp/repmon-test}/redis-$PORT"
mkdir -p "$RUN"

ensure_installed() {
  command -v redis-server >/dev/null && return 0
  echo "redis.sh: installing Debian's redis-server" >&2
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ -n "$sudo" ] && ! command -v sudo >/dev/null; then
    echo "redis.sh: redis-server is missing and I am not root: apt-get install redis-server" >&2; exit 1
  fi
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq redis-server >/dev/null
  command -v redis-server >/dev/null || { echo "redis.sh: redis-server did not install" >&2; exit 1; }
}

case "${1:-}" in
  start)
    ensure_installed
    if redis-cli -p "$PORT" ping >/dev/null 2>&1; then echo "redis.sh: already running on $PORT"; exit 0; fi
    redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log" --dir "$RUN"
    for _ in $(seq 1 100); do
      redis-cli -p "$PORT" ping >/dev/null 2>&1 && { echo "redis.sh: up on 127.0.0.1:$PORT"; exit 0; }
      sleep 0.1
    done
    echo "redis.sh: redis-server did not answer on $PORT; log:" >&2; tail -20 "$RUN/redis.log" >&2 || true; exit 1
    ;;
  stop)
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
    if [ -f "$RUN/redis.pid" ]; then kill "$(cat "$RUN/redis.pid")" 2>/dev/null || true; rm -f "$RUN/redis.pid"; fi
    echo "redis.sh: stopped"
    ;;
  status) redis-cli -p "$PORT" ping ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
