#!/usr/bin/env bash
# Runs every Rakor test suite: unit and integration tests (cargo nextest, release profile,
# against the real `rakor` binary on loopback), the sixty-site presenter check (alone, after
# them) and the headless-Chromium browser scenario.
# Installs what it needs (cargo-nextest if missing, Debian chromium, npm packages).
# Ends with each runner's own summary line; exits non-zero if any suite failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export RAKOR_BIN="$ROOT/target/release/rakor"
status=0
summaries=()

echo "== build (release)"
if ! cargo build --release --workspace --bins --tests; then
  echo "build failed"
  exit 1
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install --locked cargo-nextest || exit 1
fi

# The fault tests (tests/e2e/faults.rs) make network namespaces and need nft for packet loss.
if ! command -v nft >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing nftables (fault tests)"
  (apt-get update -qq && apt-get install -y -qq nftables iproute2) >/dev/null 2>&1 || echo "nftables not installed; the loss test will be skipped"
fi

# Recording tests check files with ffprobe/ffmpeg, and the server makes composites with ffmpeg.
if ! command -v ffprobe >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "== installing ffmpeg (recording tests)"
  (apt-get update -qq && apt-get install -y -qq ffmpeg) >/dev/null 2>&1 || echo "ffmpeg not installed; the recording tests will fail"
fi

# The session store suites and the PostgreSQL e2e test run against a throw-away PostgreSQL
# (Debian package postgresql) on a free loopback port, stopped at exit.
# shellcheck source=services/postgres.sh
source "$ROOT/tests/services/postgres.sh"
trap pg_stop EXIT
echo "== postgresql (storage tests)"
# The PostgreSQL store is tested against a real server: no server, no run.
pg_start || { echo "FAIL: PostgreSQL could not be started (see above); the storage tests need it"; exit 1; }

# The cluster e2e test (two nodes on one Redis and one PostgreSQL) runs against a throw-away
# Redis (Debian package redis-server) on a free loopback port, stopped at exit.
# shellcheck source=services/redis.sh
source "$ROOT/tests/services/redis.sh"
trap 'pg_stop; redis_stop' EXIT
echo "== redis (cluster tests)"
redis_start || { echo "FAIL: Redis could not be started (see above); the cluster tests need it"; exit 1; }

echo "== rust: unit + integration tests"
cargo nextest run --release --workspace --no-fail-fast 2>&1 | tee /tmp/rakor-nextest.log
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || status=1
summaries+=("rust: $(grep -E '^\s+Summary' /tmp/rakor-nextest.log | tail -1 | sed 's/^ *//')")

# Issue 14's sixty-site presenter check (tests/e2e/loadtest.rs): sixty sites and the host in
# one rakor, a presentation at its top layer, cameras at the bottom. `#[ignore]` in the main run
# because it needs the machine to itself (on a loaded 2-core machine sixty sites lose their
# media): run alone here, after the main suite, with cargo test (nextest would kill it at
# 180 s; the test bounds itself at 240 s). RAKOR_SKIP_SIXTY=1 skips it.
if [ -z "${RAKOR_SKIP_SIXTY:-}" ]; then
  echo "== rust: sixty-site presenter check (alone)"
  cargo test --release -p rakor-e2e --test loadtest -- --ignored --exact \
    loadtest_rakor_sixty_sites_presentation_at_the_top_cameras_at_the_bottom --nocapture \
    2>&1 | tee /tmp/rakor-sixty.log
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || status=1
  summaries+=("sixty sites: $(grep -E '^test result:' /tmp/rakor-sixty.log | tail -1) $(grep -E '^60 sites \+ host:' /tmp/rakor-sixty.log | tail -1)")
fi

if [ -x tests/browser/run.sh ] && [ -z "${RAKOR_SKIP_BROWSER:-}" ]; then
  echo "== browser: headless Chromium scenario"
  tests/browser/run.sh 2>&1 | tee /tmp/rakor-browser.log
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || status=1
  summaries+=("browser: $(grep -E '^[0-9]+ passed, [0-9]+ failed$' /tmp/rakor-browser.log | tail -1)")
fi

echo
echo "== summary"
for s in "${summaries[@]}"; do echo "$s"; done
exit $status
