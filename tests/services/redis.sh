# Sourced by tests/run.sh (and usable alone: `source tests/services/redis.sh; redis_start`).
# A throw-away Redis from the Debian package (redis-server): no persistence, on a free loopback
# port, its files in a temporary directory. Exports RAKOR_TEST_REDIS_URL; redis_stop removes
# everything.

redis_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

redis_start() {
  if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "== installing redis-server (cluster tests)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null 2>&1
  fi
  command -v redis-server >/dev/null 2>&1 || { echo "redis-server not installed"; return 1; }
  REDIS_DIR=$(mktemp -d /tmp/rakor-redis.XXXXXX)
  REDIS_PORT=$(redis_free_port)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --save "" --appendonly no \
    --daemonize yes --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log" \
    || { cat "$REDIS_DIR/redis.log" 2>/dev/null; return 1; }
  local i
  for i in $(seq 1 100); do
    if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
      export RAKOR_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
      echo "redis $(redis-server --version | awk '{print $3}' | sed 's/v=//') on 127.0.0.1:$REDIS_PORT ($REDIS_DIR)"
      return 0
    fi
    sleep 0.1
  done
  cat "$REDIS_DIR/redis.log" 2>/dev/null
  return 1
}

redis_stop() {
  [ -n "${REDIS_DIR:-}" ] || return 0
  if [ -f "$REDIS_DIR/redis.pid" ]; then
    kill "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null
  fi
  rm -rf "$REDIS_DIR"
  REDIS_DIR=
}
