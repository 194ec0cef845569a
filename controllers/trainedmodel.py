"""Wiring of the TrainedModel controller: what it watches and what each change re-queues.

KServe watches only TrainedModels and re-queues a model with backoff until its parent is Ready. Here every
input of a TrainedModel's conditions is watched instead, so nothing polls:

* For TrainedModel: the model's own changes.
* Watches InferenceService: a parent that becomes Ready, gets a URL or changes its predictor re-queues its
  models, found through the cache's label index on `inferenceservice=<isvc>` (the reconciler persists that
  label on the first pass, before it evaluates any condition).
* Watches TrainedModel (mapped): a model that changes or goes away re-queues the siblings still waiting for
  memory (`inferenceservice=<isvc>` without the allocated label), because the memory it held may now fit.

ConfigMaps are not watched: a cluster-wide ConfigMap informer would cache every ConfigMap in the cluster for
the rare case of a missing `modelconfig-<isvc>-0`, which the reconciler retries after a delay instead.

The controller has an event broadcaster of its own (KServe builds the TrainedModel recorder from the
InferenceService broadcaster and leaves its own one unused), with KServe's source component by default.
"""

from __future__ import annotations

from collections.abc import Iterable

from apis import constants as c
from apis.resources import INFERENCE_SERVICES, TRAINED_MODELS
from manager.cache import Cache
from manager.client import Object, name_of, namespace_of
from manager.controller import Controller
from manager.manager import Manager
from manager.reconcile import Request
from reconcilers.trainedmodel import trainedmodel_reconciler

CONTROLLER_NAME = "trainedmodel"


def trained_models_of(cache: Cache, isvc: Object) -> list[Request]:
    """The TrainedModels labelled with this InferenceService's name, in its namespace."""
    namespace = namespace_of(isvc)
    labels = {c.TRAINED_MODEL_ISVC_LABEL: name_of(isvc)}
    return [Request(namespace, name_of(tm)) for tm in cache.list(TRAINED_MODELS, namespace, labels=labels)]


def waiting_siblings(cache: Cache, tm: Object) -> list[Request]:
    """The other TrainedModels of the same parent that hold no memory yet."""
    parent = (tm.get("metadata", {}).get("labels") or {}).get(c.TRAINED_MODEL_ISVC_LABEL)
    if not parent:
        return []
    namespace = namespace_of(tm)
    siblings = cache.list(TRAINED_MODELS, namespace, labels={c.TRAINED_MODEL_ISVC_LABEL: parent})
    return [
        Request(namespace, name_of(other))
        for other in siblings
        if name_of(other) != name_of(tm)
        and (other.get("metadata", {}).get("labels") or {}).get(c.TRAINED_MODEL_ALLOCATED_LABEL) != parent
    ]


def setup_trainedmodel_controller(
    manager: Manager,
    *,
    max_concurrent_reconciles: int,
    event_component: str = c.EVENT_SOURCE_COMPONENT,
) -> Controller:
    """Register the TrainedModel controller (and its own event broadcaster) on `manager`."""
    cache = manager.cache
    recorder = manager.event_broadcaster(event_component).recorder()
    reconciler = trainedmodel_reconciler(manager.client, cache, recorder)

    def by_parent(obj: Object) -> Iterable[Request]:
        return trained_models_of(cache, obj)

    def by_sibling(obj: Object) -> Iterable[Request]:
        return waiting_siblings(cache, obj)

    return (
        manager.builder()
        .named(CONTROLLER_NAME)
        .for_(TRAINED_MODELS)
        .watches(INFERENCE_SERVICES, by_parent)
        .watches(TRAINED_MODELS, by_sibling)
        .with_max_concurrent_reconciles(max_concurrent_reconciles)
        .complete(reconciler)
    )
