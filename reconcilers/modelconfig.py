"""The multi-model ConfigMap `modelconfig-<isvc>-<shard>` and its `models.json`.

A multi-model InferenceService (a predictor without a storageUri) starts empty; its agent sidecar watches
the mounted `models.json` and loads or unloads models as entries appear and disappear. Two controllers share
that file, as in KServe: the InferenceService side creates the ConfigMap once with `models.json: "[]"` (owned
by the InferenceService, so it is garbage-collected with it) and never touches it again; the TrainedModel
side upserts and removes one `{modelName, modelSpec}` entry per TrainedModel.

Because several TrainedModels of one InferenceService edit the same file, every write is a read-modify-write
with optimistic concurrency (PUT carrying the resourceVersion); a conflict re-reads the ConfigMap and
recomputes (`manager.retry`). Reads go to the API server rather than the cache: a lagging cache could hide
an entry that was just added, and a removal that misses it would leave a model loaded forever. Where KServe
rewrites the file on every reconcile and emits entries in Go map order, this module keeps the existing
order, appends new entries, and writes only when the content changes, so a steady state makes no writes.

The ConfigMap is created with a plain create, not server-side apply: applying `models.json: "[]"` again would
claim the field and wipe the entries the TrainedModel controller wrote.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from apis import constants as c
from apis.inferenceservice import InferenceService, PredictorSpec
from apis.trainedmodel import TrainedModel
from manager.cache import Cache
from manager.client import CONFIGMAPS, Client, Object
from manager.errors import AlreadyExists, NotFound
from manager.retry import retry_on_conflict

log = logging.getLogger(__name__)

MODELS_JSON = c.MODEL_CONFIG_FILE_NAME
MULTI_MODEL_SERVER_ENV = "MULTI_MODEL_SERVER"
"""A custom predictor container declares itself multi-model with this env var set to "true"."""
DEFAULT_SHARD = 0
"""KServe's memory sharding strategy always assigns shard 0."""

_Change = Callable[[str | None, str], str | None]
"""(current models.json, where) -> the new models.json, or None when nothing changes."""


class ModelConfigError(ValueError):
    """`models.json` is not a JSON array; the message is one line naming the ConfigMap."""


class ModelConfigMissing(LookupError):
    """The ConfigMap does not exist (yet): the InferenceService controller creates it."""


def is_mms_predictor(predictor: PredictorSpec) -> bool:
    """Whether the predictor is a multi-model server (KServe `IsMMSPredictor`).

    A custom container is multi-model when its first container sets `MULTI_MODEL_SERVER=true`; a framework
    or `model` implementation is multi-model when it names neither a storageUri nor a storage spec.
    """
    if predictor.containers:
        env = predictor.containers[0].env or []
        return any(var.name == MULTI_MODEL_SERVER_ENV and var.value == "true" for var in env)
    found = predictor.framework()
    if found is None:
        return False
    spec = found[1]
    return spec.storage_uri is None and spec.storage is None


def model_config_name(isvc_name: str) -> str:
    """The ConfigMap a TrainedModel of `isvc_name` is listed in (always shard 0, as in KServe)."""
    return c.model_configmap_name(isvc_name, DEFAULT_SHARD)


def model_entry(tm: TrainedModel) -> dict[str, Any]:
    """A TrainedModel's `models.json` entry: `{modelName, modelSpec: {storageUri, framework, memory}}`."""
    model = tm.spec.model
    spec: dict[str, Any] = {"storageUri": model.storage_uri or "", "framework": model.framework or ""}
    if model.memory is not None:
        spec["memory"] = str(model.memory)
    return {"modelName": tm.name, "modelSpec": spec}


def parse_models(text: str | None, *, where: str = MODELS_JSON) -> list[Any]:
    """The entries of a `models.json` text; empty or absent means no entries."""
    if text is None or not text.strip():
        return []
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ModelConfigError(f"{where}: {MODELS_JSON} is not valid JSON: {exc}") from None
    if not isinstance(value, list):
        raise ModelConfigError(f"{where}: {MODELS_JSON} must be a JSON array, got {type(value).__name__}")
    return value


def encode_models(entries: list[Any]) -> str:
    """Compact JSON, as Go's encoder writes it."""
    return json.dumps(entries, separators=(",", ":"), ensure_ascii=False)


def _name(entry: Any) -> Any:
    return entry.get("modelName") if isinstance(entry, dict) else None


def upsert_model(text: str | None, entry: dict[str, Any], *, where: str = MODELS_JSON) -> str | None:
    """The new `models.json` with `entry` added or replaced in place, or None when it is already there."""
    entries = parse_models(text, where=where)
    name = entry["modelName"]
    for i, existing in enumerate(entries):
        if _name(existing) == name:
            if existing == entry:
                return None
            entries[i] = entry
            return encode_models(entries)
    entries.append(entry)
    return encode_models(entries)


def remove_model(text: str | None, name: str, *, where: str = MODELS_JSON) -> str | None:
    """The new `models.json` without the entry named `name`, or None when there is no such entry.

    An empty or absent `models.json` becomes `[]`, as KServe writes it on a removal.
    """
    entries = parse_models(text, where=where)
    kept = [e for e in entries if _name(e) != name]
    if len(kept) == len(entries):
        return encode_models(kept) if text is None or not text.strip() else None
    return encode_models(kept)


def empty_model_config(isvc: InferenceService, shard: int = DEFAULT_SHARD) -> Object:
    """The ConfigMap the InferenceService side creates: no models, the isvc's labels, owned by it."""
    metadata: dict[str, Any] = {
        "name": c.model_configmap_name(isvc.name, shard),
        "namespace": isvc.namespace,
        "ownerReferences": [isvc.owner_reference()],
    }
    if isvc.labels:
        metadata["labels"] = isvc.labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {MODELS_JSON: "[]"}}


async def ensure_model_config(client: Client, cache: Cache, isvc: InferenceService) -> None:
    """Create `modelconfig-<isvc>-0` with an empty `models.json` when the predictor is multi-model.

    Creates only: an existing ConfigMap is left alone (its entries belong to the TrainedModel controller).
    The cache answers when it watches ConfigMaps in that namespace; otherwise one GET does.
    """
    if not is_mms_predictor(isvc.spec.predictor):
        return
    name = model_config_name(isvc.name)
    try:
        if cache.get(CONFIGMAPS, name, isvc.namespace) is not None:
            return
    except LookupError:
        pass
    try:
        await client.get(CONFIGMAPS, name, isvc.namespace)
        return
    except NotFound:
        pass
    try:
        await client.create(CONFIGMAPS, empty_model_config(isvc), isvc.namespace)
        log.info("created model config %s/%s", isvc.namespace, name)
    except AlreadyExists:
        return


class ModelConfigReconciler:
    """Adds, updates and removes one TrainedModel's entry in its parent's `models.json`."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def upsert(self, tm: TrainedModel) -> bool:
        """Put the TrainedModel's entry into `models.json`; True when a write was made.

        Raises `ModelConfigMissing` when the ConfigMap does not exist and `ModelConfigError` when its
        `models.json` is not a JSON array.
        """
        entry = model_entry(tm)
        return await self._edit(tm, lambda text, where: upsert_model(text, entry, where=where))

    async def remove(self, tm: TrainedModel) -> bool:
        """Take the TrainedModel's entry out of `models.json`; a missing ConfigMap means nothing to do."""
        try:
            return await self._edit(tm, lambda text, where: remove_model(text, tm.name, where=where))
        except ModelConfigMissing:
            return False

    async def _edit(self, tm: TrainedModel, change: _Change) -> bool:
        name = model_config_name(tm.spec.inference_service)
        where = f"ConfigMap {tm.namespace}/{name}"

        async def attempt(_: int) -> bool:
            try:
                configmap = await self.client.get(CONFIGMAPS, name, tm.namespace)
            except NotFound:
                raise ModelConfigMissing(f"{where} does not exist") from None
            data = configmap.get("data") or {}
            updated = change(data.get(MODELS_JSON), where)
            if updated is None:
                return False
            configmap["data"] = {**data, MODELS_JSON: updated}
            try:
                await self.client.replace(CONFIGMAPS, configmap)
            except NotFound:
                raise ModelConfigMissing(f"{where} does not exist") from None
            log.info("updated %s for TrainedModel %s", where, tm.name)
            return True

        return await retry_on_conflict(attempt)
