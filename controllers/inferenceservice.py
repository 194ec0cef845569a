"""Wiring of the InferenceService controller: what it watches and what each change re-queues.

For InferenceService; Owns the Knative Services, Istio VirtualServices and ExternalName Services it creates
in Serverless mode and the Deployments, Services, HPAs (autoscaling/v1) and Ingresses of RawDeployment mode
(a change to one re-queues its owner); Watches the `inferenceservice-config` ConfigMap (a change re-queues
every InferenceService, so a new ingress domain reaches every URL; these fan-out watches are spread through
a token bucket, `FANOUT_LIMIT`, so that they cannot flood the API server), (Cluster)ServingRuntimes (a runtime
that appears or changes re-queues the InferenceServices that may select it) and ClusterStorageContainers (one
that appears, changes or goes may decide whether a storage URI is accepted). Pods labelled with an
InferenceService are cached through one label-selected informer for the model status, as KServe reads them;
a change to one of them also re-queues its InferenceService (a deliberate difference: v0.11 does not watch
pods, so its model status is computed whenever something else happens to re-queue, from whatever the pod
said then: a storage initializer that starts failing after the Knative Service's last status change stays
`Loading` for good, and a raw pod that cannot pull its image showed only after the Deployment's 600 s
progress deadline).
"""

from __future__ import annotations

from collections.abc import Iterable

from apis import constants as c
from apis.resources import (
    CLUSTER_SERVING_RUNTIMES,
    CLUSTER_STORAGE_CONTAINERS,
    DEPLOYMENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    INFERENCE_SERVICES,
    INGRESSES,
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
FANOUT_LIMIT: tuple[float, int] | None = (100.0, 100)
"""(keys per second, burst) of the fan-out watches (ConfigMap, runtimes, storage containers): a change that
re-queues every InferenceService reaches them at this pace, so at most 100 reconciles a second can write.
Measured at 10,000 InferenceServices in docs/benchmarks.md; read at set-up (a benchmark may override it)."""


def _pod_read_fields(pod: Object) -> Object:
    # The model status reads a pod's labels (index) and container statuses; never its spec, half its size.
    pod.pop("spec", None)
    return pod


def _metadata_unless_ours(obj: Object) -> Object:
    # Every Service and Deployment of the cluster is cached (Owns), most of them Knative's or other users';
    # of those only the metadata is read (owner references, existence). Ours are compared with what we apply.
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        group = str(ref.get("apiVersion", "")).rpartition("/")[0]
        if (
            ref.get("controller")
            and ref.get("kind") == INFERENCE_SERVICES.kind
            and group == INFERENCE_SERVICES.group
        ):
            return obj
    return {key: obj[key] for key in ("apiVersion", "kind", "metadata") if key in obj}


def setup_inferenceservice_controller(
    manager: Manager,
    *,
    max_concurrent_reconciles: int = 1,
    event_component: str = c.EVENT_SOURCE_COMPONENT,
    watch_virtual_services: bool = True,
    cache_transforms: bool = False,
) -> Controller:
    """Register the InferenceService controller (and its own event broadcaster) on `manager`.

    `cache_transforms`: cache only what this controller reads of pods, Services and Deployments
    (`_pod_read_fields`, `_metadata_unless_ours`). Transforms are cache-wide, so a process may turn them on
    only when no other controller on its cache reads those fields (`kserve-manager` and the integration
    tests' harness do; the Knative double, which writes Services and reads pod specs, has its own cache).
    """
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

    def pod_owner(pod: Object) -> Iterable[Request]:
        # The model status and a raw component's Ready are read from the pods; neither the Knative Service's
        # nor the Deployment's status changes when a pod's storage initializer starts failing.
        owner = (pod.get("metadata", {}).get("labels") or {}).get(c.INFERENCE_SERVICE_LABEL)
        return [Request(namespace_of(pod), owner)] if owner else ()

    if cache_transforms:
        cache.set_transform(PODS, _pod_read_fields)
        cache.set_transform(SERVICES, _metadata_unless_ours)
        cache.set_transform(DEPLOYMENTS, _metadata_unless_ours)
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
        .owns(DEPLOYMENTS)
        .owns(HORIZONTAL_POD_AUTOSCALERS)
        .owns(INGRESSES)
        .watches(CONFIGMAPS, all_inference_services, namespace=config_namespace)
        .watches(SERVING_RUNTIMES, inference_services_in_namespace)
        .watches(CLUSTER_SERVING_RUNTIMES, every_inference_service)
        .watches(CLUSTER_STORAGE_CONTAINERS, every_inference_service)
        .watches(PODS, pod_owner, label_selector=c.INFERENCE_SERVICE_LABEL)
        .with_max_concurrent_reconciles(max_concurrent_reconciles)
    )
    if watch_virtual_services:
        builder = builder.owns(VIRTUAL_SERVICES)
    if FANOUT_LIMIT is not None:
        builder = builder.with_fanout_limit(*FANOUT_LIMIT)
    return builder.complete(reconciler)
