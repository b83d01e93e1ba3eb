#!/bin/bash
# Media-thread CPU per forwarded packet over UDP, ICE-TCP and TURN over TLS (on the HTTPS port) in
# one run, and N sites over TURN/TLS at once (issue 12). One `rakor serve` with built-in HTTPS on
# 127.0.0.1:443 (a test CA made here with openssl) and TURN enabled, in a private network namespace
# (the script re-runs itself under `unshare --net`; needs root and nft); one media worker, so one
# media port and one media thread. Three rounds, each a
# `rakor loadtest` (mesh, P publishers + S subscribers) measured over DUR seconds from /metrics:
#   udp      nothing blocked: the bots pair UDP host candidates;
#   tcp      nft drops UDP to the media port: the bots pair ICE-TCP (RFC 6544) candidates;
#   turn-tls `--ice-transport relay` and nft drops TCP to the TURN/TCP port: every bot's media is
#            relayed by the built-in TURN server over TLS on 443.
# Prints per round: forwarded packets/s, media-thread (rakor_media_thread_cpu_microseconds_total)
# and whole-process CPU per forwarded packet, TURN/ICE-TCP byte counters, the bots' delivery.
# Usage: P=10 S=10 DUR=20 RAKOR_BIN=target/release/rakor tests/bench/turn_cost.sh
#        ROUNDS="turn-tls" P=20 S=0 ... for 20 sites over TURN/TLS at once (mesh: everyone receives
#        everyone else).
set -u
BIN=${RAKOR_BIN:?set RAKOR_BIN to the rakor binary}
case "$BIN" in /*) ;; *) BIN="$(pwd)/$BIN" ;; esac
if [ -z "${RAKOR_BENCH_IN_NS:-}" ]; then
  exec env RAKOR_BENCH_IN_NS=1 RAKOR_BIN="$BIN" timeout -s KILL "${TIMEOUT_S:-900}" \
    unshare --net --pid --fork --kill-child --mount-proc bash "$0" "$@"
fi
ip link set lo up
P=${P:-10}; S=${S:-10}; DUR=${DUR:-20}; ROUNDS=${ROUNDS:-"udp tcp turn-tls"}
D=$(mktemp -d /tmp/rakor-turncost.XXXX)
# Test CA and a server certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=Rakor bench CA" \
  -keyout "$D/ca.key" -out "$D/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$D/server.key" -out "$D/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$D/ext.cnf"
openssl x509 -req -in "$D/server.csr" -CA "$D/ca.pem" -CAkey "$D/ca.key" -CAcreateserial -days 2 \
  -extfile "$D/ext.cnf" -out "$D/server.pem" 2>/dev/null

RAKOR_SERVER_TLS_CERT_FILE="$D/server.pem" RAKOR_SERVER_TLS_KEY_FILE="$D/server.key" \
RAKOR_TURN_ENABLED=true RAKOR_TURN_LISTEN=127.0.0.1:0 RAKOR_MEDIA_WORKERS=1 \
RAKOR_LIMITS_JOIN_ATTEMPTS_PER_IP_PER_MINUTE=0 RAKOR_SERVER_SHUTDOWN_GRACE=1s \
RAKOR_MEDIA_BANDWIDTH_ESTIMATION=false NO_COLOR=1 \
  "$BIN" serve --listen 127.0.0.1:443 --media-port 0 --data-dir "$D/data" 2> "$D/server.log" > "$D/banner" &
SP=$!
m() { curl -s --cacert "$D/ca.pem" "https://127.0.0.1:443/metrics"; }
for i in $(seq 1 100); do m | grep -q '^rakor_participants' && break; sleep 0.1; done
MEDIA=$(grep 'Media (UDP)' "$D/banner" | grep -o '127.0.0.1:[0-9]*' | head -1 | cut -d: -f2)
TURN=$(grep 'TURN (TCP)' "$D/banner" | grep -o '127.0.0.1:[0-9]*' | head -1 | cut -d: -f2)
echo "server: https://127.0.0.1:443, media port ${MEDIA:-?}, TURN/TCP port ${TURN:-?}, dir $D"
if [ -z "$MEDIA" ] || [ -z "$TURN" ]; then echo "could not read the ports from the banner:"; cat "$D/banner"; kill $SP; exit 1; fi
get() { echo "$1" | awk -v k="$2" '$1==k{s+=$2} END{print s+0}'; }
cpu() { awk '{print $14+$15}' /proc/$SP/stat; }
# The namespace's UDP counters (server, relays, bots and their TURN bridges all live here):
sock_drops() {
  local inodes; inodes=$(ls -l /proc/"$1"/fd 2>/dev/null | grep -o 'socket:\[[0-9]*\]' | tr -dc '0-9\n' | sort -u)
  awk -v who="$2" -v list="$(echo $inodes)" 'BEGIN {n = split(list, a, " "); for (i = 1; i <= n; i++) own[a[i]] = 1}
    NR > 1 && ($10 in own) {s++; d += $NF; if ($NF > 0) {nd++; if ($NF > mx) mx = $NF}}
    END {printf "  %s UDP sockets: %d, with drops: %d, drops total %d, max on one socket %d\n", who, s, nd, d, mx}' /proc/net/udp
}
# datagrams the kernel dropped because a socket's receive or send buffer was full.
udpstat() { awk '/^Udp:/ {if (!h) {for (i = 2; i <= NF; i++) k[i] = $i; h = 1} else for (i = 2; i <= NF; i++) printf "%s=%s ", k[i], $i}' /proc/net/snmp; }

for round in $ROUNDS; do
  nft delete table inet rk_bench 2>/dev/null
  extra=()
  case $round in
    udp) ;;
    tcp) nft -f - <<EOF
table inet rk_bench {
  chain out {
    type filter hook output priority 0;
    udp dport $MEDIA counter drop
  }
}
EOF
      ;;
    turn-tls) extra=(--ice-transport relay); nft -f - <<EOF
table inet rk_bench {
  chain out {
    type filter hook output priority 0;
    tcp dport $TURN counter drop
  }
}
EOF
      ;;
    *) echo "unknown round $round"; continue ;;
  esac
  "$BIN" loadtest --url "wss://127.0.0.1:443/rtc" --ca-file "$D/ca.pem" --room "r-$round" --data-dir "$D/data" \
    --server-pid $SP --scenario mesh --publishers "$P" --subscribers "$S" --duration "$((DUR + 10))s" \
    --join-budget 120s "${extra[@]}" --report-json "$D/$round.json" > "$D/$round.out" 2>&1 &
  LT=$!
  for i in $(seq 1 600); do
    n=$(get "$(m)" rakor_participants)
    [ "${n:-0}" -ge $((P + S)) ] && break
    kill -0 $LT 2>/dev/null || break
    sleep 0.5
  done
  sleep 5
  M0=$(m); C0=$(cpu); T0=$(date +%s.%N); U0=$(udpstat)
  sleep "$DUR"
  M1=$(m); C1=$(cpu); T1=$(date +%s.%N); U1=$(udpstat)
  # Which sockets dropped (the `drops` column of /proc/net/udp), by owner: server or load tool.
  sock_drops $SP server; sock_drops $LT loadtest
  wait $LT; rc=$?
  d() { echo $(( $(get "$M1" "$1") - $(get "$M0" "$1") )); }
  F=$(d rakor_rtp_packets_forwarded_total); MT=$(d rakor_media_thread_cpu_microseconds_total)
  awk -v r="$round" -v f="$F" -v mt="$MT" -v t="$((C1 - C0))" -v a="$T0" -v b="$T1" -v p="$P" -v s="$S" -v rc="$rc" 'BEGIN {
    secs = b - a;
    printf "MEASURED %-8s mesh %s+%s: forwarded %.0f pkt/s, media thread %.2f us/pkt (%.0f%% of a core), whole server %.2f us/pkt (%.2f cores), loadtest exit %s\n",
      r, p, s, f / secs, (f ? mt / f : 0), mt / 10000 / secs, (f ? t * 10000 / f : 0), t / 100 / secs, rc }'
  echo "  UDP counters before: $U0"
  echo "  UDP counters after:  $U1"
  echo "  TURN metrics after: $(echo "$M1" | grep -E '^rakor_turn' | tr '\n' ' ')"
  echo "  ICE-TCP frames received in the window: $(d rakor_ice_tcp_frames_received_total)"
  grep -hE "^\| (publishers|subscribers) " "$D/$round.out" | awk -F'|' '{printf "  %s media ok %s, loss %% %s\n", $2, $4, $10}'
  # The bots' selected paths and TURN/TLS bytes (rakor-client's report, per bot).
  [ -s "$D/$round.json" ] && grep -oE '"(publisher|subscriber)_path": ?"[^"]*"' "$D/$round.json" | sort | uniq -c | sed 's/^/  /'
  [ -s "$D/$round.json" ] && grep -oE '"turn_tls_bytes_in": ?[0-9]+' "$D/$round.json" | awk -F: '{s+=$2; n++} END{if(n) printf "  turn_tls_bytes_in over %d bots: %d\n", n, s}'
  nft list table inet rk_bench 2>/dev/null | grep -o 'counter packets [0-9]*' | sed 's/^/  nft dropped: /'
done
nft delete table inet rk_bench 2>/dev/null
kill $SP; wait $SP 2>/dev/null
echo "logs in $D"
