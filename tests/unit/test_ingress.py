"""The Istio ingress: KServe v0.11's URL table, its ingress test matrix, and no writes in a steady state.

Expected objects are spelled out literally (hosts, regular expressions, Host headers) rather than derived
from the code under test, so a change to any user-visible string fails here.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from apis import constants as c
from apis.config import IngressConfig
from apis.inferenceservice import InferenceService
from apis.resources import KNATIVE_SERVICES, VIRTUAL_SERVICES
from manager.client import SERVICES, Object, Resource
from reconcilers.apply import NotControlled
from reconcilers.ingress import (
    IngressConfigError,
    IngressReconciler,
    address_url,
    desired_external_service,
    desired_virtual_service,
    host_prefix,
    host_regexp,
    render_path_template,
    service_host,
    service_url,
)
from tests.support.fakecluster import FakeCluster

NAME, NS = "my-model", "test"
LOCAL_GW = "knative-serving/knative-local-gateway"
INGRESS_GW = "knative-serving/knative-ingress-gateway"
LOCAL_SVC = "knative-local-gateway.istio-system.svc.cluster.local"
LOCAL_HOST = "my-model.test.svc.cluster.local"
LOCAL_RE = r"^my-model\.test(\.svc(\.cluster\.local)?)?(?::\d{1,5})?$"
EXTERNAL_HOST = "my-model.test.example.com"
EXTERNAL_RE = r"^my-model\.test\.example\.com(?::\d{1,5})?$"
PREDICTOR_URL = "http://my-model-predictor.test.example.com"
TRANSFORMER_URL = "http://my-model-transformer.test.example.com"
EXPLAINER_URL = "http://my-model-explainer.test.example.com"
OWNER = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "name": NAME,
    "uid": "isvc-uid",
    "controller": True,
    "blockOwnerDeletion": True,
}


def ingress_config(**overrides: Any) -> IngressConfig:
    data: dict[str, Any] = {
        "ingressGateway": INGRESS_GW,
        "ingressService": "istio-ingressgateway.istio-system.svc.cluster.local",
        "localGateway": LOCAL_GW,
        "localGatewayService": LOCAL_SVC,
        "ingressDomain": "example.com",
        **overrides,
    }
    return IngressConfig.model_validate(data)


def make_isvc(
    urls: dict[str, str | None] | None = None,
    ready: dict[str, str] | None = None,
    *,
    transformer: bool = False,
    explainer: bool = False,
    labels: dict[str, str] | None = None,
) -> InferenceService:
    """An InferenceService whose status has the given component URLs and conditions."""
    spec: dict[str, Any] = {"predictor": {"sklearn": {"storageUri": "gs://bucket/model"}}}
    if transformer:
        spec["transformer"] = {"containers": [{"name": "kserve-container", "image": "transformer:1"}]}
    if explainer:
        spec["explainer"] = {"alibi": {"type": "AnchorTabular"}}
    components = {comp: ({"url": url} if url else {}) for comp, url in (urls or {}).items()}
    return InferenceService.from_object(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {
                "name": NAME,
                "namespace": NS,
                "uid": "isvc-uid",
                "labels": {"test": "test"} if labels is None else labels,
                "annotations": {"test": "test", c.LAST_APPLIED_CONFIG_ANNOTATION: "{}"},
            },
            "spec": spec,
            "status": {
                "components": components,
                "conditions": [{"type": t, "status": s} for t, s in (ready or {}).items()],
            },
        }
    )


def route(matches: list[dict[str, Any]], host_header: str, **extra: Any) -> dict[str, Any]:
    return {
        "match": matches,
        "route": [{"destination": {"host": LOCAL_SVC, "port": {"number": 80}}, "weight": 100}],
        "headers": {"request": {"set": {"Host": host_header}}},
        **extra,
    }


def match(authority: str, gateway: str, **uri: str) -> dict[str, Any]:
    out: dict[str, Any] = {"authority": {"regex": authority}, "gateways": [gateway]}
    if uri:
        out["uri"] = uri
    return out


EXTERNAL_MATCHES = [match(LOCAL_RE, LOCAL_GW), match(EXTERNAL_RE, INGRESS_GW)]
EXPLAIN_RE = r"^/v1/models/[\w-]+:explain$"
DOMAIN_RE = r"^my-domain\.com(?::\d{1,5})?$"


def virtual_service(
    hosts: list[str], gateways: list[str], http: list[dict[str, Any]], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "VirtualService",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "labels": {"test": "test"} if labels is None else labels,
            "annotations": {"test": "test"},
            "ownerReferences": [OWNER],
        },
        "spec": {"hosts": hosts, "gateways": gateways, "http": http},
    }


PREDICTOR_HOST_HEADER = "my-model-predictor.test.svc.cluster.local"
P_READY = {c.PREDICTOR_READY: "True"}

# --- KServe's createIngress matrix ----------------------------------------------------------------


@dataclass
class VSCase:
    isvc: InferenceService
    expected: dict[str, Any] | None
    use_default: bool = False
    config: IngressConfig = field(default_factory=ingress_config)


VS_CASES: dict[str, VSCase] = {
    "nil status should not be ready": VSCase(make_isvc(), None),
    "predictor missing url": VSCase(make_isvc({c.PREDICTOR: None}), None),
    "found predictor status": VSCase(
        make_isvc({c.PREDICTOR: PREDICTOR_URL}, P_READY),
        virtual_service(
            [LOCAL_HOST, EXTERNAL_HOST],
            [LOCAL_GW, INGRESS_GW],
            [route(EXTERNAL_MATCHES, PREDICTOR_HOST_HEADER)],
        ),
    ),
    "local cluster predictor": VSCase(
        make_isvc({c.PREDICTOR: "http://my-model-predictor.test.svc.cluster.local"}, P_READY),
        virtual_service(
            [LOCAL_HOST], [LOCAL_GW], [route([match(LOCAL_RE, LOCAL_GW)], PREDICTOR_HOST_HEADER)]
        ),
    ),
    "nil transformer status fails with status unknown": VSCase(
        make_isvc({c.PREDICTOR: PREDICTOR_URL, c.TRANSFORMER: None}, transformer=True), None
    ),
    "found transformer and predictor status": VSCase(
        make_isvc(
            {c.PREDICTOR: PREDICTOR_URL, c.TRANSFORMER: TRANSFORMER_URL},
            {c.PREDICTOR_READY: "True", c.TRANSFORMER_READY: "True"},
            transformer=True,
        ),
        virtual_service(
            [LOCAL_HOST, EXTERNAL_HOST],
            [LOCAL_GW, INGRESS_GW],
            [route(EXTERNAL_MATCHES, "my-model-transformer.test.svc.cluster.local")],
        ),
    ),
    "found transformer and predictor status with default suffix": VSCase(
        make_isvc(
            {
                c.PREDICTOR: "http://my-model-predictor-default.test.example.com",
                c.TRANSFORMER: "http://my-model-transformer-default.test.example.com",
            },
            {c.PREDICTOR_READY: "True", c.TRANSFORMER_READY: "True"},
            transformer=True,
        ),
        virtual_service(
            [LOCAL_HOST, EXTERNAL_HOST],
            [LOCAL_GW, INGRESS_GW],
            [route(EXTERNAL_MATCHES, "my-model-transformer-default.test.svc.cluster.local")],
        ),
        use_default=True,
    ),
    "transformer is not ready": VSCase(
        make_isvc(
            {c.PREDICTOR: PREDICTOR_URL, c.TRANSFORMER: TRANSFORMER_URL},
            {c.PREDICTOR_READY: "True", c.TRANSFORMER_READY: "False"},
            transformer=True,
        ),
        None,
        use_default=True,
    ),
    "nil explainer status fails with status unknown": VSCase(
        make_isvc({c.PREDICTOR: PREDICTOR_URL, c.EXPLAINER: None}, explainer=True), None
    ),
    "found explainer and predictor status": VSCase(
        make_isvc(
            {c.PREDICTOR: PREDICTOR_URL, c.EXPLAINER: EXPLAINER_URL},
            {c.PREDICTOR_READY: "True", c.EXPLAINER_READY: "True"},
            explainer=True,
        ),
        virtual_service(
            [LOCAL_HOST, EXTERNAL_HOST],
            [LOCAL_GW, INGRESS_GW],
            [
                route(
                    [
                        match(LOCAL_RE, LOCAL_GW, regex=EXPLAIN_RE),
                        match(EXTERNAL_RE, INGRESS_GW, regex=EXPLAIN_RE),
                    ],
                    "my-model-explainer.test.svc.cluster.local",
                ),
                route(EXTERNAL_MATCHES, PREDICTOR_HOST_HEADER),
            ],
        ),
    ),
    "explainer is not ready": VSCase(
        make_isvc(
            {c.PREDICTOR: PREDICTOR_URL, c.EXPLAINER: EXPLAINER_URL},
            {c.PREDICTOR_READY: "True", c.EXPLAINER_READY: "False"},
            explainer=True,
        ),
        None,
    ),
    "transformer, explainer and predictor: explain to the explainer, the rest to the transformer": VSCase(
        make_isvc(
            {c.PREDICTOR: PREDICTOR_URL, c.TRANSFORMER: TRANSFORMER_URL, c.EXPLAINER: EXPLAINER_URL},
            {c.PREDICTOR_READY: "True", c.TRANSFORMER_READY: "True", c.EXPLAINER_READY: "True"},
            transformer=True,
            explainer=True,
        ),
        virtual_service(
            [LOCAL_HOST, EXTERNAL_HOST],
            [LOCAL_GW, INGRESS_GW],
            [
                route(
                    [
                        match(LOCAL_RE, LOCAL_GW, regex=EXPLAIN_RE),
                        match(EXTERNAL_RE, INGRESS_GW, regex=EXPLAIN_RE),
                    ],
                    "my-model-explainer.test.svc.cluster.local",
                ),
                route(EXTERNAL_MATCHES, "my-model-transformer.test.svc.cluster.local"),
            ],
        ),
    ),
    "found predictor status with path template": VSCase(
        make_isvc({c.PREDICTOR: PREDICTOR_URL}, P_READY),
        virtual_service(
            [LOCAL_HOST, EXTERNAL_HOST, "my-domain.com"],
            [LOCAL_GW, INGRESS_GW],
            [
                route(EXTERNAL_MATCHES, PREDICTOR_HOST_HEADER),
                route(
                    [
                        match(DOMAIN_RE, INGRESS_GW, prefix="/serving/test/my-model/"),
                        match(DOMAIN_RE, INGRESS_GW, exact="/serving/test/my-model"),
                    ],
                    PREDICTOR_HOST_HEADER,
                    rewrite={"uri": "/"},
                ),
            ],
        ),
        config=ingress_config(
            ingressDomain="my-domain.com", pathTemplate="/serving/{{ .Namespace }}/{{ .Name }}"
        ),
    ),
    "isvc labelled with cluster local visibility": VSCase(
        make_isvc(
            {c.PREDICTOR: PREDICTOR_URL},
            P_READY,
            labels={c.KNATIVE_VISIBILITY_LABEL: c.CLUSTER_LOCAL_VISIBILITY},
        ),
        virtual_service(
            [LOCAL_HOST],
            [LOCAL_GW],
            [route([match(LOCAL_RE, LOCAL_GW)], PREDICTOR_HOST_HEADER)],
            labels={c.KNATIVE_VISIBILITY_LABEL: c.CLUSTER_LOCAL_VISIBILITY},
        ),
    ),
}


@pytest.mark.parametrize("case", VS_CASES.values(), ids=VS_CASES.keys())
def test_create_virtual_service(case: VSCase) -> None:
    got = desired_virtual_service(case.isvc, case.config, use_default=case.use_default)
    assert got == case.expected


def test_virtual_service_is_deterministic() -> None:
    case = VS_CASES["found explainer and predictor status"]
    first = desired_virtual_service(case.isvc, case.config, use_default=False)
    second = desired_virtual_service(copy.deepcopy(case.isvc), case.config, use_default=False)
    assert json.dumps(first) == json.dumps(second)


def test_explainer_host_header_follows_legacy_names() -> None:
    isvc = make_isvc(
        {c.PREDICTOR: PREDICTOR_URL, c.EXPLAINER: EXPLAINER_URL},
        {c.PREDICTOR_READY: "True", c.EXPLAINER_READY: "True"},
        explainer=True,
    )
    vs = desired_virtual_service(isvc, ingress_config(), use_default=True)
    assert vs is not None
    hosts = [r["headers"]["request"]["set"]["Host"] for r in vs["spec"]["http"]]
    assert hosts == [
        "my-model-explainer-default.test.svc.cluster.local",
        "my-model-predictor-default.test.svc.cluster.local",
    ]


def test_path_template_routes_stay_on_the_ingress_gateway_when_internal() -> None:
    isvc = make_isvc(
        {c.PREDICTOR: "http://my-model-predictor.test.svc.cluster.local"},
        P_READY,
        labels={c.KNATIVE_VISIBILITY_LABEL: c.CLUSTER_LOCAL_VISIBILITY},
    )
    config = ingress_config(ingressDomain="my-domain.com", pathTemplate="serving/{{.Name}}/")
    vs = desired_virtual_service(isvc, config, use_default=False)
    assert vs is not None
    assert vs["spec"]["hosts"] == [LOCAL_HOST, "my-domain.com"]
    assert vs["spec"]["gateways"] == [LOCAL_GW]
    path_route = vs["spec"]["http"][1]
    assert [m["uri"] for m in path_route["match"]] == [
        {"prefix": "/serving/my-model/"},
        {"exact": "/serving/my-model"},
    ]
    assert {g for m in path_route["match"] for g in m["gateways"]} == {INGRESS_GW}


def test_disallowed_annotations_are_not_copied() -> None:
    isvc = make_isvc({c.PREDICTOR: PREDICTOR_URL}, P_READY)
    isvc.metadata["annotations"].update(
        {c.KNATIVE_MIN_SCALE_ANNOTATION: "2", c.STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION: "s3://x"}
    )
    vs = desired_virtual_service(isvc, ingress_config(), use_default=False)
    assert vs is not None
    assert vs["metadata"]["annotations"] == {"test": "test"}


def test_external_name_service() -> None:
    isvc = make_isvc({c.PREDICTOR: PREDICTOR_URL}, P_READY)
    assert desired_external_service(isvc, ingress_config()) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": NS, "ownerReferences": [OWNER]},
        "spec": {"type": "ExternalName", "externalName": LOCAL_SVC, "sessionAffinity": "None"},
    }


# --- IngressReady gating --------------------------------------------------------------------------


GATES = {
    c.PREDICTOR: (c.PREDICTOR_READY, "Predictor ingress not created"),
    c.TRANSFORMER: (c.TRANSFORMER_READY, "Transformer ingress not created"),
    c.EXPLAINER: (c.EXPLAINER_READY, "Explainer ingress not created"),
}


@pytest.mark.parametrize("component", list(GATES))
@pytest.mark.parametrize(
    ("condition", "expected"), [(None, "Unknown"), ("Unknown", "Unknown"), ("False", "False")]
)
def test_ingress_ready_gating(component: str, condition: str | None, expected: str) -> None:
    ready = {c.PREDICTOR_READY: "True", c.TRANSFORMER_READY: "True", c.EXPLAINER_READY: "True"}
    gate_condition, reason = GATES[component]
    if condition is None:
        del ready[gate_condition]
    else:
        ready[gate_condition] = condition
    urls: dict[str, str | None] = {
        c.PREDICTOR: PREDICTOR_URL,
        c.TRANSFORMER: TRANSFORMER_URL,
        c.EXPLAINER: EXPLAINER_URL,
    }
    isvc = make_isvc(urls, ready, transformer=True, explainer=True)
    assert desired_virtual_service(isvc, ingress_config(), use_default=False) is None
    ingress = isvc.status.get_condition(c.INGRESS_READY)
    assert ingress is not None
    assert (ingress.status, ingress.reason) == (expected, reason)
    ready_condition = isvc.status.get_condition(c.READY)
    assert ready_condition is not None
    assert ready_condition.status == expected


def test_predictor_is_checked_before_transformer() -> None:
    isvc = make_isvc(
        {c.PREDICTOR: PREDICTOR_URL, c.TRANSFORMER: TRANSFORMER_URL},
        {c.PREDICTOR_READY: "False", c.TRANSFORMER_READY: "False"},
        transformer=True,
    )
    assert desired_virtual_service(isvc, ingress_config(), use_default=False) is None
    ingress = isvc.status.get_condition(c.INGRESS_READY)
    assert ingress is not None
    assert ingress.reason == "Predictor ingress not created"


def test_unknown_host_leaves_conditions_alone() -> None:
    isvc = make_isvc({c.PREDICTOR: None})
    assert desired_virtual_service(isvc, ingress_config(), use_default=False) is None
    assert isvc.status.get_condition(c.INGRESS_READY) is None


# --- getServiceHost, getServiceUrl, getHostPrefix -------------------------------------------------


SERVICE_HOST_CASES: dict[str, tuple[InferenceService, str | None]] = {
    "using knative domainTemplate: {{.Name}}.{{.Namespace}}.{{.Domain}}": (
        make_isvc({c.PREDICTOR: "http://kftest-predictor-default.user1.example.com"}),
        "kftest.user1.example.com",
    ),
    "using knative domainTemplate: {{.Name}}-{{.Namespace}}.{{.Domain}}": (
        make_isvc({c.PREDICTOR: "http://kftest-predictor-default-user1.example.com"}),
        "kftest-user1.example.com",
    ),
    "predictor without default suffix, dot template": (
        make_isvc({c.PREDICTOR: "http://kftest-predictor.user1.example.com"}),
        "kftest.user1.example.com",
    ),
    "predictor without default suffix, dash template": (
        make_isvc({c.PREDICTOR: "http://kftest-predictor-user1.example.com"}),
        "kftest-user1.example.com",
    ),
    "predictor status not available": (make_isvc(), None),
    "transformer status not available": (
        make_isvc({c.PREDICTOR: "http://kftest-predictor-default.user1.example.com"}, transformer=True),
        None,
    ),
    "transformer without default suffix": (
        make_isvc(
            {
                c.PREDICTOR: "http://kftest-predictor-default.user1.example.com",
                c.TRANSFORMER: "http://kserveTest-transformer.user1.example.com",
            },
            transformer=True,
        ),
        "kserveTest.user1.example.com",
    ),
    "name containing -default keeps its name": (
        make_isvc({c.PREDICTOR: "http://my-default-model-predictor.ns.example.com"}),
        "my-default-model.ns.example.com",
    ),
    "serviceHost ending in svc.cluster.local": (
        make_isvc({c.PREDICTOR: "http://my-model-predictor.test.svc.cluster.local"}),
        LOCAL_HOST,
    ),
}


@pytest.mark.parametrize(("isvc", "expected"), SERVICE_HOST_CASES.values(), ids=SERVICE_HOST_CASES.keys())
def test_get_service_host(isvc: InferenceService, expected: str | None) -> None:
    assert service_host(isvc) == expected


DEFAULT_PREDICTOR = "http://my-model-predictor-default.example.com"
DEFAULT_TRANSFORMER = "http://my-model-transformer-default.example.com"
PLAIN_PREDICTOR = "http://my-model-predictor.example.com"
PLAIN_TRANSFORMER = "http://my-model-transformer.example.com"
DISABLED = {"disableIstioVirtualHost": True}

SERVICE_URL_CASES: dict[str, tuple[InferenceService, dict[str, Any], str | None]] = {
    "component is empty": (make_isvc(), {}, None),
    "predictor url is empty": (make_isvc({c.PREDICTOR: None}), {}, None),
    "predictor url is not empty": (
        make_isvc({c.PREDICTOR: DEFAULT_PREDICTOR}),
        {},
        "http://my-model.example.com",
    ),
    "transformer is not empty": (
        make_isvc({c.PREDICTOR: DEFAULT_PREDICTOR, c.TRANSFORMER: DEFAULT_TRANSFORMER}, transformer=True),
        {},
        "http://my-model.example.com",
    ),
    "transformer status is not available": (
        make_isvc({c.PREDICTOR: DEFAULT_PREDICTOR}, transformer=True),
        {},
        None,
    ),
    "transformer url is empty": (
        make_isvc({c.PREDICTOR: DEFAULT_PREDICTOR, c.TRANSFORMER: None}, transformer=True),
        {},
        None,
    ),
    "transformer without default suffix": (
        make_isvc({c.PREDICTOR: PLAIN_PREDICTOR, c.TRANSFORMER: PLAIN_TRANSFORMER}, transformer=True),
        {},
        "http://my-model.example.com",
    ),
    "predictor without default suffix": (
        make_isvc({c.PREDICTOR: PLAIN_PREDICTOR}),
        {},
        "http://my-model.example.com",
    ),
    "predictor with istio disabled": (
        make_isvc({c.PREDICTOR: PLAIN_PREDICTOR}),
        DISABLED,
        "http://my-model-predictor.example.com",
    ),
    "transformer with istio disabled": (
        make_isvc({c.PREDICTOR: PLAIN_PREDICTOR, c.TRANSFORMER: PLAIN_TRANSFORMER}, transformer=True),
        DISABLED,
        "http://my-model-transformer.example.com",
    ),
    "urlScheme replaces the component scheme": (
        make_isvc({c.PREDICTOR: PREDICTOR_URL}),
        {"urlScheme": "https"},
        "https://my-model.test.example.com",
    ),
    "urlScheme applies with istio disabled too": (
        make_isvc({c.PREDICTOR: PREDICTOR_URL}),
        {"urlScheme": "https", **DISABLED},
        "https://my-model-predictor.test.example.com",
    ),
    "path based: component is empty": (
        make_isvc(),
        {"ingressDomain": "my-domain.com", "pathTemplate": "/serving/{{ .Namespace }}/{{ .Name }}"},
        None,
    ),
    "path based: predictor url is empty": (
        make_isvc({c.PREDICTOR: None}),
        {"ingressDomain": "my-domain.com", "pathTemplate": "/serving/{{ .Namespace }}/{{ .Name }}"},
        None,
    ),
    "path based: predictor url is not empty": (
        make_isvc({c.PREDICTOR: DEFAULT_PREDICTOR}),
        {"ingressDomain": "my-domain.com", "pathTemplate": "/serving/{{ .Namespace }}/{{ .Name }}"},
        "http://my-domain.com/serving/test/my-model",
    ),
}


@pytest.mark.parametrize(
    ("isvc", "overrides", "expected"), SERVICE_URL_CASES.values(), ids=SERVICE_URL_CASES.keys()
)
def test_get_service_url(isvc: InferenceService, overrides: dict[str, Any], expected: str | None) -> None:
    assert service_url(isvc, ingress_config(**overrides)) == expected


HOST_PREFIX_CASES: dict[str, tuple[bool, bool, bool, str]] = {
    "Disable virtual host is false": (False, False, False, "my-model"),
    "istio is disabled and useDefault is false": (False, True, False, "my-model-predictor"),
    "istio is disabled and useDefault is false with transformer": (True, True, False, "my-model-transformer"),
    "istio is disabled and useDefault is true": (False, True, True, "my-model-predictor-default"),
    "istio is disabled and useDefault is true with transformer": (
        True,
        True,
        True,
        "my-model-transformer-default",
    ),
}


@pytest.mark.parametrize(
    ("transformer", "disabled", "use_default", "expected"),
    HOST_PREFIX_CASES.values(),
    ids=HOST_PREFIX_CASES.keys(),
)
def test_get_host_prefix(transformer: bool, disabled: bool, use_default: bool, expected: str) -> None:
    isvc = make_isvc(transformer=transformer)
    assert host_prefix(isvc, disable_virtual_host=disabled, use_default=use_default) == expected
    config = ingress_config(disableIstioVirtualHost=disabled)
    assert address_url(isvc, config, use_default=use_default) == f"http://{expected}.test.svc.cluster.local"


# --- HostRegExp -----------------------------------------------------------------------------------


def test_host_regexp_external_host() -> None:
    regex = host_regexp("my-model.test.example.com")
    assert regex == EXTERNAL_RE
    assert re.match(regex, "my-model.test.example.com")
    assert re.match(regex, "my-model.test.example.com:8080")
    assert not re.match(regex, "my-model.test.example.com.evil")
    assert not re.match(regex, "my-modelXtest.example.com")


def test_host_regexp_cluster_local_host() -> None:
    regex = host_regexp(LOCAL_HOST)
    assert regex == LOCAL_RE
    for host in ("my-model.test", "my-model.test.svc", LOCAL_HOST, "my-model.test:80", f"{LOCAL_HOST}:8080"):
        assert re.match(regex, host), host
    assert not re.match(regex, "my-model.test.svc.cluster")
    assert not re.match(regex, "my-model.other")


def test_host_regexp_escapes_go_metacharacters_only() -> None:
    assert host_regexp("a+b.c") == r"^a\+b\.c(?::\d{1,5})?$"


# --- pathTemplate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("/serving/{{ .Namespace }}/{{ .Name }}", "/serving/test/my-model"),
        ("/serving/{{.Namespace}}/{{.Name}}", "/serving/test/my-model"),
        ("serving/{{ .Name }}", "/serving/my-model"),
        ("/{{ .Name }}-{{ .Namespace }}/", "/my-model-test/"),
    ],
)
def test_render_path_template(template: str, expected: str) -> None:
    assert render_path_template(template, NAME, NS) == expected


@pytest.mark.parametrize(
    "template",
    [
        "/serving/{{ .Foo }}",
        "/serving/{{ .Name | printf }}",
        "/serving/{{- .Name }}",
        "/serving/{{ Name }}",
        "/serving/{{/* comment */}}",
        "/serving/{{ .Name }}}}",
        "/serving/{{ .Name }}?x=1",
        "/serving/{{ .Name }} two",
        "http://example.com/{{ .Name }}",
        "example.com:8080/{{ .Namespace }}/{{ .Name }}",
        "{{ .Namespace }}:{{ .Name }}",
        ":{{ .Name }}",
    ],
)
def test_render_path_template_rejects_anything_else(template: str) -> None:
    with pytest.raises(IngressConfigError, match="pathTemplate"):
        render_path_template(template, NAME, NS)


def test_bad_path_template_fails_the_url_and_the_virtual_service() -> None:
    isvc = make_isvc({c.PREDICTOR: PREDICTOR_URL}, P_READY)
    config = ingress_config(ingressDomain="my-domain.com", pathTemplate="/serving/{{ .Foo }}")
    assert isinstance(IngressConfigError("x"), ValueError)
    with pytest.raises(IngressConfigError, match=r"\.Foo"):
        service_url(isvc, config)
    with pytest.raises(IngressConfigError, match=r"\.Foo"):
        desired_virtual_service(isvc, config, use_default=False)


# --- The reconciler over the shared fake cluster ----------------------------------------------------


def service_defaults(resource: Resource, obj: Object) -> None:
    """What the API server adds to a Service."""
    if resource == SERVICES:
        obj.setdefault("status", {"loadBalancer": {}})


class Api:
    """The fake cluster with the ingress's kinds watched; `written()` drains the writes as kinds."""

    def __init__(self) -> None:
        self.cluster = FakeCluster(defaulter=service_defaults)
        for resource in (SERVICES, VIRTUAL_SERVICES, KNATIVE_SERVICES):
            self.cluster.watch(resource)

    def get(self, resource: Resource, name: str, namespace: str) -> Object | None:
        return self.cluster.object(resource, name, namespace)

    def written(self) -> list[str]:
        kinds = [a.resource.kind for a in self.cluster.actions]
        self.cluster.actions.clear()
        self.cluster.sync()
        return kinds


def reconciler(api: Api) -> IngressReconciler:
    return IngressReconciler(api.cluster.client, api.cluster.cache)


async def test_reconcile_writes_once_then_nothing_then_follows_a_domain_change() -> None:
    api = Api()
    config = ingress_config()
    isvc = make_isvc({c.PREDICTOR: PREDICTOR_URL}, P_READY)
    await reconciler(api).reconcile(isvc, config)
    assert api.written() == ["Service", "VirtualService"]
    vs = api.get(VIRTUAL_SERVICES, NAME, NS)
    assert vs is not None
    assert vs["spec"]["hosts"] == [LOCAL_HOST, EXTERNAL_HOST]
    assert isvc.status.url == "http://my-model.test.example.com"
    assert isvc.status.address is not None
    assert isvc.status.address.url == "http://my-model.test.svc.cluster.local"
    ingress = isvc.status.get_condition(c.INGRESS_READY)
    assert ingress is not None
    assert ingress.is_true
    assert isvc.status.is_ready()

    again = make_isvc({c.PREDICTOR: PREDICTOR_URL}, P_READY)
    await reconciler(api).reconcile(again, config)
    assert api.written() == []
    assert again.status.url == "http://my-model.test.example.com"

    moved = make_isvc({c.PREDICTOR: "http://my-model-predictor.test.new.example.org"}, P_READY)
    await reconciler(api).reconcile(moved, config)
    assert api.written() == ["VirtualService"]
    vs = api.get(VIRTUAL_SERVICES, NAME, NS)
    assert vs is not None
    assert vs["spec"]["hosts"] == [LOCAL_HOST, "my-model.test.new.example.org"]
    assert moved.status.url == "http://my-model.test.new.example.org"


async def test_reconcile_rewrites_when_the_ingress_domain_of_a_path_template_changes() -> None:
    api = Api()
    template = "/serving/{{ .Namespace }}/{{ .Name }}"
    isvc = make_isvc({c.PREDICTOR: PREDICTOR_URL}, P_READY)
    await reconciler(api).reconcile(isvc, ingress_config(ingressDomain="a.com", pathTemplate=template))
    assert api.written() == ["Service", "VirtualService"]
    isvc = make_isvc({c.PREDICTOR: PREDICTOR_URL}, P_READY)
    await reconciler(api).reconcile(isvc, ingress_config(ingressDomain="b.com", pathTemplate=template))
    assert api.written() == ["VirtualService"]
    assert isvc.status.url == "http://b.com/serving/test/my-model"


async def test_reconcile_without_component_url_changes_nothing() -> None:
    api = Api()
    isvc = make_isvc({c.PREDICTOR: None}, P_READY)
    before = isvc.to_object()
    await reconciler(api).reconcile(isvc, ingress_config())
    assert api.written() == []
    assert isvc.to_object() == before


async def test_reconcile_with_a_component_not_ready_writes_nothing_and_explains() -> None:
    api = Api()
    isvc = make_isvc({c.PREDICTOR: PREDICTOR_URL}, {c.PREDICTOR_READY: "False"})
    await reconciler(api).reconcile(isvc, ingress_config())
    assert api.written() == []
    assert isvc.status.url is None
    ingress = isvc.status.get_condition(c.INGRESS_READY)
    assert ingress is not None
    assert (ingress.status, ingress.reason) == ("False", "Predictor ingress not created")


@pytest.mark.parametrize(
    ("resource", "reason", "kind"),
    [
        (SERVICES, "ServiceNotOwned", "Service"),
        (VIRTUAL_SERVICES, "VirtualServiceNotOwned", "VirtualService"),
    ],
)
async def test_a_child_someone_else_controls_is_never_overwritten(
    resource: Resource, reason: str, kind: str
) -> None:
    api = Api()
    foreign_owner = {**OWNER, "name": "other", "uid": "other-uid"}
    api.cluster.add(
        resource, {"metadata": {"name": NAME, "namespace": NS, "ownerReferences": [foreign_owner]}}
    )
    isvc = make_isvc({c.PREDICTOR: PREDICTOR_URL}, P_READY)
    with pytest.raises(NotControlled) as info:
        await reconciler(api).reconcile(isvc, ingress_config())
    assert info.value.reason == reason
    assert info.value.message == (
        f'{kind} "{NS}/{NAME}" already exists and is not controlled by InferenceService "{NAME}"'
    )
    assert resource.kind not in api.written(), "not even attempted"
    kept = api.get(resource, NAME, NS)
    assert kept is not None
    assert kept["metadata"]["ownerReferences"] == [foreign_owner]
    assert isvc.status.url is None


async def test_disabled_virtual_host_writes_nothing_and_uses_the_component_names() -> None:
    api = Api()
    isvc = make_isvc({c.PREDICTOR: PREDICTOR_URL})
    await reconciler(api).reconcile(isvc, ingress_config(disableIstioVirtualHost=True))
    assert api.written() == []
    assert isvc.status.url == PREDICTOR_URL
    assert isvc.status.address is not None
    assert isvc.status.address.url == "http://my-model-predictor.test.svc.cluster.local"
    ingress = isvc.status.get_condition(c.INGRESS_READY)
    assert ingress is not None
    assert ingress.is_true


async def test_legacy_predictor_ksvc_switches_to_default_names() -> None:
    api = Api()
    api.cluster.add(KNATIVE_SERVICES, {"metadata": {"name": "my-model-predictor-default", "namespace": NS}})
    isvc = make_isvc({c.PREDICTOR: "http://my-model-predictor-default.test.example.com"}, P_READY)
    await reconciler(api).reconcile(isvc, ingress_config())
    vs = api.get(VIRTUAL_SERVICES, NAME, NS)
    assert vs is not None
    assert vs["spec"]["http"][0]["headers"]["request"]["set"]["Host"] == (
        "my-model-predictor-default.test.svc.cluster.local"
    )
    assert isvc.status.url == "http://my-model.test.example.com"
    disabled = make_isvc({c.PREDICTOR: "http://my-model-predictor-default.test.example.com"})
    await reconciler(api).reconcile(disabled, ingress_config(disableIstioVirtualHost=True))
    assert disabled.status.address is not None
    assert disabled.status.address.url == "http://my-model-predictor-default.test.svc.cluster.local"


@dataclass
class UrlRow:
    """One row of the reference's URL table (Serverless rows; Raw mode has its own reconciler)."""

    component_url: str
    url: str
    address: str
    hosts: list[str] | None
    labels: dict[str, str] | None = None
    config: dict[str, Any] = field(default_factory=dict)


URL_TABLE: dict[str, UrlRow] = {
    "default Knative domainTemplate {{.Name}}.{{.Namespace}}.{{.Domain}}": UrlRow(
        "http://my-model-predictor.test.example.com",
        "http://my-model.test.example.com",
        "http://my-model.test.svc.cluster.local",
        [LOCAL_HOST, "my-model.test.example.com"],
    ),
    "Knative domainTemplate {{.Name}}-{{.Namespace}}.{{.Domain}}": UrlRow(
        "http://my-model-predictor-test.example.com",
        "http://my-model-test.example.com",
        "http://my-model.test.svc.cluster.local",
        [LOCAL_HOST, "my-model-test.example.com"],
    ),
    "cluster-local visibility label": UrlRow(
        "http://my-model-predictor.test.svc.cluster.local",
        "http://my-model.test.svc.cluster.local",
        "http://my-model.test.svc.cluster.local",
        [LOCAL_HOST],
        labels={c.KNATIVE_VISIBILITY_LABEL: c.CLUSTER_LOCAL_VISIBILITY},
    ),
    "disableIstioVirtualHost": UrlRow(
        "http://my-model-predictor.test.example.com",
        "http://my-model-predictor.test.example.com",
        "http://my-model-predictor.test.svc.cluster.local",
        None,
        config={"disableIstioVirtualHost": True},
    ),
}


@pytest.mark.parametrize("row", URL_TABLE.values(), ids=URL_TABLE.keys())
async def test_url_table(row: UrlRow) -> None:
    api = Api()
    isvc = make_isvc({c.PREDICTOR: row.component_url}, P_READY, labels=row.labels)
    await reconciler(api).reconcile(isvc, ingress_config(**row.config))
    assert isvc.status.url == row.url
    assert isvc.status.address is not None
    assert isvc.status.address.url == row.address
    vs = api.get(VIRTUAL_SERVICES, NAME, NS)
    if row.hosts is None:
        assert vs is None
    else:
        assert vs is not None
        assert vs["spec"]["hosts"] == row.hosts
        internal = row.hosts == [LOCAL_HOST]
        assert vs["spec"]["gateways"] == ([LOCAL_GW] if internal else [LOCAL_GW, INGRESS_GW])
