"""Wiring of the InferenceService controller: what it watches and what each change re-queues.

For InferenceService; Owns the Knative Services, Istio VirtualServices and ExternalName Services it creates
(a change to one re-queues its owner); Watches the `inferenceservice-config` ConfigMap (a change re-queues
every InferenceService, so a new ingress domain reaches every URL), (Cluster)ServingRuntimes (a runtime
that appears or changes re-queues the InferenceServices that may select it) and ClusterStorageContainers (one
that appears, changes or goes may decide whether a storage URI is accepted). Revision pods are cached
through a label-selected informer for the model status, as KServe reads them, but not watched.
"""

from __future__ import annotations

from collections.abc import Iterable

from apis import constants as c
from apis.resources import (
    CLUSTER_SERVING_RUNTIMES,
    CLUSTER_STORAGE_CONTAINERS,
    INFERENCE_SERVICES,
    KNATIVE_SERVICES,
    SERVING_RUNTIMES,
    VIRTUAL_SERVICES,
)
from manager.client import CONFIGMAPS, PODS, SERVICES, Object, namespace_of
from manager.controller import Controller
from manager.manager import Manager
from manager.reconcile import Request
from reconcilers.inferenceservice import inferenceservice_reconciler

CONTROLLER_NAME = "inferenceservice"


def setup_inferenceservice_controller(
    manager: Manager,
    *,
    max_concurrent_reconciles: int = 1,
    event_component: str = c.EVENT_SOURCE_COMPONENT,
    watch_virtual_services: bool = True,
) -> Controller:
    """Register the InferenceService controller (and its own event broadcaster) on `manager`."""
    cache = manager.cache
    config_namespace = manager.options.namespace
    recorder = manager.event_broadcaster(event_component).recorder()

    def all_inference_services(obj: Object) -> Iterable[Request]:
        if (
            obj.get("metadata", {}).get("name") != c.INFERENCE_SERVICE_CONFIGMAP
            or namespace_of(obj) != config_namespace
        ):
            return ()
        return [Request(ns, name) for ns, name in cache.keys(INFERENCE_SERVICES)]

    def inference_services_in_namespace(obj: Object) -> Iterable[Request]:
        namespace = namespace_of(obj)
        return [Request(ns, name) for ns, name in cache.keys(INFERENCE_SERVICES) if ns == namespace]

    def every_inference_service(obj: Object) -> Iterable[Request]:
        return [Request(ns, name) for ns, name in cache.keys(INFERENCE_SERVICES)]

    pods = cache.informer(PODS, label_selector=c.INFERENCE_SERVICE_LABEL)
    reconciler = inferenceservice_reconciler(
        manager.client, cache, recorder, config_namespace=config_namespace, pods=pods
    )
    builder = (
        manager.builder()
        .named(CONTROLLER_NAME)
        .for_(INFERENCE_SERVICES)
        .owns(KNATIVE_SERVICES)
        .owns(SERVICES)
        .watches(CONFIGMAPS, all_inference_services, namespace=config_namespace)
        .watches(SERVING_RUNTIMES, inference_services_in_namespace)
        .watches(CLUSTER_SERVING_RUNTIMES, every_inference_service)
        .watches(CLUSTER_STORAGE_CONTAINERS, every_inference_service)
        .with_max_concurrent_reconciles(max_concurrent_reconciles)
    )
    if watch_virtual_services:
        builder = builder.owns(VIRTUAL_SERVICES)
    return builder.complete(reconciler)
