"""The TrainedModel controller on a real API server: models.json, conditions, URLs, memory, deletion, events.

Only the TrainedModel controller runs (in-process, on a `Manager`); the parent InferenceService is written
directly with the status the InferenceService controller would give it, and its model ConfigMap is created
by `ensure_model_config`, the function that controller calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from apis.inferenceservice import InferenceService
from apis.resources import INFERENCE_SERVICES, TRAINED_MODELS
from controllers.trainedmodel import setup_trainedmodel_controller
from e2e.localcluster.apply import apply_manifests
from e2e.localcluster.cluster import LocalCluster
from manager.cache import Cache
from manager.client import CONFIGMAPS, EVENTS, Client, Object, load_client
from manager.errors import NotFound
from manager.manager import Manager
from manager.metrics import Metrics
from manager.options import ManagerOptions
from reconcilers.modelconfig import ensure_model_config

REPO = Path(__file__).resolve().parents[2]
CRDS = [
    REPO / "config/crd/serving.kserve.io_inferenceservices.yaml",
    REPO / "config/crd/serving.kserve.io_trainedmodels.yaml",
]
HANG_GUARD = 30.0
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
ALLOCATED = "serving.kserve.io/trainedmodel-allocated"


@pytest.fixture(scope="module")
def crds(local_cluster: LocalCluster) -> None:
    apply_manifests(local_cluster.kubeconfig_path, CRDS)


@dataclass
class Harness:
    """The test's own client (its requests are not counted) and the manager under test."""

    client: Client
    manager: Manager
    namespace: str

    async def until(
        self, probe: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], what: str = "condition"
    ) -> Any:
        """Poll until `check` holds; the deadline only guards against a hang."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_GUARD
        while True:
            value = await probe()
            if check(value):
                return value
            assert loop.time() < deadline, f"{what} not reached; last seen: {value}"
            await asyncio.sleep(0.05)

    async def create_isvc(
        self, name: str, *, ready: bool = True, limit: str = "1Gi", protocol: str | None = None
    ) -> Object:
        sklearn: Object = {"resources": {"limits": {"memory": limit}}}
        if protocol:
            sklearn["protocolVersion"] = protocol
        body: Object = {
            "apiVersion": INFERENCE_SERVICES.api_version,
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"predictor": {"sklearn": sklearn}},
        }
        created = await self.client.create(INFERENCE_SERVICES, body, self.namespace)
        await ensure_model_config(self.client, Cache(self.client), InferenceService.from_object(created))
        return await self.set_isvc_ready(name, ready)

    async def set_isvc_ready(self, name: str, ready: bool) -> Object:
        live = await self.client.get(INFERENCE_SERVICES, name, self.namespace)
        live["status"] = {
            "url": f"http://{name}.{self.namespace}.example.com",
            "address": {"url": f"http://{name}.{self.namespace}.svc.cluster.local"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": "2024-01-01T00:00:00Z",
                }
            ],
        }
        return await self.client.replace_status(INFERENCE_SERVICES, live)

    async def create_tm(self, name: str, isvc: str, memory: str) -> Object:
        body: Object = {
            "apiVersion": TRAINED_MODELS.api_version,
            "kind": "TrainedModel",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "inferenceService": isvc,
                "model": {"storageUri": f"gs://models/{name}", "framework": "sklearn", "memory": memory},
            },
        }
        return await self.client.create(TRAINED_MODELS, body, self.namespace)

    async def tm(self, name: str) -> Object:
        try:
            return await self.client.get(TRAINED_MODELS, name, self.namespace)
        except NotFound:
            return {}

    async def tm_when(self, name: str, check: Callable[[Object], bool]) -> Object:
        return await self.until(lambda: self.tm(name), check, f"TrainedModel {name}")  # type: ignore[no-any-return]

    async def models(self, isvc: str) -> list[Object]:
        cm = await self.client.get(CONFIGMAPS, f"modelconfig-{isvc}-0", self.namespace)
        return json.loads(cm["data"]["models.json"])  # type: ignore[no-any-return]

    async def model_names_when(self, isvc: str, names: list[str]) -> list[Object]:
        async def probe() -> list[Object]:
            return await self.models(isvc)

        found: list[Object] = await self.until(
            probe, lambda models: sorted(m["modelName"] for m in models) == sorted(names), "models.json"
        )
        return found

    async def event(self, reason: str, involved: str) -> Object:
        async def probe() -> Object:
            page = await self.client.list_page(EVENTS, self.namespace)
            for e in page.get("items") or []:
                if e.get("reason") == reason and e["involvedObject"]["name"] == involved:
                    return dict(e)
            return {}

        found: Object = await self.until(probe, bool, f"event {reason} about {involved}")
        return found

    def writes(self) -> float:
        total = 0.0
        for family in self.manager.metrics.registry.collect():
            if family.name != "rest_client_requests":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("method") in WRITE_METHODS:
                    total += sample.value
        return total

    def reconciles(self) -> float:
        value = self.manager.metrics.registry.get_sample_value(
            "controller_runtime_reconcile_total", {"controller": "trainedmodel", "result": "success"}
        )
        return value or 0.0

    async def settle(self) -> None:
        """Wait until the controller's queue is empty and nothing is being reconciled."""
        (controller,) = self.manager.controllers

        async def idle() -> bool:
            return not len(controller.queue) and not controller.queue._processing

        await self.until(idle, bool, "an idle controller")


@contextlib.asynccontextmanager
async def running(kubeconfig: Path, namespace: str) -> AsyncIterator[Harness]:
    client = await load_client(str(kubeconfig))
    admin = await load_client(str(kubeconfig))
    manager = Manager(
        client,
        ManagerOptions(metrics_addr="0", health_probe_addr="0", graceful_shutdown_timeout=10.0),
        metrics=Metrics(CollectorRegistry()),
    )
    setup_trainedmodel_controller(manager, max_concurrent_reconciles=4)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        await asyncio.wait_for(manager.wait_leading(), HANG_GUARD)
        yield Harness(admin, manager, namespace)
    finally:
        stop.set()
        await asyncio.wait_for(task, HANG_GUARD)
        await client.close()
        await admin.close()


@pytest.fixture
async def h(local_cluster: LocalCluster, crds: None, namespace: str) -> AsyncIterator[Harness]:
    async with running(local_cluster.kubeconfig_path, namespace) as harness:
        yield harness


def condition(obj: Object, type_: str) -> Object:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def ready(obj: Object) -> bool:
    return condition(obj, "Ready").get("status") == "True"


async def test_models_join_models_json_with_urls_conditions_labels_and_no_steady_writes(h: Harness) -> None:
    ns = h.namespace
    await h.create_isvc("mms")
    assert await h.models("mms") == []
    await h.create_tm("tm-a", "mms", "512Mi")
    await h.create_tm("tm-b", "mms", "256Mi")
    models = await h.model_names_when("mms", ["tm-a", "tm-b"])
    assert {
        "modelName": "tm-a",
        "modelSpec": {"storageUri": "gs://models/tm-a", "framework": "sklearn", "memory": "512Mi"},
    } in models

    tm = await h.tm_when("tm-a", lambda o: ready(o) and "url" in o.get("status", {}))
    status = tm["status"]
    assert status["url"] == f"http://mms.{ns}.example.com/v1/models/tm-a:predict"
    assert status["address"] == {"url": f"http://mms.{ns}.svc.cluster.local/v1/models/tm-a:predict"}
    for type_ in ("InferenceServiceReady", "IsMMSPredictor", "MemoryResourceAvailable", "Ready"):
        assert condition(tm, type_)["status"] == "True"
    assert tm["metadata"]["labels"] == {"inferenceservice": "mms", ALLOCATED: "mms"}
    assert tm["metadata"]["finalizers"] == ["trainedmodel.finalizer"]

    # A parent change re-queues both models; converged, they write nothing.
    await h.tm_when("tm-b", lambda o: ready(o) and "url" in o.get("status", {}))
    await h.settle()
    writes, reconciles = h.writes(), h.reconciles()
    await h.client.patch(INFERENCE_SERVICES, "mms", {"metadata": {"labels": {"touched": "yes"}}}, ns)

    async def reconciled() -> float:
        return h.reconciles()

    await h.until(reconciled, lambda n: n >= reconciles + 2, "both models reconciled")
    await h.settle()
    assert h.writes() == writes


async def test_memory_over_the_limit_waits_and_fits_once_a_model_is_deleted(h: Harness) -> None:
    await h.create_isvc("mem", limit="1Gi")
    await h.create_tm("big", "mem", "768Mi")
    await h.tm_when("big", ready)
    await h.create_tm("late", "mem", "512Mi")
    late = await h.tm_when("late", lambda o: condition(o, "MemoryResourceAvailable").get("status") == "False")
    memory = condition(late, "MemoryResourceAvailable")
    assert memory["reason"] == "MemoryResourceNotAvailable"
    assert memory["message"] == "Inference Service does not have enough memory resources for Trained Model"
    assert condition(late, "Ready")["reason"] == "MemoryResourceNotAvailable"
    assert ALLOCATED not in late["metadata"]["labels"]
    assert "url" not in late["status"]
    assert [m["modelName"] for m in await h.models("mem")] == ["big"]

    await h.client.delete(TRAINED_MODELS, "big", h.namespace)
    await h.tm_when("big", lambda o: not o)
    await h.model_names_when("mem", ["late"])
    late = await h.tm_when("late", ready)
    assert late["metadata"]["labels"][ALLOCATED] == "mem"


async def test_not_ready_parent_then_ready_with_v2_paths(h: Harness) -> None:
    ns = h.namespace
    await h.create_isvc("v2", ready=False, protocol="v2")
    await h.create_tm("tm", "v2", "128Mi")
    tm = await h.tm_when("tm", lambda o: condition(o, "InferenceServiceReady").get("status") == "False")
    assert condition(tm, "InferenceServiceReady")["reason"] == "InferenceServiceNotReady"
    assert await h.models("v2") == []

    await h.set_isvc_ready("v2", True)
    tm = await h.tm_when("tm", lambda o: ready(o) and "url" in o.get("status", {}))
    assert tm["status"]["url"] == f"http://v2.{ns}.example.com/v2/models/tm/infer"
    assert tm["status"]["address"]["url"] == f"http://v2.{ns}.svc.cluster.local/v2/models/tm/infer"
    await h.model_names_when("v2", ["tm"])


async def test_a_model_whose_parent_does_not_exist_is_deleted(h: Harness) -> None:
    await h.create_tm("orphan", "nobody", "128Mi")
    await h.tm_when("orphan", lambda o: not o)


async def test_bad_input_is_a_false_condition_and_a_warning_event(h: Harness) -> None:
    # (An empty spec.inferenceService is refused by the CRD schema; the unit tests cover it.)
    await h.create_isvc("bad")
    await h.create_tm("no-memory", "bad", "lots")
    bad = await h.tm_when(
        "no-memory", lambda o: condition(o, "MemoryResourceAvailable").get("status") == "False"
    )
    memory = condition(bad, "MemoryResourceAvailable")
    assert memory["reason"] == "InvalidMemory"
    assert "'lots' is not a Kubernetes quantity" in memory["message"]
    assert condition(bad, "Ready")["reason"] == "InvalidMemory"
    event = await h.event("InvalidMemory", "no-memory")
    assert event["type"] == "Warning"
    assert event["source"]["component"] == "v1beta1Controllers"
    assert event["involvedObject"]["kind"] == "TrainedModel"
    assert await h.models("bad") == []

    # Not retried in a loop: no failed reconciles, and the fix is picked up from the watch.
    await h.settle()
    errors = h.manager.metrics.registry.get_sample_value(
        "controller_runtime_reconcile_total", {"controller": "trainedmodel", "result": "error"}
    )
    assert not errors
    await h.client.patch(TRAINED_MODELS, "no-memory", {"spec": {"model": {"memory": "64Mi"}}}, h.namespace)
    await h.tm_when("no-memory", ready)
    await h.model_names_when("bad", ["no-memory"])
