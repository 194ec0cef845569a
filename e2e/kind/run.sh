#!/usr/bin/env bash
# The e2e suite on kind: e2e/kind/setup.sh, then `pytest e2e/suite --target kind` against that cluster.
#
#   e2e/kind/run.sh                      # set up (or reuse) cluster "kserve-py", run, keep the cluster
#   SKIP_SETUP=1 e2e/kind/run.sh         # run against an existing set-up (KUBECONFIG_OUT must exist)
#   TEARDOWN=1 e2e/kind/run.sh           # delete the cluster afterwards, pass or fail (CI)
#   e2e/kind/run.sh -k canary            # extra arguments go to pytest
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export KIND_CLUSTER="${KIND_CLUSTER:-kserve-py}"
export ARTIFACTS_DIR="${ARTIFACTS_DIR:-${TMPDIR:-/tmp}/kserve-py-e2e}"
export KUBECONFIG_OUT="${KUBECONFIG_OUT:-${ARTIFACTS_DIR}/kind.kubeconfig}"
PYTHON="${PYTHON:-${ROOT}/.venv/bin/python}"
# Bounds the whole pytest run (pytest-timeout bounds each test).
SUITE_TIMEOUT="${SUITE_TIMEOUT:-3600}"

cleanup() {
  if [[ "${TEARDOWN:-0}" == "1" ]]; then
    bash "${ROOT}/e2e/kind/teardown.sh" || true
  fi
}
trap cleanup EXIT

[[ -x "${PYTHON}" ]] || { echo "run: ${PYTHON} not found (make venv, or set PYTHON)" >&2; exit 1; }
mkdir -p "${ARTIFACTS_DIR}"

if [[ "${SKIP_SETUP:-0}" != "1" ]]; then
  bash "${ROOT}/e2e/kind/setup.sh"
fi
[[ -f "${KUBECONFIG_OUT}" ]] || { echo "run: no kubeconfig at ${KUBECONFIG_OUT}" >&2; exit 1; }

cd "${ROOT}"
timeout "${SUITE_TIMEOUT}" "${PYTHON}" -m pytest e2e/suite --target=kind --kubeconfig="${KUBECONFIG_OUT}" \
  --artifacts-dir="${ARTIFACTS_DIR}/pytest" --timeout=900 -p no:cacheprovider -rfEs "$@"
