"""The end-to-end suite: one set of assertions against a kind cluster or the local control plane.

Run it with `pytest e2e/suite --target local` (offline: the manager and the Knative Serving double run as
processes on a local kube-apiserver) or `pytest e2e/suite --target kind --kubeconfig K` after
`e2e/kind/setup.sh` (real Knative Serving, Istio and cert-manager). See docs/e2e.md.
"""
