"""KServe's runtime defaults, checked on the admitted revision pod of a TorchServe InferenceService.

The shipped `kserve-torchserve` runtime passes `TS_SERVICE_ENVELOPE: "{{.Labels.serviceEnvelope}}"` to its
server; only the controller's TorchServe defaults give the InferenceService that label (`kserve` for v1,
`kservev2` for v2), and they add `PROTOCOL_VERSION`. Whatever the target, the revision pod goes through the
API server and the pod webhook, so what is asserted here is what the kubelet is asked to run. The TorchServe
image itself is not available offline, so the pod is checked, not a prediction.
"""

from __future__ import annotations

import json

import pytest

from apis.resources import INFERENCE_SERVICES
from e2e.suite.env import Env
from e2e.suite.support import container, env_of, isvc_pods, until
from manager.client import Client, Object

TORCHSERVE_IMAGE = "pytorch/torchserve-kfs:0.8.2"


def pytorch_isvc(env: Env, namespace: str, name: str, protocol: str | None) -> Object:
    """This target's model InferenceService, served as a `pytorch` model (so by kserve-torchserve)."""
    obj = env.isvc(namespace, name)
    model = obj["spec"]["predictor"]["model"]
    model["modelFormat"] = {"name": "pytorch"}
    if protocol is not None:
        model["protocolVersion"] = protocol
    return obj


@pytest.mark.parametrize(
    ("protocol", "envelope", "protocol_env"), [(None, "kserve", "v1"), ("v2", "kservev2", "v2")]
)
async def test_torchserve_revision_pod_carries_the_service_envelope(
    env: Env, admin: Client, namespace: str, protocol: str | None, envelope: str, protocol_env: str
) -> None:
    name = f"torch-{protocol_env}"
    await admin.create(INFERENCE_SERVICES, pytorch_isvc(env, namespace, name, protocol))
    pods: list[Object] = await until(
        lambda: isvc_pods(admin, namespace, name), bool, env.ready_timeout, f"a revision pod of {name}"
    )
    pod = pods[0]
    model = container(pod, "kserve-container")
    assert model["image"] == TORCHSERVE_IMAGE
    assert model["args"][:2] == ["torchserve", "--start"]
    variables = env_of(model)
    assert variables["TS_SERVICE_ENVELOPE"] == envelope
    assert variables["PROTOCOL_VERSION"] == protocol_env
    rendered = json.dumps(model)
    assert "{{" not in rendered
    assert "<no value>" not in rendered
    assert pod["metadata"]["labels"]["serviceEnvelope"] == envelope
    assert pod["metadata"]["annotations"]["prometheus.kserve.io/port"] == "8082"
    # The label lives on the children only: the InferenceService itself is not rewritten, as in KServe.
    isvc = await admin.get(INFERENCE_SERVICES, name, namespace)
    assert "serviceEnvelope" not in (isvc["metadata"].get("labels") or {})
