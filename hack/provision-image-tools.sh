#!/usr/bin/env bash
# Provision the tools of the offline image pipeline (e2e/images, docs/images.md) from Debian's packages:
#   buildah      builds the images from their Dockerfiles (no Docker engine, no registry)
#   runc         runs buildah's RUN steps (and containerd's containers)
#   debootstrap  builds the Debian base image (with debian-archive-keyring to verify the mirror)
#   gcc          compiles the static pause binary (libc6-dev brings the static libc)
#   containerd   ctr and a throwaway containerd check that archives import with their refs
# unshare (util-linux) and tar are essential packages on Debian and always present.
#
# containerd's packaged service must not run (tests start their own containerd with their own socket),
# so package scripts are told not to start services during the install (policy-rc.d), and the unit is
# stopped and disabled afterwards when the package was installed here.
#
# Idempotent: does nothing when every tool is already on PATH. Needs root (or passwordless sudo).
set -euo pipefail

log() { printf 'provision-image-tools: %s\n' "$*" >&2; }

declare -A PACKAGE_OF=(
  [buildah]=buildah
  [runc]=runc
  [debootstrap]=debootstrap
  [gcc]=gcc
  [containerd]=containerd
  [ctr]=containerd
)

missing=()
for tool in "${!PACKAGE_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$tool]}")
done
# The static C library is a file, not a command.
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || missing+=(libc6-dev)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)

if [ "${#missing[@]}" -eq 0 ]; then
  log "all image tools already installed"
  exit 0
fi
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { log "need root or passwordless sudo for apt-get"; exit 1; }
  SUDO="sudo -n"
fi

POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  OWN_POLICY=1
fi
cleanup() { if [ "$OWN_POLICY" = 1 ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

log "apt-get install ${packages[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2

if printf '%s\n' "${packages[@]}" | grep -qx containerd && command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now containerd.service >/dev/null 2>&1 || true
fi

for tool in "${!PACKAGE_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { log "$tool still missing after the install"; exit 1; }
done
log "installed ${packages[*]}"
