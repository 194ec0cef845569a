#!/usr/bin/env bash
# Build the manager and qpext images with docker and load them into a kind cluster's nodes.
#
#   hack/kind-load-images.sh                      # cluster "kserve-py", tag "latest"
#   KIND_CLUSTER=dev TAG=v0.1.0 hack/kind-load-images.sh
#
# config/manager runs kserve-py/manager:latest with imagePullPolicy IfNotPresent, so a loaded image is used
# as is. With another TAG, point the manifests at it (`kustomize edit set image kserve-py/manager=...`).
# QUEUE_IMAGE must be the queue-proxy of the Knative Serving release the cluster runs (see qpext/Dockerfile);
# set Knative's `queue-sidecar-image` (ConfigMap config-deployment) to the loaded qpext image.
set -euo pipefail

KIND_CLUSTER="${KIND_CLUSTER:-kserve-py}"
TAG="${TAG:-latest}"
MANAGER_IMAGE="${MANAGER_IMAGE:-kserve-py/manager:${TAG}}"
QPEXT_IMAGE="${QPEXT_IMAGE:-kserve-py/qpext:${TAG}}"
PYTHON_IMAGE="${PYTHON_IMAGE:-python:3.11.13-slim-bookworm}"
QUEUE_IMAGE="${QUEUE_IMAGE:-gcr.io/knative-releases/knative.dev/serving/cmd/queue:v1.10.2}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

for tool in docker kind; do
  if ! command -v "${tool}" >/dev/null 2>&1; then
    echo "kind-load-images: ${tool} is not installed" >&2
    exit 1
  fi
done
if ! kind get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER}"; then
  echo "kind-load-images: no kind cluster named ${KIND_CLUSTER} (kind get clusters)" >&2
  exit 1
fi

echo "building ${MANAGER_IMAGE}"
docker build --build-arg "PYTHON_IMAGE=${PYTHON_IMAGE}" -t "${MANAGER_IMAGE}" -f "${ROOT}/Dockerfile" "${ROOT}"

echo "building ${QPEXT_IMAGE}"
docker build --build-arg "PYTHON_IMAGE=${PYTHON_IMAGE}" --build-arg "QUEUE_IMAGE=${QUEUE_IMAGE}" \
  -t "${QPEXT_IMAGE}" -f "${ROOT}/qpext/Dockerfile" "${ROOT}"

for image in "${MANAGER_IMAGE}" "${QPEXT_IMAGE}"; do
  echo "loading ${image} into kind cluster ${KIND_CLUSTER}"
  kind load docker-image --name "${KIND_CLUSTER}" "${image}"
done
