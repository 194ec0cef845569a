#!/usr/bin/env bash
# Provision the tools of the offline image pipeline (e2e/images, docs/images.md) from Debian's packages:
#   buildah      builds the images from their Dockerfiles (no Docker engine, no registry)
#   runc         runs buildah's RUN steps (and containerd's containers)
#   debootstrap  builds the Debian base image (with debian-archive-keyring to verify the mirror)
#   gcc          compiles the static pause binary (libc6-dev brings the static libc)
#   containerd   ctr and a throwaway containerd check that archives import with their refs
# unshare (util-linux) and tar are essential packages on Debian and always present.
#
# containerd's packaged service must not run (tests start their own containerd with their own socket):
# hack/lib.sh keeps it from starting and disables it.
#
# Idempotent: does nothing when every tool is already on PATH. Needs root (or passwordless sudo).
set -euo pipefail

source "$(dirname "$0")/lib.sh"

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
apt_install "${packages[@]}"
disable_service containerd

for tool in "${!PACKAGE_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || { log "$tool still missing after the install"; exit 1; }
done
log "installed ${packages[*]}"
