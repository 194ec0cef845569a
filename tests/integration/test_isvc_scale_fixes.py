"""Two savings found by benchmarks/isvc_scale.py, pinned against the real API server.

* The informer drops `metadata.managedFields` (a third to a half of each object) from what it caches.
* The first reconcile of a new InferenceService writes its status with the resourceVersion its own finalizer
  patch returned, so that write no longer always fails with 409 Conflict (and costs a GET and a retry).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from apis.resources import INFERENCE_SERVICES
from manager.client import CONFIGMAPS, Client, Object, Resource
from manager.errors import Conflict
from manager.informer import Informer
from tests.integration.isvc_harness import running_harness, sklearn_isvc


async def test_informer_caches_objects_without_managed_fields(client: Client, namespace: str) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed", "namespace": namespace}}
    created = await client.apply(CONFIGMAPS, {**body, "data": {"a": "1"}}, field_manager="test")
    assert created["metadata"].get("managedFields"), "the server records managedFields"
    informer = Informer(client, CONFIGMAPS, namespace)
    informer.start()
    try:
        assert await informer.wait_for_sync(30)
        listed = informer.store.get(namespace, "listed")
        assert listed is not None
        assert listed["data"] == {"a": "1"}
        assert "managedFields" not in listed["metadata"]
        await client.apply(CONFIGMAPS, {**body, "data": {"a": "2"}}, field_manager="test")
        async with asyncio.timeout(30):
            while (informer.store.get(namespace, "listed") or {}).get("data") != {"a": "2"}:
                await asyncio.sleep(0.05)
        watched = informer.store.get(namespace, "listed")
        assert watched is not None
        assert "managedFields" not in watched["metadata"]
    finally:
        await informer.stop()


async def test_first_status_write_uses_the_finalizer_patchs_version(kubeconfig: Path, namespace: str) -> None:
    async with running_harness(kubeconfig, namespace) as h:
        outcomes: list[str] = []
        replace_status = h.manager.client.replace_status

        async def recording(resource: Resource, obj: Object) -> Object:
            try:
                written = await replace_status(resource, obj)
            except Conflict:
                if resource == INFERENCE_SERVICES:
                    outcomes.append("conflict")
                raise
            if resource == INFERENCE_SERVICES:
                outcomes.append("written")
            return written

        h.manager.client.replace_status = recording  # type: ignore[method-assign]
        await h.create(sklearn_isvc(namespace, "first"))
        await h.ready("first")
        assert outcomes[0] == "written", outcomes
