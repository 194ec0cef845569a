"""RawDeployment routing, row by row: hosts from domainTemplate, the Ingress, the URL and the address.

Expectations are KServe v0.11.2's (`kube_ingress_reconciler.go`, `domain.go`, `rawkube_controller_test.go`)
except where README lists a deliberate difference (the transformer's and explainer's own hosts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from apis import constants as c
from apis.config import IngressConfig
from apis.inferenceservice import InferenceService
from manager.client import Object
from reconcilers.ingress import IngressConfigError
from reconcilers.kube_ingress import (
    ServiceNames,
    address_url,
    component_url,
    desired_ingress,
    domain_name,
    is_cluster_local,
    service_names,
    service_url,
)

NS = "default"
CONTAINERS = {"containers": [{"name": "kserve-container", "image": "x"}]}
CONFIG = IngressConfig.model_validate(
    {
        "ingressGateway": "knative-serving/knative-ingress-gateway",
        "ingressService": "test-destination",
        "localGateway": "knative-serving/knative-local-gateway",
        "localGatewayService": "knative-local-gateway.istio-system.svc.cluster.local",
        "ingressDomain": "example.com",
    }
)


def config(**overrides: Any) -> IngressConfig:
    return CONFIG.model_copy(update=overrides)


def isvc(
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    ready: tuple[str, ...] = (c.PREDICTOR, c.TRANSFORMER, c.EXPLAINER),
    components: dict[str, Object] | None = None,
) -> InferenceService:
    meta: Object = {"name": "raw-foo", "namespace": NS, "uid": "uid-1"}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    obj = {"metadata": meta, "spec": {"predictor": CONTAINERS, **(components or {})}}
    model = InferenceService.from_object(obj)
    for component in ready:
        model.status.conditions_manager().mark_true(c.READY_CONDITIONS[component])
    return model


# --- domainTemplate -------------------------------------------------------------------------------


@dataclass
class DomainRow:
    name: str
    template: str
    want: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


DOMAIN_ROWS = [
    DomainRow(
        "KServe's default", "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}", "raw-foo-default.example.com"
    ),
    DomainRow(
        "KServe's test template",
        "{{ .Name }}.{{ .Namespace }}.{{ .IngressDomain }}",
        "raw-foo.default.example.com",
    ),
    DomainRow(
        "a label as a field",
        "{{ .Name }}.{{ .Labels.team }}.{{ .IngressDomain }}",
        "raw-foo.ml.example.com",
        labels={"team": "ml"},
    ),
    DomainRow(
        "an annotation through index",
        '{{ .Name }}.{{ index .Annotations "example.com/zone" }}.{{ .IngressDomain }}',
        "raw-foo.eu.example.com",
        annotations={"example.com/zone": "eu"},
    ),
    DomainRow("trim markers", "{{- .Name -}} . {{- .IngressDomain }}", "raw-foo.example.com"),
]


@pytest.mark.parametrize("row", DOMAIN_ROWS, ids=str)
def test_domain_template(row: DomainRow) -> None:
    model = isvc(labels=row.labels, annotations=row.annotations)
    assert domain_name("raw-foo", model, config(domain_template=row.template)) == row.want


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ .Name }}", "at least two segments"),
        ("{{ .Labels.missing }}.{{ .IngressDomain }}", "'<no value>' is not a DNS label"),
        ("{{ .Name | upper }}.example.com", "unsupported action"),
        ("{{ .Name }}_x.{{ .IngressDomain }}", "'raw-foo_x' is not a DNS label"),
    ],
)
def test_domain_template_problems(template: str, message: str) -> None:
    with pytest.raises(IngressConfigError, match=message):
        domain_name("raw-foo", isvc(), config(domain_template=template))


# --- URLs, names, visibility ----------------------------------------------------------------------


def test_urls_and_address_as_kserves_test() -> None:
    model = isvc()
    names = service_names(model, set())
    assert service_url(model, CONFIG) == "http://raw-foo-default.example.com"
    assert component_url("raw-foo-predictor", model, CONFIG) == "http://raw-foo-predictor-default.example.com"
    assert address_url(model, CONFIG, names) == "http://raw-foo-predictor.default.svc.cluster.local"


def test_url_scheme_applies_to_url_and_address_but_not_component_urls() -> None:
    model = isvc(components={"transformer": CONTAINERS})
    https = config(url_scheme="https")
    assert service_url(model, https) == "https://raw-foo-default.example.com"
    assert address_url(model, https, service_names(model, set())) == (
        "https://raw-foo-transformer.default.svc.cluster.local"
    )
    assert component_url("raw-foo-transformer", model, https).startswith("http://")


@pytest.mark.parametrize(
    ("components", "legacy", "want"),
    [
        ({}, set(), ServiceNames("raw-foo-predictor", "raw-foo-transformer", "raw-foo-explainer")),
        (
            {},
            {"raw-foo-predictor-default"},
            ServiceNames("raw-foo-predictor-default", "raw-foo-transformer", "raw-foo-explainer"),
        ),
        (
            {"transformer": CONTAINERS},
            {"raw-foo-transformer-default"},
            ServiceNames(
                "raw-foo-predictor-default", "raw-foo-transformer-default", "raw-foo-explainer-default"
            ),
        ),
        (
            {"transformer": CONTAINERS},
            {"raw-foo-predictor-default"},
            ServiceNames("raw-foo-predictor", "raw-foo-transformer", "raw-foo-explainer"),
        ),
        (
            {"explainer": CONTAINERS},
            {"raw-foo-explainer-default"},
            ServiceNames("raw-foo-predictor-default", "raw-foo-transformer", "raw-foo-explainer-default"),
        ),
    ],
)
def test_legacy_names(components: dict[str, Object], legacy: set[str], want: ServiceNames) -> None:
    assert service_names(isvc(components=components), legacy) == want


@pytest.mark.parametrize(
    ("labels", "domain", "want"),
    [
        ({}, "example.com", False),
        ({"networking.kserve.io/visibility": "cluster-local"}, "example.com", True),
        ({"networking.knative.dev/visibility": "cluster-local"}, "example.com", False),
        ({}, "svc.cluster.local", True),
    ],
)
def test_cluster_local(labels: dict[str, str], domain: str, want: bool) -> None:
    assert is_cluster_local(isvc(labels=labels), config(ingress_domain=domain)) is want


# --- The Ingress ----------------------------------------------------------------------------------


def rule(host: str, service: str) -> Object:
    backend = {"service": {"name": service, "port": {"number": 80}}}
    return {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}


@dataclass
class IngressRow:
    name: str
    components: dict[str, Object]
    want_rules: list[Object]

    def __str__(self) -> str:
        return self.name


INGRESS_ROWS = [
    IngressRow(
        "a predictor (KServe's test)",
        {},
        [
            rule("raw-foo-default.example.com", "raw-foo-predictor"),
            rule("raw-foo-predictor-default.example.com", "raw-foo-predictor"),
        ],
    ),
    IngressRow(
        "an explainer: the top host is the predictor's, the explainer has its own",
        {"explainer": CONTAINERS},
        [
            rule("raw-foo-default.example.com", "raw-foo-predictor"),
            rule("raw-foo-explainer-default.example.com", "raw-foo-explainer"),
            rule("raw-foo-predictor-default.example.com", "raw-foo-predictor"),
        ],
    ),
    IngressRow(
        "a transformer and an explainer: the top host is the transformer's, each component has its own host",
        {"transformer": CONTAINERS, "explainer": CONTAINERS},
        [
            rule("raw-foo-explainer-default.example.com", "raw-foo-explainer"),
            rule("raw-foo-default.example.com", "raw-foo-transformer"),
            rule("raw-foo-transformer-default.example.com", "raw-foo-transformer"),
            rule("raw-foo-predictor-default.example.com", "raw-foo-predictor"),
        ],
    ),
]


@pytest.mark.parametrize("row", INGRESS_ROWS, ids=str)
def test_ingress(row: IngressRow) -> None:
    model = isvc(annotations={"serving.kserve.io/deploymentMode": "RawDeployment"}, components=row.components)
    ingress = desired_ingress(model, CONFIG, service_names(model, set()))
    assert ingress == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "raw-foo",
            "namespace": NS,
            "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"},
            "ownerReferences": [
                {
                    "apiVersion": "serving.kserve.io/v1beta1",
                    "kind": "InferenceService",
                    "name": "raw-foo",
                    "uid": "uid-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"rules": row.want_rules},
    }


def test_ingress_class_name() -> None:
    model = isvc()
    ingress = desired_ingress(model, config(ingress_class_name="nginx"), service_names(model, set()))
    assert ingress is not None
    assert ingress["spec"]["ingressClassName"] == "nginx"


@pytest.mark.parametrize(
    ("components", "ready", "reason"),
    [
        ({}, (), "Predictor ingress not created"),
        ({"transformer": CONTAINERS}, (c.PREDICTOR,), "Transformer ingress not created"),
        ({"explainer": CONTAINERS}, (c.PREDICTOR,), "Explainer ingress not created"),
    ],
)
def test_ingress_waits_for_components(
    components: dict[str, Object], ready: tuple[str, ...], reason: str
) -> None:
    model = isvc(ready=ready, components=components)
    assert desired_ingress(model, CONFIG, service_names(model, set())) is None
    condition = model.status.get_condition(c.INGRESS_READY)
    assert condition is not None
    assert (condition.status, condition.reason) == ("False", reason)
