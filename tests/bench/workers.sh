#!/bin/bash
# Rooms side by side on one server: W media workers, R rooms each loaded by its own
# `rakor loadtest` process (mesh: P publishers, S subscribers). Prints server CPU per forwarded
# packet over a window measured here from /metrics and /proc, delivery per room, per-worker split.
# Usage: W=2 R=2 P=6 S=6 DUR=25 RAKOR_BIN=target/release/rakor tests/bench/workers.sh
# (BWE=true for bandwidth estimation; RAKOR_SHELL_RECVMMSG=0 for one recvfrom per datagram.)
set -u
BIN=${RAKOR_BIN:?}; W=${W:-2}; R=${R:-2}; P=${P:-6}; S=${S:-6}; DUR=${DUR:-25}
D=$(mktemp -d /tmp/rakor-workers.XXXX)
RAKOR_MEDIA_WORKERS=$W RAKOR_LIMITS_JOIN_ATTEMPTS_PER_IP_PER_MINUTE=0 RAKOR_SERVER_SHUTDOWN_GRACE=1s \
RAKOR_MEDIA_BANDWIDTH_ESTIMATION=${BWE:-false} NO_COLOR=1 \
  "$BIN" serve --listen 127.0.0.1:0 --media-port 0 --data-dir "$D/data" 2> "$D/server.log" > "$D/banner" &
SP=$!
for i in $(seq 1 100); do PORT=$(grep -o 'http://127.0.0.1:[0-9]*' "$D/banner" | head -1 | cut -d: -f3); [ -n "$PORT" ] && break; sleep 0.1; done
for r in $(seq 1 "$R"); do
  "$BIN" loadtest --url "ws://127.0.0.1:$PORT/rtc" --room "room$r" --data-dir "$D/data" --server-pid $SP \
    --scenario mesh --publishers "$P" --subscribers "$S" --duration "$((DUR + 10))s" \
    --report-json "$D/r$r.json" > "$D/lt$r.out" 2>&1 &
done
# Wait until every room's bots joined: participants = R*(P+S)
for i in $(seq 1 600); do
  n=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '$1=="rakor_participants"{print $2}')
  [ "${n:-0}" -ge $((R * (P + S))) ] && break; sleep 0.5
done
sleep 5
m() { curl -s "http://127.0.0.1:$PORT/metrics"; }
cpu() { awk '{print $14+$15}' /proc/$SP/stat; }
M0=$(m); C0=$(cpu); T0=$(date +%s.%N); L0=$(cut -d' ' -f1 /proc/loadavg)
sleep "$DUR"
M1=$(m); C1=$(cpu); T1=$(date +%s.%N); L1=$(cut -d' ' -f1 /proc/loadavg)
wait $(jobs -p | grep -v "^$SP$") 2>/dev/null
kill $SP; wait $SP 2>/dev/null
get() { echo "$1" | awk -v k="$2" '$1==k{print $2}'; }
F=$(( $(get "$M1" rakor_rtp_packets_forwarded_total) - $(get "$M0" rakor_rtp_packets_forwarded_total) ))
TICKS=$((C1 - C0))
awk -v f="$F" -v t="$TICKS" -v a="$T0" -v b="$T1" -v w="$W" -v r="$R" -v p="$P" -v s="$S" \
    -v l0="$L0" -v l1="$L1" -v d="$D" 'BEGIN { secs = b - a;
  printf "W=%s rooms=%s mesh %s+%s: forwarded %.0f pkt/s, server %.2f cores, %.1f us/pkt, loadavg %s->%s, dir %s\n",
    w, r, p, s, f / secs, t / 100 / secs, (f ? t * 10000 / f : 0), l0, l1, d }'
for w in $(seq 0 $((W-1))); do
  a=$(get "$M0" "rakor_worker_rtp_packets_forwarded_total{worker=\"$w\"}"); b=$(get "$M1" "rakor_worker_rtp_packets_forwarded_total{worker=\"$w\"}")
  ca=$(get "$M0" "rakor_worker_thread_cpu_microseconds_total{worker=\"$w\"}"); cb=$(get "$M1" "rakor_worker_thread_cpu_microseconds_total{worker=\"$w\"}")
  echo "  worker $w: forwarded $((b-a)), thread cpu $(( (cb-ca)/1000 )) ms"
done
grep -h "media stats" "$D/server.log" | tail -$((W*2)) | sed 's/^/  /' | cut -c1-220
# Each room's loss (the load tool's table: role, bots, media ok, …, loss %).
for r in $(seq 1 "$R"); do
  grep -hE "^\| (publishers|subscribers) " "$D/lt$r.out" | awk -F'|' -v r="$r" '{printf "  room%s %s media ok %s, loss %% %s\n", r, $2, $4, $10}'
done
