"""Pods that cannot serve: each failure reaches the InferenceService as Knative reports it.

KServe copies the Knative Service's `ConfigurationsReady` into `PredictorConfigurationReady`, so the
revision's failure (Knative's `RevisionFailed` with the pod's words) is there, and `Ready` is False. On the
node the Knative double computes the revision's condition from the real pods as Knative v1.10 does; on kind
Knative itself does. A storage-initializer failure is in test_running_pods.py (wrong credentials).
"""

from __future__ import annotations

from typing import Any

import pytest

from apis.resources import INFERENCE_SERVICES
from e2e.suite.env import DeployedEnv, Env
from e2e.suite.support import condition, isvc_when
from manager.client import Client, Object

PROGRESS_DEADLINE = {"serving.knative.dev/progress-deadline": "20s"}
"""Knative reports a waiting container (an image pull that fails) only after the revision's progress
deadline: a short one per revision keeps the test short."""

CASES: dict[str, tuple[dict[str, Any], str]] = {
    "image-missing": ({"runtimeVersion": "e2e-no-such-tag"}, "e2e-no-such-tag"),
    "crash-loop": (
        {"command": ["python3", "-c", "import sys; print('the model server gives up'); sys.exit(3)"]},
        "the model server gives up",
    ),
    "unschedulable": (
        {"resources": {"requests": {"cpu": "64"}, "limits": {"cpu": "64"}}},
        "Insufficient cpu",
    ),
}
"""The model spec change that breaks the pod, and what the revision's failure message must mention."""


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_pod_failure_is_the_predictors_configuration_reason(
    env: Env, admin: Client, namespace: str, case: str
) -> None:
    if not isinstance(env, DeployedEnv):
        pytest.skip("local mode runs no containers: pod failures are verified on the node and on kind")
    change, words = CASES[case]
    isvc = env.isvc(namespace, case, annotations=PROGRESS_DEADLINE)
    isvc["spec"]["predictor"]["model"].update(change)
    await admin.create(INFERENCE_SERVICES, isvc)

    def failed(obj: Object) -> bool:
        return condition(obj, "PredictorConfigurationReady").get("status") == "False"

    done = await isvc_when(admin, namespace, case, failed, env.ready_timeout, "the revision's failure")
    configuration = condition(done, "PredictorConfigurationReady")
    assert configuration["reason"] == "RevisionFailed", configuration
    assert f'Revision "{case}-predictor-00001" failed with message:' in configuration["message"]
    assert words in configuration["message"], configuration
    assert condition(done, "Ready")["status"] == "False"
