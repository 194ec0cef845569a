"""Builders and waits shared by the e2e tests (target-independent)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from apis.resources import INFERENCE_SERVICES
from manager.client import PODS, Client, Object, Resource
from manager.errors import Conflict, NotFound

ISVC_LABEL = "serving.kserve.io/inferenceservice"
IRIS_INSTANCES = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
"""KServe's sample request: both flowers are class 1 (versicolor)."""
SKLEARN_IRIS = "gs://kfserving-examples/models/sklearn/1.0/model"


def sklearn_isvc(
    namespace: str,
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    storage_uri: str = SKLEARN_IRIS,
    **predictor: Any,
) -> Object:
    """The sklearn iris InferenceService of KServe's samples (v1 protocol)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = dict(annotations)
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "model": {"modelFormat": {"name": "sklearn"}, "storageUri": storage_uri},
                **predictor,
            }
        },
    }


def condition(obj: Object, type_: str) -> Object:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def is_ready(obj: Object) -> bool:
    return condition(obj, "Ready").get("status") == "True"


async def get_or_empty(client: Client, resource: Resource, name: str, namespace: str | None) -> Object:
    try:
        return await client.get(resource, name, namespace)
    except NotFound:
        return {}


async def until(
    probe: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], timeout: float, what: str
) -> Any:
    """Poll `probe()` until `check(result)`; fail with the last result after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await probe()
        if check(last):
            return last
        if time.monotonic() > deadline:
            shown = json.dumps(last, indent=1, default=str)[:3000]
            raise AssertionError(f"not within {timeout:.0f}s: {what}; last seen:\n{shown}")
        await asyncio.sleep(0.25)


async def isvc_when(
    client: Client, namespace: str, name: str, check: Callable[[Object], bool], timeout: float, what: str
) -> Object:
    result: Object = await until(
        lambda: get_or_empty(client, INFERENCE_SERVICES, name, namespace), check, timeout, f"{name}: {what}"
    )
    return result


async def ready(client: Client, namespace: str, name: str, timeout: float) -> Object:
    return await isvc_when(client, namespace, name, is_ready, timeout, "Ready")


async def update_isvc(client: Client, namespace: str, name: str, change: Callable[[Object], None]) -> Object:
    """Read-modify-write, retried on conflicts with the controller's own writes."""
    for _ in range(10):
        obj = await client.get(INFERENCE_SERVICES, name, namespace)
        change(obj)
        try:
            return await client.replace(INFERENCE_SERVICES, obj)
        except Conflict:
            continue
    raise AssertionError(f"could not update InferenceService {namespace}/{name}")


async def isvc_pods(client: Client, namespace: str, name: str) -> list[Object]:
    page = await client.list_page(PODS, namespace, label_selector=f"{ISVC_LABEL}={name}")
    return list(page.get("items") or [])


def traffic(obj: Object) -> list[tuple[str | None, int, bool, str | None]]:
    entries = ((obj.get("status") or {}).get("components") or {}).get("predictor", {}).get("traffic") or []
    return sorted(
        (t.get("revisionName"), t.get("percent"), bool(t.get("latestRevision")), t.get("tag"))
        for t in entries
    )


def container(pod: Object, name: str, *, init: bool = False) -> Object:
    key = "initContainers" if init else "containers"
    for c in pod["spec"].get(key) or []:
        if c.get("name") == name:
            return dict(c)
    raise AssertionError(f"pod {pod['metadata']['name']} has no {key[:-1]} {name!r}")


def env_of(c: Object) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in c.get("env") or [] if "name" in e}
