#!/usr/bin/env bash
# Create a kind cluster with cert-manager, Istio and Knative Serving (net-istio), build and load our images,
# deploy config/default with them, and wait until the manager serves. Versions follow KServe v0.11's CI
# (Istio 1.18.2, Knative Serving 1.10.2) except cert-manager (v1.12, the oldest line that supports
# Kubernetes 1.27; v0.11's CI used v1.5.0).
#
#   e2e/kind/setup.sh                    # cluster "kserve-py"; kubeconfig in $ARTIFACTS_DIR/kind.kubeconfig
#   KIND_CLUSTER=x ARTIFACTS_DIR=/tmp/e2e e2e/kind/setup.sh
#
# Needs docker, kind (>= v0.20.0), kubectl (>= 1.27), curl, tar, sha256sum. Never touches ~/.kube/config.
# On any failure the cluster state and logs are written to $ARTIFACTS_DIR/setup-failure/.
# errtrace: the ERR trap (diagnostics) must fire inside functions too.
set -Eeuo pipefail

# ----- pinned versions ----------------------------------------------------------------------------------
CERT_MANAGER_VERSION="v1.12.3"
ISTIO_VERSION="1.18.2"
KNATIVE_SERVING_VERSION="knative-v1.10.2"
NET_ISTIO_VERSION="knative-v1.10.0"
KIND_MIN_VERSION="0.20.0"

# ----- settings -----------------------------------------------------------------------------------------
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KIND_CLUSTER="${KIND_CLUSTER:-kserve-py}"
ARTIFACTS_DIR="${ARTIFACTS_DIR:-${TMPDIR:-/tmp}/kserve-py-e2e}"
KUBECONFIG_OUT="${KUBECONFIG_OUT:-${ARTIFACTS_DIR}/kind.kubeconfig}"
TOOLS_DIR="${TOOLS_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/kserve-py/e2e-tools}"
TAG="${TAG:-latest}"
MANAGER_IMAGE="${MANAGER_IMAGE:-kserve-py/manager:${TAG}}"
QPEXT_IMAGE="${QPEXT_IMAGE:-kserve-py/qpext:${TAG}}"
QUEUE_IMAGE="${QUEUE_IMAGE:-gcr.io/knative-releases/knative.dev/serving/cmd/queue:v1.10.2}"
KNATIVE_DOMAIN="${KNATIVE_DOMAIN:-example.com}"
WAIT="${WAIT:-300s}"

KNATIVE_URL="https://github.com/knative/serving/releases/download/${KNATIVE_SERVING_VERSION}"
NET_ISTIO_URL="https://github.com/knative/net-istio/releases/download/${NET_ISTIO_VERSION}"
CERT_MANAGER_URL="https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  collect_logs
  exit 1
}

k() { kubectl --kubeconfig "${KUBECONFIG_OUT}" "$@"; }
# A release manifest by URL: fetched with a time bound (kubectl's own URL fetch has none), then applied.
apply_url() { curl --fail --silent --show-error --location --retry 3 --max-time 120 "$1" | k apply -f -; }

collect_logs() {
  local out="${ARTIFACTS_DIR}/setup-failure"
  mkdir -p "${out}"
  log "collecting diagnostics into ${out}"
  [[ -f "${KUBECONFIG_OUT}" ]] || return 0
  k get all -A -o wide >"${out}/get-all.txt" 2>&1 || true
  k get events -A --sort-by=.lastTimestamp >"${out}/events.txt" 2>&1 || true
  k describe pods -A >"${out}/describe-pods.txt" 2>&1 || true
  k get inferenceservices,ksvc,virtualservices,certificates -A -o yaml >"${out}/resources.yaml" 2>&1 || true
  k -n kserve logs deployment/kserve-controller-manager --all-containers --tail=2000 \
    >"${out}/manager.log" 2>&1 || true
  k -n kserve logs deployment/kserve-controller-manager --all-containers --previous --tail=2000 \
    >"${out}/manager-previous.log" 2>&1 || true
  kind export logs --name "${KIND_CLUSTER}" "${out}/kind" >/dev/null 2>&1 || true
}

on_error() {
  local code=$? line=$1
  log "failed at line ${line} (exit ${code})"
  collect_logs
  exit "${code}"
}
trap 'on_error ${LINENO}' ERR

require_tools() {
  local tool
  for tool in docker kind kubectl curl tar sha256sum; do
    command -v "${tool}" >/dev/null 2>&1 || die "${tool} is not installed"
  done
  local kind_version
  kind_version="$(kind version | sed -E 's/^kind v([0-9.]+).*/\1/')"
  if [[ "$(printf '%s\n%s\n' "${KIND_MIN_VERSION}" "${kind_version}" | sort -V | head -n1)" != "${KIND_MIN_VERSION}" ]]; then
    die "kind ${kind_version} is older than ${KIND_MIN_VERSION}"
  fi
}

arch() {
  case "$(uname -m)" in
    x86_64 | amd64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) die "unsupported architecture $(uname -m)" ;;
  esac
}

# istioctl from the release tarball, verified against the published SHA-256, cached per version.
istioctl_path() {
  local dir="${TOOLS_DIR}/istio-${ISTIO_VERSION}"
  local bin="${dir}/bin/istioctl"
  if [[ ! -x "${bin}" ]]; then
    local tarball="istio-${ISTIO_VERSION}-linux-$(arch).tar.gz"
    local url="https://github.com/istio/istio/releases/download/${ISTIO_VERSION}/${tarball}"
    mkdir -p "${TOOLS_DIR}"
    log "downloading ${tarball}"
    curl --fail --silent --show-error --location --retry 3 --max-time 300 -o "${TOOLS_DIR}/${tarball}" "${url}"
    curl --fail --silent --show-error --location --retry 3 --max-time 60 -o "${TOOLS_DIR}/${tarball}.sha256" \
      "${url}.sha256"
    (cd "${TOOLS_DIR}" && sha256sum --check --status "${tarball}.sha256") || die "checksum mismatch: ${tarball}"
    tar -xzf "${TOOLS_DIR}/${tarball}" -C "${TOOLS_DIR}"
  fi
  echo "${bin}"
}

create_cluster() {
  if kind get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER}"; then
    log "kind cluster ${KIND_CLUSTER} exists; reusing it"
    kind get kubeconfig --name "${KIND_CLUSTER}" >"${KUBECONFIG_OUT}"
  else
    log "creating kind cluster ${KIND_CLUSTER}"
    kind create cluster --name "${KIND_CLUSTER}" --config "${ROOT}/e2e/kind/kind-config.yaml" \
      --kubeconfig "${KUBECONFIG_OUT}" --wait "${WAIT}"
  fi
  k wait --for=condition=Ready nodes --all --timeout="${WAIT}"
}

install_cert_manager() {
  log "installing cert-manager ${CERT_MANAGER_VERSION}"
  apply_url "${CERT_MANAGER_URL}/cert-manager.yaml"
  k -n cert-manager rollout status deployment/cert-manager --timeout="${WAIT}"
  k -n cert-manager rollout status deployment/cert-manager-cainjector --timeout="${WAIT}"
  k -n cert-manager rollout status deployment/cert-manager-webhook --timeout="${WAIT}"
}

install_istio() {
  local istioctl
  istioctl="$(istioctl_path)"
  log "installing Istio ${ISTIO_VERSION}"
  # The default profile: istiod and istio-ingressgateway (NodePort on kind: no LoadBalancer there).
  "${istioctl}" --kubeconfig "${KUBECONFIG_OUT}" install -y --set profile=default \
    --set values.gateways.istio-ingressgateway.type=NodePort
  k -n istio-system rollout status deployment/istiod --timeout="${WAIT}"
  k -n istio-system rollout status deployment/istio-ingressgateway --timeout="${WAIT}"
  k apply -f - <<'YAML'
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: istio
spec:
  controller: istio.io/ingress-controller
YAML
}

install_knative() {
  log "installing Knative Serving ${KNATIVE_SERVING_VERSION} and net-istio ${NET_ISTIO_VERSION}"
  apply_url "${KNATIVE_URL}/serving-crds.yaml"
  k wait --for=condition=Established crd/services.serving.knative.dev --timeout="${WAIT}"
  apply_url "${KNATIVE_URL}/serving-core.yaml"
  apply_url "${NET_ISTIO_URL}/net-istio.yaml"
  # Knative's default domain is example.com in KServe's CI too; URLs in the suite assume it.
  k -n knative-serving patch configmap/config-domain --type merge \
    -p "{\"data\":{\"${KNATIVE_DOMAIN}\":\"\"}}"
  k -n knative-serving patch configmap/config-network --type merge \
    -p '{"data":{"ingress-class":"istio.ingress.networking.knative.dev"}}'
  # qpext replaces queue-proxy (KServe's metrics aggregation); the image is loaded into the nodes, so
  # Knative must not try to resolve its tag against a registry.
  k -n knative-serving patch configmap/config-deployment --type merge \
    -p "{\"data\":{\"queue-sidecar-image\":\"${QPEXT_IMAGE}\",\"registries-skipping-tag-resolving\":\"kind.local,ko.local,dev.local,kserve-py\"}}"
  k -n knative-serving wait --for=condition=Available deployment --all --timeout="${WAIT}"
}

load_images() {
  log "building and loading ${MANAGER_IMAGE} and ${QPEXT_IMAGE}"
  KIND_CLUSTER="${KIND_CLUSTER}" TAG="${TAG}" MANAGER_IMAGE="${MANAGER_IMAGE}" QPEXT_IMAGE="${QPEXT_IMAGE}" \
    QUEUE_IMAGE="${QUEUE_IMAGE}" bash "${ROOT}/hack/kind-load-images.sh"
}

# config/default with our image, through a throw-away overlay (nothing generated is written into the repo).
deploy_kserve() {
  local overlay="${ARTIFACTS_DIR}/overlay"
  local name="${MANAGER_IMAGE%:*}" tag="${MANAGER_IMAGE##*:}" base
  mkdir -p "${overlay}"
  # kustomize resolves resources relative to the overlay.
  base="$(realpath --relative-to="${overlay}" "${ROOT}/config/default")"
  cat >"${overlay}/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ${base}
images:
  - name: kserve-py/manager
    newName: ${name}
    newTag: ${tag}
YAML
  log "deploying config/default with ${MANAGER_IMAGE}"
  # CRDs first so the ClusterServingRuntimes of the same build find their kind.
  k apply --server-side --force-conflicts -k "${ROOT}/config/crd"
  k wait --for=condition=Established crd --all --timeout="${WAIT}"
  k apply --server-side --force-conflicts -k "${overlay}"
  k -n kserve wait --for=condition=Ready certificate --all --timeout="${WAIT}"
  k -n kserve rollout status deployment/kserve-controller-manager --timeout="${WAIT}"
  wait_for_webhooks
}

# Ready pods are not enough: the API server must reach the webhooks and trust the injected CA.
wait_for_webhooks() {
  local deadline=$((SECONDS + 180))
  until k apply --dry-run=server -f - >/dev/null 2>"${ARTIFACTS_DIR}/webhook-probe.err" <<'YAML'
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: webhook-probe
  namespace: kserve
spec:
  predictor:
    model:
      modelFormat:
        name: sklearn
      storageUri: gs://kfserving-examples/models/sklearn/1.0/model
YAML
  do
    if ((SECONDS > deadline)); then
      die "the InferenceService webhooks do not answer: $(head -n1 "${ARTIFACTS_DIR}/webhook-probe.err")"
    fi
    sleep 3
  done
  log "webhooks answer"
}

main() {
  mkdir -p "${ARTIFACTS_DIR}"
  require_tools
  create_cluster
  install_cert_manager
  install_istio
  install_knative
  load_images
  deploy_kserve
  log "ready: KUBECONFIG=${KUBECONFIG_OUT}"
}

main "$@"
