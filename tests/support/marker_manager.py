"""A manager process with one tiny controller, for testing the runtime as a real process.

The "configmap-marker" controller reconciles ConfigMaps labelled `kserve-py.test/marker=true`: it writes the
annotation `kserve-py.test/reconciled-by: <identity>` (so a test can see which replica reconciled) and
`kserve-py.test/seen: <data.value>`, records a Normal event `Marked`, and, when the ConfigMap has
`data.sleep`, sleeps that many seconds first (an in-flight reconcile for shutdown tests). It knows nothing
of InferenceServices: it exercises exactly the runtime that the KServe controllers run on.
"""

from __future__ import annotations

import asyncio
import sys

from manager.cli import run_manager
from manager.client import CONFIGMAPS, Client
from manager.errors import NotFound
from manager.events import EventRecorder
from manager.manager import Manager
from manager.reconcile import Request, Result

LABEL = "kserve-py.test/marker"
BY = "kserve-py.test/reconciled-by"
SEEN = "kserve-py.test/seen"


class Marker:
    """Annotates labelled ConfigMaps with who reconciled them."""

    def __init__(self, manager: Manager, recorder: EventRecorder) -> None:
        self.cache = manager.cache
        self.client: Client = manager.client
        self.identity = manager.options.identity
        self.recorder = recorder

    async def reconcile(self, request: Request) -> Result:
        obj = self.cache.get(CONFIGMAPS, request.name, request.namespace)
        if obj is None or (obj["metadata"].get("labels") or {}).get(LABEL) != "true":
            return Result()
        data = obj.get("data") or {}
        if "sleep" in data:
            await asyncio.sleep(float(data["sleep"]))
        annotations = obj["metadata"].get("annotations") or {}
        want = {BY: self.identity, SEEN: data.get("value", "")}
        if all(annotations.get(k) == v for k, v in want.items()):
            return Result()
        try:
            await self.client.patch(
                CONFIGMAPS, request.name, {"metadata": {"annotations": want}}, request.namespace
            )
        except NotFound:
            return Result()
        self.recorder.event(obj, "Normal", "Marked", f"marked by {self.identity}")
        return Result()


def setup(manager: Manager) -> None:
    recorder = manager.event_broadcaster("marker-controller").recorder()
    manager.builder().named("configmap-marker").for_(CONFIGMAPS).with_max_concurrent_reconciles(
        manager.options.max_concurrent_reconciles
    ).complete(Marker(manager, recorder))


if __name__ == "__main__":
    sys.exit(run_manager(setup))
