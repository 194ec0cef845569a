#!/usr/bin/env bash
# Provision Prometheus for the qpext tests: Debian's `prometheus` package gives /usr/bin/prometheus and
# /usr/bin/promtool. The tests start their own server on a free loopback port with their own config and
# a temporary TSDB directory, so the packaged service must not run (hack/lib.sh keeps it from starting and
# disables it).
#
# Idempotent: does nothing when both binaries are already on PATH. Needs root (or passwordless sudo).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  log "prometheus and promtool already installed: $(command -v prometheus)"
  exit 0
fi

apt_install prometheus
disable_service prometheus

for bin in prometheus promtool; do
  command -v "$bin" >/dev/null 2>&1 || { log "$bin missing after install"; exit 1; }
done
log "installed: $(prometheus --version 2>&1 | head -n 1)"
