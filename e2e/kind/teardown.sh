#!/usr/bin/env bash
# Delete the kind cluster e2e/kind/setup.sh created (idempotent).
#
#   e2e/kind/teardown.sh                 # cluster "kserve-py"
#   KIND_CLUSTER=x e2e/kind/teardown.sh
set -euo pipefail

KIND_CLUSTER="${KIND_CLUSTER:-kserve-py}"

if ! command -v kind >/dev/null 2>&1; then
  echo "teardown: kind is not installed" >&2
  exit 1
fi
if kind get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER}"; then
  kind delete cluster --name "${KIND_CLUSTER}"
else
  echo "teardown: no kind cluster named ${KIND_CLUSTER}" >&2
fi
