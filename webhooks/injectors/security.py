"""The securityContext of the containers the webhook injects (storage-initializer, agent).

KServe v0.11 copies the user's container `securityContext` (kserve-container for the storage initializer,
the first container for the agent) and injects nothing when the user set none. That leaves the injected
containers running with the image's defaults, which the restricted Pod Security Standard rejects, so a
namespace enforcing `restricted` cannot run InferenceServices at all (kserve/kserve#612, #5373).

Deliberate deviation: when the user's container has a securityContext we still copy it verbatim (the user
chose it; e.g. OpenShift SCCs assign UIDs), but when it has none we inject the restricted profile:
`runAsNonRoot`, no privilege escalation, all capabilities dropped, seccomp `RuntimeDefault`. Where the
pod-level securityContext asks otherwise we defer to it: `runAsNonRoot: false` or `runAsUser: 0` drops our
`runAsNonRoot`, and a pod-level `seccompProfile` is inherited instead of overridden.
"""

from __future__ import annotations

from typing import Any

from webhooks.injectors.pod import Container, Pod
from webhooks.json_patch import copy_json

RESTRICTED_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def injected_security_context(pod: Pod, source: Container | None) -> dict[str, Any]:
    """The securityContext for an injected container: a copy of `source`'s, else the restricted profile."""
    if source is not None and source.get("securityContext"):
        copied: dict[str, Any] = copy_json(source["securityContext"])
        return copied
    context: dict[str, Any] = copy_json(RESTRICTED_SECURITY_CONTEXT)
    pod_context = pod["spec"].get("securityContext") or {}
    if pod_context.get("runAsNonRoot") is False or pod_context.get("runAsUser") == 0:
        del context["runAsNonRoot"]
    if pod_context.get("seccompProfile"):
        del context["seccompProfile"]
    return context
