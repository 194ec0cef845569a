"""The REST resources of every kind the controllers read or write, as `manager.client.Resource` constants."""

from __future__ import annotations

from typing import Final

from apis.istio import ISTIO_NETWORKING_GROUP, ISTIO_NETWORKING_VERSION, VIRTUAL_SERVICE_KIND
from apis.knative import KNATIVE_SERVICE_KIND, KNATIVE_SERVING_GROUP, KNATIVE_SERVING_VERSION
from manager.client import Resource

INFERENCE_SERVICES: Final = Resource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")
TRAINED_MODELS: Final = Resource("serving.kserve.io", "v1alpha1", "trainedmodels", "TrainedModel")
SERVING_RUNTIMES: Final = Resource("serving.kserve.io", "v1alpha1", "servingruntimes", "ServingRuntime")
CLUSTER_SERVING_RUNTIMES: Final = Resource(
    "serving.kserve.io", "v1alpha1", "clusterservingruntimes", "ClusterServingRuntime", namespaced=False
)
CLUSTER_STORAGE_CONTAINERS: Final = Resource(
    "serving.kserve.io", "v1alpha1", "clusterstoragecontainers", "ClusterStorageContainer", namespaced=False
)
KNATIVE_SERVICES: Final = Resource(
    KNATIVE_SERVING_GROUP, KNATIVE_SERVING_VERSION, "services", KNATIVE_SERVICE_KIND
)
VIRTUAL_SERVICES: Final = Resource(
    ISTIO_NETWORKING_GROUP, ISTIO_NETWORKING_VERSION, "virtualservices", VIRTUAL_SERVICE_KIND
)
DEPLOYMENTS: Final = Resource("apps", "v1", "deployments", "Deployment")
HORIZONTAL_POD_AUTOSCALERS: Final = Resource(
    "autoscaling", "v1", "horizontalpodautoscalers", "HorizontalPodAutoscaler"
)
"""autoscaling/v1: the one HPA version Kubernetes 1.20 and current releases serve (reconcilers/hpa.py)."""
INGRESSES: Final = Resource("networking.k8s.io", "v1", "ingresses", "Ingress")
