#!/usr/bin/env bash
# Provision the local node's system tools from Debian packages (the Kubernetes node binaries themselves are
# built by hack/provision-binaries.sh):
#   containerd, runc            the container runtime (CRI) and OCI runtime
#   containernetworking-plugins bridge, host-local, portmap, loopback CNI plugins (/usr/lib/cni)
#   iptables, conntrack         kube-proxy's iptables mode and the CNI bridge's masquerading
#   dnsmasq-base                cluster DNS (fed from Services and Pods by e2e/localcluster/dns.py)
#   iproute2, util-linux        ip, nsenter, unshare, setpriv
# None of them is started as a system service: the local cluster runs them itself, in its own network and
# mount namespace. Idempotent. Needs root (or passwordless sudo).
set -euo pipefail

log() { printf 'provision-node: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { log "need root or sudo for apt-get"; exit 1; }
  SUDO="sudo -n"
fi

PACKAGES=(containerd runc containernetworking-plugins iptables conntrack dnsmasq-base iproute2 util-linux)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  # A system containerd the package may start does not disturb ours: different socket, root and state.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
echo /usr/lib/cni
