#!/bin/bash
# Memory per participant in the rakor scenario: for each N in SITES, a fresh `rakor serve`
# (SERVER_BIN) loaded by `rakor loadtest --scenario rakor --publishers N` (TOOL_BIN, with
# --procs PROCS) for DUR; prints the server's RSS per participant (peak), forwarding p50/p99,
# server CPU and the outcome from each run's JSON report. The p99 is the server's own, from its
# last 10-s `media stats` line of the run: socket read → send, and (servers with kernel receive
# stamps) from the kernel's arrival → send, with the datagrams' wait in the socket alone.
# Usage: SITES="20 40 60" PROCS=2 DUR=20 SERVER_BIN=target/release/rakor \
#        TOOL_BIN=target/release/rakor tests/bench/memory.sh
set -u
SBIN=${SERVER_BIN:?}; TBIN=${TOOL_BIN:-$SBIN}; PROCS=${PROCS:-1}; DUR=${DUR:-20}
for N in ${SITES:-20 40 60}; do
  D=$(mktemp -d /tmp/rakor-mem.XXXX)
  RAKOR_LIMITS_JOIN_ATTEMPTS_PER_IP_PER_MINUTE=0 RAKOR_SERVER_SHUTDOWN_GRACE=1s NO_COLOR=1 \
    "$SBIN" serve --listen 127.0.0.1:0 --media-port 0 --data-dir "$D/data" 2> "$D/server.log" > "$D/banner" &
  SP=$!
  for i in $(seq 1 100); do PORT=$(grep -o 'http://127.0.0.1:[0-9]*' "$D/banner" | head -1 | cut -d: -f3); [ -n "$PORT" ] && break; sleep 0.1; done
  "$TBIN" loadtest --url "ws://127.0.0.1:$PORT/rtc" --room R --data-dir "$D/data" --server-pid $SP \
    --scenario rakor --publishers "$N" --duration "${DUR}s" --join-concurrency 4 --join-budget 150s \
    --procs "$PROCS" --server-log "$D/server.log" --report-json "$D/report.json" > "$D/out" 2> "$D/err"
  kill $SP; wait $SP 2>/dev/null
  jq -r --arg n "$N" --arg d "$D" '"host + \($n): \(.outcome); RSS \(.server.rss_start_kib/1024|floor) -> peak \(.server.rss_peak_kib/1024|floor) MiB, \((.server.rss_peak_per_participant_kib // 0)/1024*100|floor/100) MiB per participant (\(.server.participants)); server \(.server.cpu_cores_avg*100|floor/100) cores; fwd p50/p99 \(.fwd_latency.p50_us // "-")/\(.fwd_latency.p99_us // "-") us (from kernel arrival \(.fwd_latency.kernel_p50_us // "-")/\(.fwd_latency.kernel_p99_us // "-") us, socket wait p99 \(.fwd_latency.rx_wait_p99_us // "-") us); tool \(.machine.loadtest_cpu_cores_avg*100|floor/100) cores; load \(.machine.loadavg_start[0]); \($d)"' "$D/report.json"
done
