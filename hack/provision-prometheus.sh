#!/usr/bin/env bash
# Provision Prometheus for the qpext tests: Debian's `prometheus` package gives /usr/bin/prometheus and
# /usr/bin/promtool. The tests start their own server on a free loopback port with their own config and
# a temporary TSDB directory, so the packaged service must not run: package scripts are told not to start
# it during the install (policy-rc.d), and anything the package left running or enabled is stopped.
#
# Idempotent: does nothing when both binaries are already on PATH. Needs root (or passwordless sudo).
set -euo pipefail

log() { printf 'provision-prometheus: %s\n' "$*" >&2; }

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  log "prometheus and promtool already installed: $(command -v prometheus)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { log "need root or passwordless sudo for apt-get"; exit 1; }
  SUDO="sudo -n"
fi

# Block service starts from maintainer scripts (the standard invoke-rc.d policy hook), only if no policy
# is already in place, and remove ours afterwards whatever happens.
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  OWN_POLICY=1
fi
cleanup() { if [ "$OWN_POLICY" = 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

log "apt-get install prometheus"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >&2

# Make sure the packaged service neither runs nor starts at boot. `systemctl disable` also works without a
# running systemd (it only removes the unit symlinks the package created); sysvinit links likewise.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable prometheus.service >/dev/null 2>&1 || true
  if [ -d /run/systemd/system ]; then $SUDO systemctl stop prometheus.service >/dev/null 2>&1 || true; fi
fi
$SUDO rm -f /etc/systemd/system/multi-user.target.wants/prometheus.service
if command -v update-rc.d >/dev/null 2>&1 && [ -e /etc/init.d/prometheus ]; then
  $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
  $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

for bin in prometheus promtool; do
  command -v "$bin" >/dev/null 2>&1 || { log "$bin missing after install"; exit 1; }
done
log "installed: $(prometheus --version 2>&1 | head -n 1)"
