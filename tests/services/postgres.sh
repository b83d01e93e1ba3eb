# Sourced by tests/run.sh (and usable alone: `source tests/services/postgres.sh; pg_start`).
# A throw-away PostgreSQL from the Debian package: a cluster in a temporary directory owned by
# the `postgres` user (PostgreSQL refuses to run as root), on a free loopback port, trust
# authentication on loopback only. Exports RAKOR_TEST_POSTGRES_URL; pg_stop removes everything.

pg_bin_dir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pg_start() {
  if ! pg_bin_dir >/dev/null && command -v apt-get >/dev/null 2>&1; then
    echo "== installing postgresql (storage tests)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1
  fi
  local bin
  bin=$(pg_bin_dir) || { echo "postgresql not installed: PostgreSQL tests will not run"; return 1; }
  PG_DIR=$(mktemp -d /tmp/rakor-pg.XXXXXX)
  chmod 755 "$PG_DIR"
  PG_PORT=$(free_port)
  local run=(env)
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$PG_DIR"
    run=(runuser -u postgres --)
  fi
  PG_RUN=("${run[@]}")
  PG_BIN=$bin
  "${run[@]}" "$bin/initdb" -D "$PG_DIR/data" -U rakor --auth=trust -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log"; return 1; }
  "${run[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c max_connections=300 -c fsync=on -c synchronous_commit=on" start >/dev/null \
    || { cat "$PG_DIR/server.log"; return 1; }
  "${run[@]}" "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U rakor rakor_test || return 1
  export RAKOR_TEST_POSTGRES_URL="postgres://rakor@127.0.0.1:$PG_PORT/rakor_test"
  echo "postgresql $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT ($PG_DIR)"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1
  rm -rf "$PG_DIR"
  PG_DIR=
}
