#!/usr/bin/env bash
# Provision the local control plane's binaries into a per-version user cache:
#   etcd                     from Debian's etcd-server package
#   kubectl                  v1.20.2 from Debian's kubernetes-client package, unpacked into the cache (not
#                            installed: the machine may already have another kubectl in /usr/bin)
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#                            v1.20.2, built from Debian's kubernetes source package with Debian's golang-go
#
# Idempotent: a binary already in the cache is not rebuilt. Prints the cache directory on its last line.
# Needs root (or passwordless sudo) for apt-get; the Go build itself runs as the calling user.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.20.2}"
CACHE_ROOT="${KSERVE_PY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kserve-py}"
DEST="$CACHE_ROOT/k8s/v$K8S_VERSION"
WANT=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

source "$(dirname "$0")/lib.sh"

mkdir -p "$DEST"

# etcd: Debian ships it in /usr/bin; link it into the cache so one directory holds the whole set.
if [ ! -x "$DEST/etcd" ]; then
  apt_install etcd-server
  ln -sf "$(command -v etcd || echo /usr/bin/etcd)" "$DEST/etcd"
fi

# Bumped whenever the build recipe changes, so binaries cached by an older recipe are rebuilt.
BUILD_REV=2
if [ "$(cat "$DEST/.build-rev" 2>/dev/null)" != "$BUILD_REV" ]; then
  for b in "${WANT[@]}"; do rm -f "$DEST/$b"; done
fi

# kubectl: unpack Debian's kubernetes-client .deb into the cache; installing it could clash with a kubectl
# the machine already has, and tests want exactly this version (its built-in kustomize is what they exercise).
if [ ! -x "$DEST/kubectl" ]; then
  apt_install dpkg-dev
  unpack=$(mktemp -d)
  if ! (cd "$unpack" && apt-get download -qq kubernetes-client >&2); then
    $SUDO apt-get update -qq
    (cd "$unpack" && apt-get download -qq kubernetes-client >&2)
  fi
  dpkg -x "$unpack"/kubernetes-client_*.deb "$unpack/root"
  install -m 0755 "$unpack/root/usr/bin/kubectl" "$DEST/kubectl"
  rm -rf "$unpack"
fi

need_build=0
for b in "${WANT[@]}"; do [ -x "$DEST/$b" ] || need_build=1; done

if [ "$need_build" = 1 ]; then
  apt_install golang-go rsync jq dpkg-dev ca-certificates golang-github-modern-go-reflect2-dev
  # apt-get source needs a deb-src entry: derive it from the machine's deb entries.
  if ! apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes'; then
    log "adding deb-src entries derived from the deb entries"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
      sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
        | $SUDO tee /etc/apt/sources.list.d/kserve-py-deb-src.sources >/dev/null
    fi
    if [ -f /etc/apt/sources.list ]; then
      grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
        | $SUDO tee /etc/apt/sources.list.d/kserve-py-deb-src.list >/dev/null || true
    fi
    $SUDO apt-get update -qq
  fi
  work="$CACHE_ROOT/src"
  mkdir -p "$work"
  src_dir=$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
  if [ -z "$src_dir" ]; then
    log "apt-get source kubernetes"
    (cd "$work" && apt-get source -qq kubernetes >&2)
    src_dir=$(find "$work" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
  fi
  [ -n "$src_dir" ] || { log "kubernetes source not found after apt-get source"; exit 1; }
  # Kubernetes 1.20 vendors modern-go/reflect2 v1.0.1, whose map iteration segfaults when built with
  # Go >= 1.18 (kube-apiserver crashes on e.g. server-side apply). Swap in Debian's API-compatible 1.0.2.
  vendored="$src_dir/vendor/github.com/modern-go/reflect2"
  if [ ! -f "$vendored/go_above_118.go" ]; then
    log "replacing vendored modern-go/reflect2 with Debian's fixed version"
    rm -rf "$vendored"
    mkdir -p "$vendored"
    find /usr/share/gocode/src/github.com/modern-go/reflect2 -maxdepth 1 -type f \
      \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$vendored/" \;
  fi
  for b in "${WANT[@]}"; do
    [ -x "$DEST/$b" ] && continue
    log "building $b in $src_dir (several minutes)"
    # KUBE_GIT_VERSION stamps the version the binary reports; Debian's tarball has no .git.
    (cd "$src_dir" && KUBE_GIT_VERSION="v$K8S_VERSION" KUBE_GIT_TREE_STATE=clean \
       GOFLAGS=-mod=vendor GO111MODULE=on make WHAT="cmd/$b" >&2)
    built=$(find "$src_dir/_output" -type f -name "$b" -perm -u+x | head -n1)
    [ -n "$built" ] || { log "build of $b produced no binary"; exit 1; }
    install -m 0755 "$built" "$DEST/$b"
  done
  rm -rf "$work"
  echo "$BUILD_REV" > "$DEST/.build-rev"
fi

for b in etcd kubectl "${WANT[@]}"; do [ -x "$DEST/$b" ] || { log "missing $DEST/$b"; exit 1; }; done
echo "$DEST"
