#!/bin/sh
# Rakor web client in real headless Chromium against the real `rakor` binary.
# Installs what is missing (Debian chromium, npm playwright-core), builds nothing, then runs
# scenario.mjs (the call page), console.mjs (the operator console), present.mjs (chat, raised
# hands, the floor, the record), screen.mjs (screen sharing) and turn443.mjs (a 443-only site
# over TURN/TLS: built-in HTTPS, nftables by uid; needs root, openssl, nft, setpriv) in a private
# network namespace (only lo, brought up) under a hard kill timeout.
#   RAKOR_BIN=path      the rakor binary [default: ../../target/release/rakor, relative to this script]
#   E2E_TIMEOUT_S=1080  hard limit for the whole run (SIGKILL)
#   E2E_NO_NETNS=1      run without unshare (not root / no CAP_SYS_ADMIN); Chromium may then
#                       pair ICE on another interface than loopback (turn443.mjs then needs
#                       root and changes this machine's nftables: table inet rakor_turn443)
# Output: PASS/FAIL lines, then exactly one "<N> passed, <M> failed" for both scenarios (each
# scenario's own summary is shown as "- subtotal (...)"); exit 0 only if M=0 and N>0.
# Screenshots and logs land in tests/browser/out/.
set -eu
cd "$(dirname "$0")"
HERE=$(pwd)
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
TIMEOUT_S="${E2E_TIMEOUT_S:-1080}"
RAKOR_BIN="${RAKOR_BIN:-$HERE/../../target/release/rakor}"
case "$RAKOR_BIN" in /*) ;; *) RAKOR_BIN="$(pwd)/$RAKOR_BIN" ;; esac
# The page exposes window.rakorTest only with this explicit switch (see crates/server/src/web.rs).
RAKOR_TEST_HOOKS=1
export RAKOR_BIN CHROMIUM RAKOR_TEST_HOOKS

mkdir -p out
if [ ! -x "$RAKOR_BIN" ]; then
  echo "FAIL setup (0 ms): rakor binary not found at $RAKOR_BIN (build it: cargo build --release --bin rakor)"
  echo "0 passed, 1 failed"
  exit 1
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "run.sh: installing Debian chromium (Playwright's own browser download does not work here)"
  apt-get -o DPkg::Lock::Timeout=300 update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium >/dev/null
fi
if ! command -v openssl >/dev/null 2>&1 || ! command -v nft >/dev/null 2>&1; then
  echo "run.sh: installing openssl and nftables (turn443.mjs)"
  apt-get -o DPkg::Lock::Timeout=300 update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq openssl nftables >/dev/null
fi
if [ ! -d node_modules/playwright-core ]; then
  echo "run.sh: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ -n "${E2E_NO_NETNS:-}" ]; then
  set -- timeout -s KILL "$TIMEOUT_S" sh -c 'node scenario.mjs; a=$?; node console.mjs; b=$?; node present.mjs; c=$?; node screen.mjs; d=$?; node turn443.mjs; e=$?; [ $a -eq 0 ] && [ $b -eq 0 ] && [ $c -eq 0 ] && [ $d -eq 0 ] && [ $e -eq 0 ]'
else
  if ! unshare --net true 2>/dev/null; then
    echo "run.sh: 'unshare --net' not permitted (need root); set E2E_NO_NETNS=1 to run without it" >&2
    exit 2
  fi
  # --pid --fork --kill-child: if timeout kills us, the kernel kills every process in the
  # namespace (node, chromium, rakor) - nothing is left behind.
  set -- timeout -s KILL "$TIMEOUT_S" unshare --net --pid --fork --kill-child --mount-proc \
    sh -c 'ip link set lo up && { node scenario.mjs; a=$?; node console.mjs; b=$?; node present.mjs; c=$?; node screen.mjs; d=$?; node turn443.mjs; e=$?; [ $a -eq 0 ] && [ $b -eq 0 ] && [ $c -eq 0 ] && [ $d -eq 0 ] && [ $e -eq 0 ]; }'
fi

# Keep a log; each scenario's own summary becomes a subtotal, and one total line follows.
{ "$@" 2>&1 && echo 0 >out/rc || echo $? >out/rc; } \
  | sed -u -E 's/^([0-9]+ passed, [0-9]+ failed)$/- subtotal (\1)/' | tee out/run.log
rc=$(cat out/rc)
p=$(grep -c '^PASS ' out/run.log || true); f=$(grep -c '^FAIL ' out/run.log || true)
parts=$(grep -c '^- subtotal (' out/run.log || true)
if [ "$parts" -lt 5 ]; then
  echo "FAIL run: a scenario printed no summary (exit $rc; 137 = killed after ${TIMEOUT_S}s)"
  f=$((f + 1))
fi
if [ "$f" -gt 0 ] && [ "$rc" -eq 0 ]; then rc=1; fi
echo "$p passed, $f failed"
exit "$rc"
