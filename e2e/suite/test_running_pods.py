"""What only shows when pods really run: the model download with injected credentials, a download that fails,
the restricted profile enforced at run time, and a manager killed in the middle of a rollout.

The S3 tests need the offline S3 store of the node target; the others run wherever containers run (node,
kind).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from apis.resources import INFERENCE_SERVICES, KNATIVE_SERVICES, VIRTUAL_SERVICES
from e2e.localcluster.deployment import MODEL_SECRET, MODEL_SERVICE_ACCOUNT, STORE_HOST, STORE_PORT
from e2e.suite.env import DeployedEnv, Env
from e2e.suite.node_env import NodeEnv
from e2e.suite.support import (
    IRIS_INSTANCES,
    condition,
    container,
    env_of,
    isvc_pods,
    isvc_when,
    ready,
    traffic,
    until,
    update_isvc,
)
from manager.client import SECRETS, Client, Object


def node_env(env: Env) -> NodeEnv:
    if not isinstance(env, NodeEnv):
        pytest.skip("needs the node target's S3 store (kind and local use the public sample model)")
    return env


def deployed(env: Env) -> DeployedEnv:
    if not isinstance(env, DeployedEnv):
        pytest.skip("local mode runs no containers")
    return env


async def running_pod(env: Env, admin: Client, namespace: str, name: str) -> Object:
    await ready(admin, namespace, name, env.ready_timeout)
    pods: list[Object] = await until(
        lambda: isvc_pods(admin, namespace, name),
        lambda items: any(p.get("status", {}).get("phase") == "Running" for p in items),
        env.ready_timeout,
        f"a running pod of {name}",
    )
    return next(p for p in pods if p["status"]["phase"] == "Running")


async def test_the_model_is_downloaded_from_s3_with_the_service_accounts_credentials(
    env: Env, admin: Client, namespace: str
) -> None:
    node = node_env(env)
    await admin.create(INFERENCE_SERVICES, node.isvc(namespace, "from-s3"))
    pod = await running_pod(node, admin, namespace, "from-s3")
    assert pod["spec"]["serviceAccountName"] == MODEL_SERVICE_ACCOUNT
    init = container(pod, "storage-initializer", init=True)
    assert init["args"] == [node.model_uri, "/mnt/models"]
    variables = {e["name"]: e for e in init.get("env") or []}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert variables[key]["valueFrom"]["secretKeyRef"] == {"name": MODEL_SECRET, "key": key}
    plain = env_of(init)
    assert plain["S3_ENDPOINT"] == f"{STORE_HOST}:{STORE_PORT}"
    assert plain["AWS_ENDPOINT_URL"] == f"http://{STORE_HOST}:{STORE_PORT}"
    assert plain["S3_USE_HTTPS"] == "0"
    log = await asyncio.to_thread(node.logs, namespace, pod["metadata"]["name"], "storage-initializer")
    assert node.model_uri in log, log
    assert "model.joblib" in log, log
    status, body = await node.predict(admin, namespace, "from-s3", IRIS_INSTANCES)
    assert (status, body) == (200, {"predictions": [1, 1]})


async def test_wrong_credentials_leave_the_inference_service_not_ready_and_say_why(
    env: Env, admin: Client, namespace: str
) -> None:
    node = node_env(env)
    wrong, _ = node.model_access(namespace, key_id="AKIAWRONGWRONGWRONG0", secret="not-the-secret")
    await admin.delete(SECRETS, MODEL_SECRET, namespace)
    await admin.create(SECRETS, wrong, namespace)
    await admin.create(INFERENCE_SERVICES, node.isvc(namespace, "denied"))

    def failed(obj: Object) -> bool:
        info = ((obj.get("status") or {}).get("modelStatus") or {}).get("lastFailureInfo") or {}
        return info.get("reason") == "ModelLoadFailed" and condition(obj, "Ready").get("status") == "False"

    isvc = await isvc_when(admin, namespace, "denied", failed, node.ready_timeout, "the download failure")
    message = isvc["status"]["modelStatus"]["lastFailureInfo"]["message"]
    assert "InvalidAccessKeyId" in message or "403" in message, message
    assert isvc["status"]["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"
    pods = await isvc_pods(admin, namespace, "denied")
    statuses = pods[0]["status"].get("initContainerStatuses") or []
    init = next(s for s in statuses if s["name"] == "storage-initializer")
    assert (init.get("lastState") or {}).get("terminated") or (init.get("state") or {}).get("terminated")


async def test_the_restricted_profile_is_enforced_in_the_running_model_container(
    env: Env, admin: Client, namespace: str
) -> None:
    running = deployed(env)
    await admin.create(INFERENCE_SERVICES, running.isvc(namespace, "restricted"))
    pod = await running_pod(running, admin, namespace, "restricted")
    probe = "import os\nprint(os.getuid())\nprint(open('/proc/self/status').read())"
    out = await asyncio.to_thread(
        running.pod_exec, namespace, pod["metadata"]["name"], "kserve-container", "python3", "-c", probe
    )
    lines = out.splitlines()
    fields = dict(line.split(":\t", 1) for line in lines[1:] if ":\t" in line)
    assert lines[0] != "0", "the model server runs as root"
    assert fields["CapEff"].strip() == "0000000000000000"
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"


async def test_killing_the_manager_mid_rollout_loses_nothing_and_doubles_nothing(
    env: Env, admin: Client, namespace: str
) -> None:
    running = deployed(env)
    await admin.create(INFERENCE_SERVICES, running.isvc(namespace, "rolling"))
    await ready(admin, namespace, "rolling", env.ready_timeout)

    def canary(obj: Object) -> None:
        obj["spec"]["predictor"]["canaryTrafficPercent"] = 20
        obj["spec"]["predictor"]["model"].setdefault("env", []).append({"name": "ROLLOUT", "value": "2"})

    await update_isvc(admin, namespace, "rolling", canary)
    old, new = await running.fail_over(admin)
    assert old != new
    split = [("rolling-predictor-00001", 80, False, "prev"), ("rolling-predictor-00002", 20, True, None)]
    done = await isvc_when(
        admin,
        namespace,
        "rolling",
        lambda o: traffic(o) == split and condition(o, "Ready").get("status") == "True",
        env.ready_timeout,
        "the 80/20 canary, Ready, after the failover",
    )
    assert done["status"]["components"]["predictor"]["latestCreatedRevision"] == "rolling-predictor-00002"
    ksvc = await admin.get(KNATIVE_SERVICES, "rolling-predictor", namespace)
    # Two spec changes of the InferenceService: exactly two writes of the Knative Service's spec.
    assert ksvc["metadata"]["generation"] == 2, json.dumps(ksvc["metadata"])
    vs = await admin.get(VIRTUAL_SERVICES, "rolling", namespace)
    assert vs["metadata"]["generation"] == 1
    for revision in ("rolling-predictor-00001", "rolling-predictor-00002"):
        status, body = await running.predict(admin, namespace, "rolling", IRIS_INSTANCES, revision=revision)
        assert (status, body) == (200, {"predictions": [1, 1]}), revision
