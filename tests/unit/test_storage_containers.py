"""The controller side of ClusterStorageContainers: a storage URI one of them serves is accepted.

KServe's `ValidateStorageURI` asks the ClusterStorageContainers first, for the predictor, the transformer
and the explainer alike; without one, only the built-in schemes, Azure blob URLs and local paths pass. The
pod webhook's side (merging the container over the storage initializer) is in test_pod_mutator.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from apis import constants as c
from apis.inferenceservice import InferenceService
from apis.resources import CLUSTER_STORAGE_CONTAINERS
from apis.storage import go_json, is_supported_storage_uri
from reconcilers.components import ComponentBuilder, validate_storage_uri
from reconcilers.knative_service import desired_knative_service
from reconcilers.runtime import ComponentSpecError
from tests.support.fakecluster import FakeCluster
from tests.unit.test_knative_service import CONFIG

HF = {
    "apiVersion": "serving.kserve.io/v1alpha1",
    "kind": "ClusterStorageContainer",
    "metadata": {"name": "hf"},
    "spec": {
        "container": {"name": "storage-initializer", "image": "me/hf:1"},
        "supportedUriFormats": [{"prefix": "hf://"}, {"regex": "^oci://[a-z.]+/"}],
    },
}


def custom_isvc(**components: str) -> InferenceService:
    spec = {
        name: {"containers": [{"name": "c", "image": "me/x", "env": [{"name": "STORAGE_URI", "value": uri}]}]}
        for name, uri in components.items()
    }
    return InferenceService.from_object(
        {"metadata": {"name": "m", "namespace": "ns", "uid": "u"}, "spec": spec}
    )


@pytest.mark.parametrize(
    ("uri", "accepted"),
    [
        ("hf://org/model", True),
        ("oci://registry.example/model", True),
        ("oci://Registry/model", False),
        ("ftp://host/model", False),
        ("s3://b/m", True),
        ("https://x/blob.core.windows.net/y", True),  # KServe's Azure pattern, dots unescaped
        ("/mnt/models", True),
    ],
)
def test_storage_uri_rule_asks_cluster_storage_containers_first(uri: str, accepted: bool) -> None:
    assert is_supported_storage_uri(uri, [HF]) is accepted


@pytest.mark.parametrize("component", [c.PREDICTOR, c.TRANSFORMER, c.EXPLAINER])
def test_every_component_accepts_a_uri_a_storage_container_serves(component: str) -> None:
    components = {c.PREDICTOR: "s3://b/m", component: "hf://org/model"}
    isvc = custom_isvc(**components)
    with pytest.raises(ComponentSpecError) as info:
        desired_knative_service(isvc, component)
    assert info.value.reason == "InvalidStorageURI"
    ksvc = desired_knative_service(isvc, component, storage_containers=[HF])
    annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
    assert annotations[c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION] == "hf://org/model"


def test_disabled_storage_container_serves_nothing() -> None:
    disabled: dict[str, Any] = {**HF, "disabled": True}
    with pytest.raises(ComponentSpecError):
        validate_storage_uri("hf://org/model", [disabled])


def test_unusable_storage_container_is_an_invalid_storage_uri_naming_it() -> None:
    broken = {**HF, "spec": {"container": {"name": "x"}, "supportedUriFormats": [{"regex": "(["}]}}
    with pytest.raises(ComponentSpecError) as info:
        validate_storage_uri("s3://b/m", [broken])
    assert info.value.reason == "InvalidStorageURI"
    assert info.value.message.startswith("StorageURI not supported: error checking storage container hf: ")


def test_the_builder_reads_the_storage_containers_from_the_cache() -> None:
    cluster = FakeCluster()
    cluster.watch(CLUSTER_STORAGE_CONTAINERS)
    builder = ComponentBuilder(cluster.cache)
    isvc = custom_isvc(predictor="hf://org/model")
    with pytest.raises(ComponentSpecError):
        builder.build(isvc, c.PREDICTOR, config=CONFIG)
    cluster.add(CLUSTER_STORAGE_CONTAINERS, HF)
    built = builder.build(custom_isvc(predictor="hf://org/model"), c.PREDICTOR, config=CONFIG)
    assert built.annotations[c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION] == "hf://org/model"


@pytest.mark.parametrize(
    ("params", "encoded"),
    [
        ({"type": "s3", "bucket": "b"}, '{"bucket":"b","type":"s3"}'),
        ({"a": "<&>"}, '{"a":"\\u003c\\u0026\\u003e"}'),
        ({"region": "zürich\u2028"}, '{"region":"zürich\\u2028"}'),
        ({}, "{}"),
    ],
)
def test_storage_parameters_are_encoded_as_go_encodes_them(params: dict[str, str], encoded: str) -> None:
    assert go_json(params) == encoded
