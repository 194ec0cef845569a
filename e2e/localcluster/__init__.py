"""A real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) for tests and dev.

See ``cluster.LocalCluster`` for the lifecycle, ``apply.apply_manifests`` to install manifests and
``binaries`` for where the binaries come from.
"""

from e2e.localcluster.apply import ApplyError, apply_manifests
from e2e.localcluster.cluster import LocalCluster, LocalClusterError

__all__ = ["ApplyError", "LocalCluster", "LocalClusterError", "apply_manifests"]
