"""A manager running the InferenceService controller and the Knative Serving double, for integration tests.

Each test gets its own manager whose namespace (the one holding `inferenceservice-config`) is the test's
namespace, so a test may break or change the ConfigMap without touching others. The manager is set up as
`kserve-manager` sets itself up, cache transforms included; the double runs beside it on its own client,
cache and manager, as Knative runs beside KServe (it reads what the transforms drop: pod specs, whole
Services and Deployments). `Harness.writes` and `settle` cover both.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from apis.resources import CLUSTER_SERVING_RUNTIMES, INFERENCE_SERVICES, KNATIVE_SERVICES
from controllers.inferenceservice import setup_inferenceservice_controller
from controllers.main import CACHE_TRANSFORMS
from e2e.knative_double import READINESS_DEPLOYMENT, KnativeServingDouble, install
from e2e.localcluster.apply import apply_manifests
from manager.client import CONFIGMAPS, EVENTS, Client, Object, load_client
from manager.errors import AlreadyExists, NotFound
from manager.manager import Manager
from manager.metrics import Metrics
from manager.options import ManagerOptions

REPO = Path(__file__).resolve().parents[2]
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

SKLEARN_RUNTIME: Object = {
    "apiVersion": "serving.kserve.io/v1alpha1",
    "kind": "ClusterServingRuntime",
    "metadata": {"name": "kserve-sklearnserver"},
    "spec": {
        "annotations": {"prometheus.kserve.io/port": "8080", "prometheus.kserve.io/path": "/metrics"},
        "supportedModelFormats": [{"name": "sklearn", "version": "1", "autoSelect": True, "priority": 1}],
        "protocolVersions": ["v1", "v2"],
        "containers": [
            {
                "name": "kserve-container",
                "image": "kserve/sklearnserver:latest",
                "args": ["--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080"],
                "resources": {
                    "requests": {"cpu": "1", "memory": "2Gi"},
                    "limits": {"cpu": "1", "memory": "2Gi"},
                },
            }
        ],
    },
}


def install_crds(kubeconfig: Path) -> None:
    """Our CRDs plus the Knative/Istio test CRDs (idempotent)."""
    apply_manifests(kubeconfig, [REPO / "config" / "crd", REPO / "config" / "local"])


def config_data() -> dict[str, str]:
    """The shipped inferenceservice-config data."""
    doc = yaml.safe_load((REPO / "config" / "configmap" / "inferenceservice.yaml").read_text())
    return dict(doc["data"])


def sklearn_isvc(namespace: str, name: str, **spec: Any) -> Object:
    predictor: dict[str, Any] = {
        "model": {
            "modelFormat": {"name": "sklearn"},
            "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model",
        }
    }
    predictor.update(spec.pop("predictor", {}))
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"predictor": predictor, **spec},
    }


def condition(obj: Object, type_: str) -> Object:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


class Harness:
    """The running manager plus helpers to drive and observe InferenceServices."""

    def __init__(
        self,
        client: Client,
        namespace: str,
        manager: Manager,
        double: KnativeServingDouble,
        double_manager: Manager | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.manager = manager
        self.double = double
        self.double_manager = double_manager or manager
        """The manager the double runs on (the same one when the caller hosts both)."""
        self.managers = list(dict.fromkeys((self.manager, self.double_manager)))

    async def create(self, obj: Object) -> Object:
        return await self.client.create(INFERENCE_SERVICES, obj)

    async def get(self, name: str) -> Object:
        return await self.client.get(INFERENCE_SERVICES, name, self.namespace)

    async def update_spec(self, name: str, change: Callable[[Object], None]) -> Object:
        for _ in range(10):
            obj = await self.get(name)
            change(obj)
            try:
                return await self.client.replace(INFERENCE_SERVICES, obj)
            except Exception as exc:  # a conflict with the controller's finalizer patch: re-read and retry
                if "409" not in str(exc):
                    raise
        raise AssertionError("could not update the InferenceService")

    async def until(
        self, probe: Callable[[], Awaitable[Object]], check: Callable[[Object], bool], timeout: float = 30.0
    ) -> Object:
        deadline = time.monotonic() + timeout
        last: Object = {}
        while time.monotonic() < deadline:
            try:
                last = await probe()
            except NotFound:
                last = {}
            if check(last):
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"condition not met within {timeout}s; last: {json.dumps(last, indent=1)[:3000]}"
        )

    async def isvc_when(self, name: str, check: Callable[[Object], bool], timeout: float = 30.0) -> Object:
        return await self.until(lambda: self.get(name), check, timeout)

    async def ready(self, name: str, timeout: float = 30.0) -> Object:
        return await self.isvc_when(name, lambda o: condition(o, "Ready").get("status") == "True", timeout)

    async def events(self, reason: str | None = None) -> list[Object]:
        page = await self.client.list_page(EVENTS, self.namespace)
        items = page.get("items") or []
        return [e for e in items if reason is None or e.get("reason") == reason]

    async def wait_event(self, reason: str, involved: str, timeout: float = 15.0) -> Object:
        async def probe() -> Object:
            for e in await self.events(reason):
                if e["involvedObject"]["name"] == involved:
                    return e
            return {}

        return await self.until(probe, bool, timeout)

    async def events_written(self, timeout: float = 60.0) -> None:
        """Wait until the manager's event broadcasters have written everything recorded so far."""
        deadline = time.monotonic() + timeout
        while not all(b.idle for b in self.manager.event_broadcasters):
            if time.monotonic() > deadline:
                raise AssertionError("events were not written")
            await asyncio.sleep(0.05)

    async def set_config(self, key: str, value: str) -> None:
        await self.client.patch(CONFIGMAPS, "inferenceservice-config", {"data": {key: value}}, self.namespace)

    async def delete_all(self, timeout: float = 30.0) -> None:
        """Delete the namespace's InferenceServices and wait until their finalizers have run."""
        page = await self.client.list_page(INFERENCE_SERVICES, self.namespace)
        for item in page.get("items") or []:
            with contextlib.suppress(NotFound):
                await self.client.delete(INFERENCE_SERVICES, item["metadata"]["name"], self.namespace)

        async def remaining() -> Object:
            return await self.client.list_page(INFERENCE_SERVICES, self.namespace)

        await self.until(remaining, lambda page: not page.get("items"), timeout)

        # Wait for the garbage collector too, so no child outlives the test into another test's manager.
        async def children() -> Object:
            return await self.client.list_page(KNATIVE_SERVICES, self.namespace)

        await self.until(children, lambda page: not page.get("items"), timeout * 2)

    def writes(self) -> float:
        """API write requests made so far by the manager and the double (each counts its own client's)."""
        total = 0.0
        for manager in self.managers:
            for family in manager.metrics.registry.collect():
                if family.name != "rest_client_requests":
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_total") and sample.labels.get("method") in WRITE_METHODS:
                        total += sample.value
        return total

    async def resync_all(self, quiet: float = 1.0) -> None:
        """Re-deliver every cached object of the manager and the double to their handlers; wait until
        both are quiet again."""
        for manager in self.managers:
            for informer in manager.cache.informers:
                informer.resync()
        await self.settle(quiet=quiet)

    async def settle(self, quiet: float = 1.0, timeout: float = 60.0) -> None:
        """Wait until every controller queue is empty and idle for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        idle_since: float | None = None
        while time.monotonic() < deadline:
            controllers = [c for m in self.managers for c in m.controllers]
            busy = any(len(c.queue) or c.queue._processing for c in controllers)
            if busy:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= quiet:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("controllers did not settle")


@contextlib.asynccontextmanager
async def running_harness(
    kubeconfig: Path, namespace: str, *, config: dict[str, str] | None = None, max_concurrent: int = 4
) -> AsyncIterator[Harness]:
    """Install CRDs, the ConfigMap and the sklearn runtime; run the controller and the double; clean up."""
    await asyncio.to_thread(install_crds, kubeconfig)
    client = await load_client(str(kubeconfig))
    double_client = await load_client(str(kubeconfig))
    try:
        data = config_data() if config is None else config
        await client.create(
            CONFIGMAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "inferenceservice-config", "namespace": namespace},
                "data": data,
            },
        )
        with contextlib.suppress(AlreadyExists):
            await client.create(CLUSTER_SERVING_RUNTIMES, copy.deepcopy(SKLEARN_RUNTIME))
        options = ManagerOptions(metrics_addr="0", health_probe_addr="0", namespace=namespace)
        manager = Manager(client, options, metrics=Metrics(CollectorRegistry()))
        setup_inferenceservice_controller(
            manager, max_concurrent_reconciles=max_concurrent, cache_transforms=CACHE_TRANSFORMS
        )
        double_manager = Manager(double_client, options, metrics=Metrics(CollectorRegistry()))
        double = install(double_manager, revision_readiness=READINESS_DEPLOYMENT)  # no nodes: no pods run
        stop = asyncio.Event()
        tasks = [asyncio.create_task(m.run(stop)) for m in (manager, double_manager)]
        harness = Harness(client, namespace, manager, double, double_manager)
        try:
            for m in (manager, double_manager):
                await asyncio.wait_for(m.wait_leading(), 60)
            yield harness
        finally:
            if not any(t.done() for t in tasks):
                await harness.delete_all()
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        await client.close()
        await double_client.close()
