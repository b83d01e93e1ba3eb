#!/bin/bash
# Build a Rakor container image FROM scratch out of a release binary built on this machine
# (no registry needed: the image holds the binary, the shared libraries `ldd` names, the CA
# bundle and a passwd entry for uid 10001), then optionally start it and check /healthz.
# For hosts that cannot pull docker.io (config/Containerfile needs rust:1-bookworm and
# debian:bookworm-slim from there).
#   cargo build --release --bin rakor
#   config/container-scratch.sh [TAG]            # build only (default tag: rakor)
#   CHECK=1 config/container-scratch.sh          # build, run on 127.0.0.1:18480, GET /healthz, remove
# Extra `podman run` flags for restricted hosts: PODMAN_RUN_FLAGS (see docs/operations.md; the
# development VM needed `--runtime runc --cgroup-manager=cgroupfs` and low --ulimit values).
set -eu
TAG=${1:-rakor}
BIN=${RAKOR_BIN:-target/release/rakor}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release --bin rakor" >&2; exit 1; }
CTX=$(mktemp -d /tmp/rakor-image.XXXX)
trap 'rm -rf "$CTX"' EXIT
R=$CTX/root
mkdir -p "$R/usr/local/bin" "$R/etc/ssl/certs" "$R/tmp" "$CTX/data"
cp "$BIN" "$R/usr/local/bin/rakor"
# The dynamic loader and every library the binary links (glibc, libgcc_s, libm).
for lib in $(ldd "$BIN" | grep -oE '/[^ ]+\.so[^ ]*'); do
  mkdir -p "$R$(dirname "$lib")"
  cp -L "$lib" "$R$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/" 2>/dev/null || true
chmod 1777 "$R/tmp"
printf 'root:x:0:0::/:/sbin/nologin\nrakor:x:10001:10001::/var/lib/rakor:/sbin/nologin\n' > "$R/etc/passwd"
printf 'root:x:0:\nrakor:x:10001:\n' > "$R/etc/group"
touch "$CTX/data/.keep"
cat > "$CTX/Containerfile" <<'CF'
FROM scratch
COPY root/ /
COPY --chown=10001:10001 data /var/lib/rakor
USER 10001:10001
WORKDIR /var/lib/rakor
ENV RAKOR_SERVER_DATA_DIR=/var/lib/rakor \
    RAKOR_SERVER_LISTEN=0.0.0.0:443 \
    RAKOR_MEDIA_BIND_IP=0.0.0.0
VOLUME ["/var/lib/rakor"]
EXPOSE 443/tcp 7882/udp 7882/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/rakor"]
CMD ["serve"]
CF
podman build -q -t "$TAG" "$CTX"
if [ -n "${CHECK:-}" ]; then
  name=rakor-check-$$
  # Port 443 needs cap_net_bind_service for uid 10001; the check uses a high port.
  # shellcheck disable=SC2086
  podman ${PODMAN_GLOBAL_FLAGS:-} run -d --name "$name" --network host ${PODMAN_RUN_FLAGS:-} \
    -e RAKOR_SERVER_LISTEN=127.0.0.1:18480 -e RAKOR_MEDIA_PORT=0 "$TAG" >/dev/null
  ok=1
  for _ in $(seq 1 50); do
    if curl -fs -m 2 http://127.0.0.1:18480/healthz; then ok=0; echo; break; fi
    sleep 0.2
  done
  podman ${PODMAN_GLOBAL_FLAGS:-} logs "$name" 2>&1 | tail -3
  podman ${PODMAN_GLOBAL_FLAGS:-} rm -f "$name" >/dev/null
  exit $ok
fi
