#!/bin/bash
# Cascade bandwidth (issue 17): one rakor of N sites spread over three `rakor serve` nodes with
# `cluster.cascade = true` (own Redis and PostgreSQL, loopback). Node A owns the room (the
# host's load tool joins it first); then N/3 sites join each node, each node's share driven by
# its own `rakor loadtest --scenario rakor` (A: the host + sites 1…, B and C: --no-host and
# --first-site). Once every load tool has its media flowing and its layers settled, a window of
# DUR seconds measures: `rakor_cascade_bytes_total` (both directions, every leg) and
# `rakor_cascade_tracks`, each node's CPU and RSS, and from the load tools' reports the bytes
# every participant received from every participant on another node (the counterfactual
# "every track to every remote participant", see docs/benchmarks.md), delivery, loss, and the
# join times per node (connect → joined, connect → media flowing).
# Usage: SITES="6 15 30 60" DUR=20 RAKOR_BIN=target/release/rakor tests/bench/cascade.sh
# (EAGER=1: --eager-video; JOIN_BUDGET=120 seconds per load tool; JOIN_CONC=4 joins at once per
# load tool; HOLD=DUR+25 each load tool's own window in seconds; LT_LOG=a log filter for the
# load tools (RAKOR_LOADTEST_LOG), e.g. error,rakor_client=info; OUT=dir for the raw files.)
set -u
BIN=$(realpath "${RAKOR_BIN:?}")
DUR=${DUR:-20}
JB=${JOIN_BUDGET:-120}
HOLD=${HOLD:-$((DUR + 25))}   # each load tool's own window: covers the settle and the measured window
HERE=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/rakor-cascade.XXXX)}
mkdir -p "$OUT"
PIDS=()

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  redis_stop; pg_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=/dev/null
source "$HERE/tests/services/redis.sh"; redis_start >/dev/null || exit 1
# shellcheck source=/dev/null
source "$HERE/tests/services/postgres.sh"; pg_start >/dev/null || exit 1
KEY=$(head -c 32 /dev/urandom | base64)
CFG="$OUT/rakor.toml"
printf '[auth]\nsigning_key = "%s"\n\n[storage]\ndatabase_url = "%s"\n' "$KEY" "$RAKOR_TEST_POSTGRES_URL" > "$CFG"
echo "raw files in $OUT; redis $RAKOR_TEST_REDIS_URL; postgres $RAKOR_TEST_POSTGRES_URL"

metrics() { curl -s --max-time 5 "http://127.0.0.1:$1/metrics"; }
# A metric's value (a sample with or without labels: the first one).
metric() { metrics "$1" | awk -v k="$2" '$1==k || index($1, k "{")==1 {print $2; exit}'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null; }
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null; }

# start_node NAME ID → sets PORT_<NAME>, PID_<NAME>
start_node() {
  local name=$1 id=$2 d="$OUT/$N/$1" port="" i
  mkdir -p "$d"
  RAKOR_CLUSTER_REDIS_URL=$RAKOR_TEST_REDIS_URL RAKOR_CLUSTER_NODE_ID=$id RAKOR_CLUSTER_CASCADE=true \
  RAKOR_LIMITS_JOIN_ATTEMPTS_PER_IP_PER_MINUTE=0 RAKOR_SERVER_SHUTDOWN_GRACE=1s NO_COLOR=1 \
  RUST_LOG=info,rtc=error,rtc_ice=warn,rtc_dtls=error \
    "$BIN" serve --config "$CFG" --listen 127.0.0.1:0 --media-port 0 --data-dir "$d/data" \
    > "$d/banner" 2> "$d/server.log" &
  local pid=$!
  PIDS+=("$pid")
  for i in $(seq 1 200); do
    port=$(grep -o 'http://127.0.0.1:[0-9]*' "$d/banner" 2>/dev/null | head -1 | cut -d: -f3)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "node $name did not start:"; tail -5 "$d/server.log"; return 1; }
  printf -v "PORT_$name" '%s' "$port"
  printf -v "PID_$name" '%s' "$pid"
}

# wait_for SECONDS CMD…: poll every 0.5 s until CMD succeeds; 1 when the time ran out.
wait_for() {
  local until=$(( $(date +%s) + $1 )); shift
  while ! "$@"; do
    [ "$(date +%s)" -ge "$until" ] && return 1
    sleep 0.5
  done
}
nodes_alive() { [ "$(metric "$1" rakor_cluster_nodes_alive)" = 3 ]; }
has_participants() { [ "$(metric "$1" rakor_participants)" -ge "$2" ] 2>/dev/null; }
settled() { grep -q "layers settled" "$1" 2>/dev/null || ! kill -0 "$2" 2>/dev/null; }

run_n() {
  N=$1
  local sfx nb nc na ta tb tc room x lt start
  sfx=$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')
  nb=$((N / 3)); nc=$((N / 3)); na=$((N - nb - nc))
  ta=$(( na < 2 ? na : 2 )); tb=$(( nb < 2 ? nb : 2 )); tc=$(( nc < 1 ? nc : 1 ))
  room="rakor-$N-$sfx"
  mkdir -p "$OUT/$N"
  start_node A "node-a-$sfx" || return 1
  start_node B "node-b-$sfx" || return 1
  start_node C "node-c-$sfx" || return 1
  for x in $PORT_A $PORT_B $PORT_C; do
    wait_for 30 nodes_alive "$x" || { echo "N=$N: the three nodes never saw each other"; return 1; }
  done
  local common=(--room "$room" --config "$CFG" --scenario rakor --duration "${HOLD}s"
    --join-budget "${JB}s" --join-concurrency "${JOIN_CONC:-4}")
  [ "${EAGER:-0}" = 1 ] && common+=(--eager-video)
  # A first: its host's join makes A the room's owner.
  RAKOR_LOADTEST_LOG=${LT_LOG:-} "$BIN" loadtest --url "ws://127.0.0.1:$PORT_A/rtc" "${common[@]}" --publishers "$na" \
    --talkers "$ta" --server-pid "$PID_A" --server-log "$OUT/$N/A/server.log" \
    --report-json "$OUT/$N/A.json" > "$OUT/$N/A.out" 2> "$OUT/$N/A.err" &
  local lta=$!; PIDS+=("$lta")
  wait_for 30 has_participants "$PORT_A" 1 || { echo "N=$N: the host never joined A"; return 1; }
  start=$na
  RAKOR_LOADTEST_LOG=${LT_LOG:-} "$BIN" loadtest --url "ws://127.0.0.1:$PORT_B/rtc" "${common[@]}" --publishers "$nb" \
    --first-site $((start + 1)) --no-host --talkers "$tb" --server-pid "$PID_B" \
    --server-log "$OUT/$N/B/server.log" --report-json "$OUT/$N/B.json" > "$OUT/$N/B.out" 2> "$OUT/$N/B.err" &
  local ltb=$!; PIDS+=("$ltb")
  start=$((na + nb))
  RAKOR_LOADTEST_LOG=${LT_LOG:-} "$BIN" loadtest --url "ws://127.0.0.1:$PORT_C/rtc" "${common[@]}" --publishers "$nc" \
    --first-site $((start + 1)) --no-host --talkers "$tc" --server-pid "$PID_C" \
    --server-log "$OUT/$N/C/server.log" --report-json "$OUT/$N/C.json" > "$OUT/$N/C.out" 2> "$OUT/$N/C.err" &
  local ltc=$!; PIDS+=("$ltc")
  # Every load tool's bots have media flowing and their layers settled (or it gave up).
  for x in "A $lta" "B $ltb" "C $ltc"; do
    set -- $x
    wait_for $((JB + 30)) settled "$OUT/$N/$1.err" "$2" || echo "N=$N: load tool $1 never settled"
  done
  sleep 3 # the legs' layer demands settle after the last tile change (a measurement margin)
  local ok=1
  for x in $lta $ltb $ltc; do kill -0 "$x" 2>/dev/null || ok=0; done
  [ $ok = 1 ] || echo "N=$N: a load tool ended before the window (see $OUT/$N/*.err)"
  # The window.
  for x in A B C; do
    local p=PORT_$x q=PID_$x
    metrics "${!p}" > "$OUT/$N/$x.m0"; cpu_ticks "${!q}" > "$OUT/$N/$x.c0"
  done
  local t0 t1 l0 l1
  t0=$(date +%s.%N); l0=$(cut -d' ' -f1-3 /proc/loadavg)
  local peakA=0 peakB=0 peakC=0 r i
  for i in $(seq 1 "$DUR"); do
    sleep 1
    r=$(rss_kib "$PID_A"); [ "${r:-0}" -gt $peakA ] && peakA=$r
    r=$(rss_kib "$PID_B"); [ "${r:-0}" -gt $peakB ] && peakB=$r
    r=$(rss_kib "$PID_C"); [ "${r:-0}" -gt $peakC ] && peakC=$r
  done
  t1=$(date +%s.%N); l1=$(cut -d' ' -f1-3 /proc/loadavg)
  for x in A B C; do
    local p=PORT_$x q=PID_$x
    metrics "${!p}" > "$OUT/$N/$x.m1"; cpu_ticks "${!q}" > "$OUT/$N/$x.c1"
  done
  echo "$t0 $t1 $(getconf CLK_TCK) $peakA $peakB $peakC" > "$OUT/$N/window"
  echo "$l0 | $l1" > "$OUT/$N/loadavg"
  # The load tools end by themselves after their own window (bounded: then killed).
  local until=$(( $(date +%s) + HOLD + 60 ))
  for x in $lta $ltb $ltc; do
    while kill -0 "$x" 2>/dev/null && [ "$(date +%s)" -lt "$until" ]; do sleep 1; done
    kill "$x" 2>/dev/null
    wait "$x" 2>/dev/null; echo "$?" >> "$OUT/$N/exit_codes"
  done
  for x in "$PID_A" "$PID_B" "$PID_C"; do kill "$x" 2>/dev/null; done
  for x in "$PID_A" "$PID_B" "$PID_C"; do wait "$x" 2>/dev/null; done
  python3 "$HERE/tests/bench/cascade_report.py" "$OUT/$N" "$N" "node-a-$sfx"
}

for n in ${SITES:-6 15 30 60}; do
  run_n "$n"
done
