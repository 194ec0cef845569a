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

source "$(dirname "$0")/lib.sh"

apt_install containerd runc containernetworking-plugins iptables conntrack dnsmasq-base iproute2 util-linux
# The node starts its own containerd with its own root and socket; the packaged one is not needed.
disable_service containerd
echo /usr/lib/cni
