"""The `inferenceservice-config` models: shipped defaults, per-key parsing, per-key errors, quantities."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from apis.config import (
    KEYS,
    SHIPPED_DEFAULTS,
    AgentConfig,
    BatcherConfig,
    ConfigError,
    CredentialsConfig,
    DeployConfig,
    ExplainersConfig,
    InferenceServicesConfig,
    IngressConfig,
    LoggerConfig,
    MetricsAggregatorConfig,
    RouterConfig,
    StorageInitializerConfig,
)
from apis.quantity import QuantityError, parse_quantity

CONFIGMAP_YAML = Path(__file__).resolve().parents[2] / "config" / "configmap" / "inferenceservice.yaml"

ACCESSORS: dict[str, Callable[[InferenceServicesConfig], BaseModel]] = {
    "deploy": InferenceServicesConfig.deploy,
    "ingress": InferenceServicesConfig.ingress,
    "storageInitializer": InferenceServicesConfig.storage_initializer,
    "credentials": InferenceServicesConfig.credentials,
    "logger": InferenceServicesConfig.logger,
    "batcher": InferenceServicesConfig.batcher,
    "agent": InferenceServicesConfig.agent,
    "explainers": InferenceServicesConfig.explainers,
    "metricsAggregator": InferenceServicesConfig.metrics_aggregator,
    "router": InferenceServicesConfig.router,
}


def shipped() -> dict[str, str]:
    data: dict[str, str] = yaml.safe_load(CONFIGMAP_YAML.read_text())["data"]
    return data


def config(**keys: Any) -> InferenceServicesConfig:
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in keys.items()}
    return InferenceServicesConfig.from_configmap(data)


def test_accessor_table_covers_every_key() -> None:
    assert set(ACCESSORS) == set(KEYS) == set(SHIPPED_DEFAULTS)


# --- the shipped ConfigMap -----------------------------------------------------------------------------


def test_shipped_manifest_is_the_configmap_kserve_installs() -> None:
    manifest = yaml.safe_load(CONFIGMAP_YAML.read_text())
    assert manifest["kind"] == "ConfigMap"
    assert manifest["metadata"] == {"name": "inferenceservice-config", "namespace": "kserve"}
    assert set(manifest["data"]) == {*KEYS, "_example"}
    kustomization = yaml.safe_load((CONFIGMAP_YAML.parent / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["inferenceservice.yaml"]


@pytest.mark.parametrize("key", KEYS)
def test_shipped_manifest_matches_the_defaults_constant(key: str) -> None:
    assert json.loads(shipped()[key]) == json.loads(SHIPPED_DEFAULTS[key])


def test_example_key_documents_every_key() -> None:
    example = shipped()["_example"]
    for key in KEYS:
        assert key in example


def test_shipped_manifest_parses_without_errors() -> None:
    assert InferenceServicesConfig.from_configmap(shipped()).errors() == {}


def test_shipped_values() -> None:
    cfg = InferenceServicesConfig.from_configmap(shipped())
    assert cfg.deploy().default_deployment_mode == "Serverless"
    ingress = cfg.ingress()
    assert ingress.ingress_gateway == "knative-serving/knative-ingress-gateway"
    assert ingress.ingress_service == "istio-ingressgateway.istio-system.svc.cluster.local"
    assert ingress.local_gateway == "knative-serving/knative-local-gateway"
    assert ingress.local_gateway_service == "knative-local-gateway.istio-system.svc.cluster.local"
    assert ingress.ingress_domain == "example.com"
    assert ingress.ingress_class_name == "istio"
    assert ingress.domain_template == "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
    assert ingress.url_scheme == "http"
    assert ingress.disable_istio_virtual_host is False
    assert ingress.path_template == ""
    assert ingress.disable_ingress_creation is False
    storage = cfg.storage_initializer()
    assert storage.image == "kserve/storage-initializer:latest"
    assert storage.resources() == {
        "limits": {"cpu": "1", "memory": "1Gi"},
        "requests": {"cpu": "100m", "memory": "100Mi"},
    }
    assert storage.enable_direct_pvc_volume_mount is False
    credentials = cfg.credentials()
    assert credentials.storage_spec_secret_name == "storage-config"
    assert credentials.storage_secret_name_annotation == "serving.kserve.io/storageSecretName"
    assert credentials.gcs.gcs_credential_file_name == "gcloud-application-credentials.json"
    assert credentials.s3.s3_access_key_id_name == "AWS_ACCESS_KEY_ID"
    assert credentials.s3.s3_secret_access_key_name == "AWS_SECRET_ACCESS_KEY"
    assert credentials.s3.s3_endpoint == ""
    logger = cfg.logger()
    assert (logger.image, logger.default_url) == ("kserve/agent:latest", "http://default-broker")
    assert logger.resources()["requests"] == {"cpu": "100m", "memory": "100Mi"}
    batcher = cfg.batcher()
    assert batcher.resources() == {
        "limits": {"cpu": "1", "memory": "1Gi"},
        "requests": {"cpu": "1", "memory": "1Gi"},
    }
    assert (batcher.max_batch_size, batcher.max_latency) == (None, None)
    agent = cfg.agent()
    assert agent.image == "kserve/agent:latest"
    assert agent.resources()["limits"] == {"cpu": "1", "memory": "1Gi"}
    explainers = cfg.explainers()
    assert explainers.alibi is not None
    assert explainers.alibi.image == "kserve/alibi-explainer"
    assert explainers.art is not None
    assert explainers.art.default_image_version == "latest"
    metrics = cfg.metrics_aggregator()
    assert (metrics.enable_metric_aggregation, metrics.enable_prometheus_scraping) == ("false", "false")
    assert (metrics.aggregation_enabled, metrics.scraping_enabled) == (False, False)
    assert cfg.router().image == "kserve/router:latest"


# --- missing keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [k for k in KEYS if k not in ("ingress", "metricsAggregator")])
def test_missing_key_falls_back_to_the_shipped_value(key: str) -> None:
    empty = InferenceServicesConfig.from_configmap({})
    full = InferenceServicesConfig.from_configmap(shipped())
    assert ACCESSORS[key](empty) == ACCESSORS[key](full)


def test_missing_ingress_key_gives_kserve_defaults_without_gateways() -> None:
    """KServe's TestNewIngressConfig: no `ingress` key in the data is no error, only defaults."""
    ingress = InferenceServicesConfig.from_configmap(None).ingress()
    assert (ingress.ingress_gateway, ingress.ingress_service) == ("", "")
    assert (ingress.local_gateway, ingress.local_gateway_service) == ("", "")
    assert (ingress.ingress_domain, ingress.url_scheme) == ("example.com", "http")
    assert ingress.domain_template == "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
    assert (ingress.disable_istio_virtual_host, ingress.path_template) == (False, "")


def test_missing_metrics_aggregator_key_gives_empty_strings() -> None:
    """KServe's pod webhook then writes both annotations as ""."""
    metrics = InferenceServicesConfig.from_configmap({}).metrics_aggregator()
    assert (metrics.enable_metric_aggregation, metrics.enable_prometheus_scraping) == ("", "")
    assert (metrics.aggregation_enabled, metrics.scraping_enabled) == (False, False)


def test_required_keys_chosen_by_the_caller() -> None:
    cfg = InferenceServicesConfig.from_configmap(
        {"ingress": SHIPPED_DEFAULTS["ingress"]}, required=["deploy"]
    )
    with pytest.raises(ConfigError, match='key "deploy": is missing'):
        cfg.deploy()
    assert cfg.ingress().ingress_domain == "example.com"
    assert cfg.logger().default_url == "http://default-broker"


def test_unknown_required_key_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown inferenceservice-config keys in required: nope"):
        InferenceServicesConfig.from_configmap({}, required=["nope"])


# --- every key parsed ----------------------------------------------------------------------------------

FULL: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "deploy": ({"defaultDeploymentMode": "RawDeployment"}, {"default_deployment_mode": "RawDeployment"}),
    "ingress": (
        {
            "ingressGateway": "gw/ext",
            "ingressService": "ext.svc",
            "localGateway": "gw/local",
            "localGatewayService": "local.svc",
            "ingressDomain": "models.example.org",
            "ingressClassName": "nginx",
            "domainTemplate": "{{ .Name }}.{{ .IngressDomain }}",
            "urlScheme": "https",
            "disableIstioVirtualHost": True,
            "pathTemplate": "/serving/{{ .Namespace }}/{{ .Name }}",
            "disableIngressCreation": True,
        },
        {
            "ingress_gateway": "gw/ext",
            "ingress_service": "ext.svc",
            "local_gateway": "gw/local",
            "local_gateway_service": "local.svc",
            "ingress_domain": "models.example.org",
            "ingress_class_name": "nginx",
            "domain_template": "{{ .Name }}.{{ .IngressDomain }}",
            "url_scheme": "https",
            "disable_istio_virtual_host": True,
            "path_template": "/serving/{{ .Namespace }}/{{ .Name }}",
            "disable_ingress_creation": True,
        },
    ),
    "storageInitializer": (
        {
            "image": "my/si:1",
            "cpuRequest": "50m",
            "cpuLimit": "2",
            "memoryRequest": "64Mi",
            "memoryLimit": "2Gi",
            "enableDirectPvcVolumeMount": True,
        },
        {
            "image": "my/si:1",
            "enable_direct_pvc_volume_mount": True,
            "resources()": {
                "limits": {"cpu": "2", "memory": "2Gi"},
                "requests": {"cpu": "50m", "memory": "64Mi"},
            },
        },
    ),
    "credentials": (
        {
            "storageSpecSecretName": "my-storage",
            "storageSecretNameAnnotation": "example.com/secret",
            "gcs": {"gcsCredentialFileName": "sa.json"},
            "s3": {
                "s3AccessKeyIDName": "id",
                "s3SecretAccessKeyName": "key",
                "s3Endpoint": "minio:9000",
                "s3UseHttps": "0",
                "s3Region": "eu-west-1",
                "s3VerifySSL": "0",
                "s3UseVirtualBucket": "false",
                "s3UseAnonymousCredential": "true",
                "s3CABundle": "/ca.pem",
            },
        },
        {
            "storage_spec_secret_name": "my-storage",
            "storage_secret_name_annotation": "example.com/secret",
            "gcs.gcs_credential_file_name": "sa.json",
            "s3.s3_access_key_id_name": "id",
            "s3.s3_secret_access_key_name": "key",
            "s3.s3_endpoint": "minio:9000",
            "s3.s3_use_https": "0",
            "s3.s3_region": "eu-west-1",
            "s3.s3_verify_ssl": "0",
            "s3.s3_use_virtual_bucket": "false",
            "s3.s3_use_anonymous_credential": "true",
            "s3.s3_ca_bundle": "/ca.pem",
        },
    ),
    "logger": (
        {"image": "my/agent", "defaultUrl": "http://sink", "cpuLimit": "3"},
        {"image": "my/agent", "default_url": "http://sink", "cpu_limit": "3"},
    ),
    "batcher": (
        {"image": "my/agent", "maxBatchSize": "64", "maxLatency": 500},
        {"image": "my/agent", "max_batch_size": "64", "max_latency": "500"},
    ),
    "agent": (
        {"image": "my/agent:2", "memoryLimit": "512Mi"},
        {"image": "my/agent:2", "memory_limit": "512Mi", "memory_request": "100Mi"},
    ),
    "explainers": (
        {"art": {"image": "my/art", "defaultImageVersion": "v2"}},
        {"alibi": None, "art.image": "my/art", "art.default_image_version": "v2"},
    ),
    "metricsAggregator": (
        {"enableMetricAggregation": "true", "enablePrometheusScraping": True},
        {
            "enable_metric_aggregation": "true",
            "enable_prometheus_scraping": "true",
            "aggregation_enabled": True,
            "scraping_enabled": True,
        },
    ),
    "router": (
        {"image": "my/router", "headers": {"propagate": ["Authorization"]}},
        {"image": "my/router", "headers": {"propagate": ["Authorization"]}},
    ),
}


def attribute(model: BaseModel, dotted: str) -> Any:
    value: Any = model
    for part in dotted.split("."):
        value = getattr(value, part.removesuffix("()"))
        if part.endswith("()"):
            value = value()
    return value


@pytest.mark.parametrize("key", KEYS)
def test_every_key_parses_every_field(key: str) -> None:
    value, expected = FULL[key]
    model = ACCESSORS[key](config(**{key: value, "ingress": FULL["ingress"][0]}))
    assert {name: attribute(model, name) for name in expected} == expected


def test_models_are_the_documented_types() -> None:
    cfg = InferenceServicesConfig.from_configmap(shipped())
    expected = {
        "deploy": DeployConfig,
        "ingress": IngressConfig,
        "storageInitializer": StorageInitializerConfig,
        "credentials": CredentialsConfig,
        "logger": LoggerConfig,
        "batcher": BatcherConfig,
        "agent": AgentConfig,
        "explainers": ExplainersConfig,
        "metricsAggregator": MetricsAggregatorConfig,
        "router": RouterConfig,
    }
    for key, model in expected.items():
        assert type(ACCESSORS[key](cfg)) is model


def test_unknown_fields_round_trip() -> None:
    cfg = config(ingress={**FULL["ingress"][0], "additionalIngressDomains": ["a.example"]})
    dumped = cfg.ingress().model_dump(by_alias=True)
    assert dumped["additionalIngressDomains"] == ["a.example"]
    assert dumped["ingressGateway"] == "gw/ext"


def test_missing_fields_take_kserve_defaults() -> None:
    cfg = config(
        ingress={"ingressGateway": "a/b", "ingressService": "c"},
        storageInitializer={"image": "x"},
        credentials={},
        metricsAggregator={},
    )
    ingress = cfg.ingress()
    assert (ingress.ingress_domain, ingress.url_scheme, ingress.local_gateway) == ("example.com", "http", "")
    assert ingress.domain_template == "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
    assert cfg.storage_initializer().resources()["requests"] == {"cpu": "100m", "memory": "100Mi"}
    # KServe's built-in S3 key names apply when the key says nothing (the shipped ConfigMap overrides them).
    s3 = cfg.credentials().s3
    assert (s3.s3_access_key_id_name, s3.s3_secret_access_key_name) == (
        "awsAccessKeyID",
        "awsSecretAccessKey",
    )
    assert cfg.metrics_aggregator().enable_metric_aggregation == ""


def test_empty_strings_mean_unset_where_kserve_treats_them_so() -> None:
    cfg = config(
        ingress={
            "ingressGateway": "a/b",
            "ingressService": "c",
            "ingressDomain": "",
            "urlScheme": "",
            "domainTemplate": "",
        },
        storageInitializer={"image": ""},
        agent={"image": ""},
        credentials={
            "storageSpecSecretName": "",
            "s3": {"s3AccessKeyIDName": ""},
            "gcs": {"gcsCredentialFileName": ""},
        },
        batcher={"maxBatchSize": ""},
    )
    assert (cfg.ingress().ingress_domain, cfg.ingress().url_scheme) == ("example.com", "http")
    assert cfg.ingress().domain_template == "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
    assert cfg.storage_initializer().image == "kserve/storage-initializer:latest"
    assert cfg.agent().image == "kserve/agent:latest"
    assert cfg.credentials().storage_spec_secret_name == "storage-config"
    assert cfg.credentials().s3.s3_access_key_id_name == "awsAccessKeyID"
    assert cfg.credentials().gcs.gcs_credential_file_name == "gcloud-application-credentials.json"
    assert cfg.batcher().max_batch_size is None


def test_quantities_given_as_json_numbers_are_accepted() -> None:
    assert config(agent={"cpuLimit": 2, "cpuRequest": 0.5}).agent().resources()["limits"]["cpu"] == "2"
    assert config(agent={"cpuRequest": 0.5}).agent().cpu_request == "0.5"


def test_results_are_memoised_per_key() -> None:
    cfg = InferenceServicesConfig.from_configmap({"logger": "{", "ingress": SHIPPED_DEFAULTS["ingress"]})
    assert cfg.agent() is cfg.agent()
    with pytest.raises(ConfigError) as first:
        cfg.logger()
    with pytest.raises(ConfigError) as second:
        cfg.logger()
    assert first.value is second.value


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_malformed_json_names_the_key_and_leaves_other_keys_usable(key: str) -> None:
    data = dict(shipped())
    data[key] = '{"image": '
    cfg = InferenceServicesConfig.from_configmap(data)
    with pytest.raises(ConfigError) as info:
        ACCESSORS[key](cfg)
    assert info.value.key == key
    assert str(info.value) == (
        f'inferenceservice-config key "{key}": invalid JSON at line 1 column 11: Expecting value'
    )
    for other, accessor in ACCESSORS.items():
        if other != key:
            accessor(cfg)
    assert list(cfg.errors()) == [key]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("agent", {"memoryRequest": "abc"}, "memoryRequest: 'abc' is not a Kubernetes quantity"),
        ("agent", {"cpuLimit": ""}, "cpuLimit: an empty string is not a Kubernetes quantity"),
        ("agent", {"cpuLimit": True}, "cpuLimit: quantity must be a string"),
        ("storageInitializer", {"cpuRequest": "1 core"}, "cpuRequest: '1 core' is not a Kubernetes quantity"),
        ("storageInitializer", {"memoryLimit": "1GB"}, "memoryLimit: '1GB' is not a Kubernetes quantity"),
        ("logger", {"memoryLimit": "1Mb"}, "memoryLimit: '1Mb' is not a Kubernetes quantity"),
        ("logger", {"memoryLimit": " 1Gi"}, "memoryLimit: ' 1Gi' is not a Kubernetes quantity"),
        ("batcher", {"cpuRequest": "x"}, "cpuRequest: 'x' is not a Kubernetes quantity"),
        ("batcher", {"maxBatchSize": "many"}, "maxBatchSize: must be a whole number, got 'many'"),
        ("router", {"cpuLimit": "1.2.3"}, "cpuLimit: '1.2.3' is not a Kubernetes quantity"),
        (
            "deploy",
            {"defaultDeploymentMode": "Serverfull"},
            "must be one of Serverless, RawDeployment, ModelMesh",
        ),
        ("deploy", {}, 'key "deploy": defaultDeploymentMode: Field required'),
        ("ingress", {"ingressGateway": "a/b"}, 'key "ingress": ingressService is required'),
        ("ingress", {}, "ingressGateway and ingressService are required"),
        (
            "ingress",
            {"ingressGateway": "a/b", "ingressService": "s", "pathTemplate": "/x/{{ .Name }}"},
            "ingressDomain is required when pathTemplate is set",
        ),
        (
            "ingress",
            {
                "ingressGateway": "a/b",
                "ingressService": "s",
                "ingressDomain": "d",
                "pathTemplate": "/{{ .Name }",
            },
            "pathTemplate: unbalanced",
        ),
        (
            "ingress",
            {"ingressGateway": "a/b", "ingressService": "s", "disableIstioVirtualHost": "maybe"},
            "disableIstioVirtualHost: Input should be a valid boolean",
        ),
        (
            "metricsAggregator",
            {"enableMetricAggregation": "yes"},
            'must be "true", "false" or "", got \'yes\'',
        ),
        ("metricsAggregator", {"enablePrometheusScraping": 1}, "enablePrometheusScraping: must be"),
        ("credentials", {"s3": "minio"}, "s3: Input should be a valid dictionary"),
        ("explainers", {"art": {"image": "x"}}, "art.defaultImageVersion: Field required"),
    ],
)
def test_invalid_field_names_key_and_field(key: str, value: dict[str, Any], message: str) -> None:
    cfg = config(**{key: value})
    with pytest.raises(ConfigError) as info:
        ACCESSORS[key](cfg)
    assert str(info.value).startswith(f'inferenceservice-config key "{key}": ')
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[]", "must be a JSON object, got list"),
        ('"text"', "must be a JSON object, got str"),
        ("", "invalid JSON at line 1 column 1: Expecting value"),
        ('{"a": 1,}', "invalid JSON at line 1 column 9"),
    ],
)
def test_non_object_json(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        InferenceServicesConfig.from_configmap({"agent": raw}).agent()


def test_non_string_configmap_value() -> None:
    data: dict[str, Any] = {"agent": {"image": "x"}}
    with pytest.raises(ConfigError, match='key "agent": value must be a JSON string, got dict'):
        InferenceServicesConfig.from_configmap(data).agent()


@pytest.mark.parametrize(
    ("key", "raw", "attribute", "want"),
    [
        # Go's encoding/json matches field names exactly, else case-insensitively; the last key wins.
        ("ingress", '{"IngressGateway": "a/b", "INGRESSSERVICE": "s"}', "ingress_service", "s"),
        ("ingress", '{"ingressGateway": "a/b", "ingressService": "s", "IngressDomain": "x.io"}',
         "ingress_domain", "x.io"),
        ("ingress", '{"ingressGateway": "a/b", "ingressService": "s", "ingressDomain": "one.io", '
         '"INGRESSDOMAIN": "two.io"}', "ingress_domain", "two.io"),
        ("ingress", '{"ingressGateway": "a/b", "ingressService": "s", "INGRESSDOMAIN": "two.io", '
         '"ingressDomain": "one.io"}', "ingress_domain", "one.io"),
        # Go folds the Kelvin sign like k and the long s like s.
        ("ingress", '{"ingressGateway": "a/b", "ingre\u017fsService": "s"}', "ingress_service", "s"),
        ("deploy", '{"DefaultDeploymentMode": "RawDeployment"}', "default_deployment_mode", "RawDeployment"),
        ("logger", '{"DEFAULTURL": "http://sink", "image": "x"}', "default_url", "http://sink"),
        ("storageInitializer", '{"CpuLimit": "2"}', "cpu_limit", "2"),
        ("credentials", '{"S3": {"S3Endpoint": "minio:9000"}}', "s3.s3_endpoint", "minio:9000"),
        # A repeated nested object merges into the first, as Go decodes into the same struct.
        ("credentials", '{"s3": {"s3Endpoint": "e"}, "S3": {"s3Region": "r"}}', "s3.s3_region", "r"),
        ("credentials", '{"s3": {"s3Endpoint": "e"}, "S3": {"s3Region": "r"}}', "s3.s3_endpoint", "e"),
        ("explainers", '{"ALIBI": {"Image": "a", "DefaultImageVersion": "1"}}', "alibi.image", "a"),
        ("metricsAggregator", '{"EnableMetricAggregation": "true"}', "enable_metric_aggregation", "true"),
        # null leaves a field at its default (a pointer field becomes nil).
        ("ingress", '{"ingressGateway": "a/b", "ingressService": "s", "ingressDomain": null}',
         "ingress_domain", "example.com"),
        ("ingress", '{"ingressGateway": "a/b", "ingressService": "s", "ingressClassName": "x", '
         '"IngressClassName": null}', "ingress_class_name", None),
        ("explainers", '{"alibi": null}', "alibi", None),
        # A key that matches no field case-insensitively is kept as an unknown field.
        ("ingress", '{"ingressGateway": "a/b", "ingressService": "s", "ingress_domain": "z"}',
         "ingress_domain", "example.com"),
    ],
)  # fmt: skip
def test_keys_match_as_gos_json_decoder_matches_them(key: str, raw: str, attribute: str, want: Any) -> None:
    value: Any = ACCESSORS[key](InferenceServicesConfig.from_configmap({key: raw}))
    for part in attribute.split("."):
        value = getattr(value, part)
    assert value == want


def test_several_field_errors_are_reported_together_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        config(agent={"cpuLimit": "x", "memoryLimit": "y"}).agent()
    assert "cpuLimit: 'x'" in str(info.value)
    assert "memoryLimit: 'y'" in str(info.value)
    assert "\n" not in str(info.value)


# --- quantities ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", Decimal(1)),
        ("100m", Decimal("0.1")),
        ("100Mi", Decimal(100 * 1024**2)),
        ("1Gi", Decimal(1024**3)),
        ("1.5Gi", Decimal(3 * 1024**3 // 2)),
        ("500k", Decimal(500_000)),
        ("2M", Decimal(2_000_000)),
        ("1e3", Decimal(1000)),
        ("1E-2", Decimal("0.01")),
        ("250u", Decimal("0.00025")),
        ("7n", Decimal("0.000000007")),
        (".5", Decimal("0.5")),
        ("5.", Decimal(5)),
        ("+2Ki", Decimal(2048)),
        ("0", Decimal(0)),
        ("-1.5", Decimal("-1.5")),
        ("1e+3", Decimal(1000)),
        ("00.100", Decimal("0.1")),
        # What Go's ParseQuantity accepts as zero: every part of the number is optional.
        (".", Decimal(0)),
        ("+", Decimal(0)),
        ("Mi", Decimal(0)),
        ("e3", Decimal(0)),
        ("+.m", Decimal(0)),
    ],
)
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    # Each is refused by Go's ParseQuantity too (whitespace included).
    [
        *("", "abc", "1GB", "1 Gi", " 1", "1 ", "\t1", "1.2.3", "1e", "--1", "1mi", "0x10", "1Kib", "1K"),
        *("1e3Ki", "1Ki3", "1e-", "1.5e3m", "1m5", "1ee3", "1_0", "1\u00b5", "1e99999999999999999999"),
    ],
)
def test_unparsable_quantity(text: str) -> None:
    with pytest.raises(QuantityError, match="is not a Kubernetes quantity"):
        parse_quantity(text)
