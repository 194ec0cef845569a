"""GKE accelerator node selector (KServe's `InjectGKEAcceleratorSelector`, first in the injector order).

GKE schedules GPU pods onto the right node pool only through the `cloud.google.com/gke-accelerator` node
selector; InferenceService users name the accelerator type with an annotation instead of editing the pod.
Setting a map key is naturally idempotent.
"""

from __future__ import annotations

from apis.constants import GKE_ACCELERATOR_ANNOTATION
from webhooks.injectors.pod import Pod, containers, get_annotations

GKE_ACCELERATOR_NODE_SELECTOR = "cloud.google.com/gke-accelerator"
NVIDIA_GPU_RESOURCE = "nvidia.com/gpu"


def inject_accelerator_selector(pod: Pod) -> None:
    """Add the node selector when the annotation is set and a container limits `nvidia.com/gpu`."""
    accelerator = get_annotations(pod).get(GKE_ACCELERATOR_ANNOTATION)
    if accelerator is None:
        return
    wants_gpu = any(
        NVIDIA_GPU_RESOURCE in ((container.get("resources") or {}).get("limits") or {})
        for container in containers(pod)
    )
    if wants_gpu:
        spec = pod["spec"]
        if spec.get("nodeSelector") is None:
            spec["nodeSelector"] = {}
        spec["nodeSelector"][GKE_ACCELERATOR_NODE_SELECTOR] = accelerator
