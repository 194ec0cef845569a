"""Typed view of the `inferenceservice-config` ConfigMap, one pydantic model per key.

KServe keeps each setting group as a JSON string under its own ConfigMap key (`ingress`, `agent`, ...).
v0.11 parses them in several places, and a malformed value in one key panics the pod webhook or fails
every reconcile, whichever key was broken. Here each key is parsed lazily and independently: a broken
`logger` key raises `ConfigError` from `cfg.logger()` only, so the ingress reconciler keeps working and
the webhook turns the error into an admission message naming the key. Results (models or errors) are
memoised per key, so a `InferenceServicesConfig` built once per ConfigMap version is cheap to consult.

Defaults:
- A key missing from the ConfigMap falls back to the value KServe v0.11 ships (`SHIPPED_DEFAULTS`), except
  `ingress` and `metricsAggregator`, which KServe's controller and pod webhook read as an empty object: the
  ingress then has no gateways but KServe's domain, domain template and URL scheme, and the two metrics
  annotations are written as "". Callers may make keys mandatory with `from_configmap(..., required=...)`.
- A field missing from a present key falls back to KServe's default for it. Unlike v0.11, where a missing
  resource quantity is an empty string that fails to parse, missing quantities take the shipped value;
  present but unparsable ones are errors, with Go's `resource.ParseQuantity` grammar.
- Empty strings mean "unset" for the fields where KServe's Go code treats them so (images, ingressDomain,
  domainTemplate, urlScheme, S3 key names).

Field names match as Go's `encoding/json` matches them: exactly, else case-insensitively (`IngressGateway`
sets `ingressGateway`), the last occurrence winning; a JSON `null` leaves a field at its default. Unknown
fields are kept (`extra="allow"`), so newer KServe settings survive a round trip.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from apis.constants import (
    DEPLOYMENT_MODES,
    INFERENCE_SERVICE_CONFIGMAP,
    STORAGE_SECRET_NAME_ANNOTATION,
)
from apis.quantity import Quantity

CONFIGMAP_NAME = INFERENCE_SERVICE_CONFIGMAP
"""The ConfigMap's name; it lives in the controller's namespace (`kserve` in the shipped manifests)."""

DEPLOY = "deploy"
INGRESS = "ingress"
STORAGE_INITIALIZER = "storageInitializer"
CREDENTIALS = "credentials"
LOGGER = "logger"
BATCHER = "batcher"
AGENT = "agent"
EXPLAINERS = "explainers"
METRICS_AGGREGATOR = "metricsAggregator"
ROUTER = "router"

DEFAULT_DOMAIN_TEMPLATE = "{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}"
DEFAULT_INGRESS_DOMAIN = "example.com"
DEFAULT_URL_SCHEME = "http"

MISSING_MEANS_EMPTY = frozenset({INGRESS, METRICS_AGGREGATOR})
"""Keys whose absence KServe reads as `{}` rather than as the shipped value."""
MISSING_KEY_CONTEXT = "missing_key"
"""Validation-context flag: the model is being built for a key the ConfigMap does not have."""


class ConfigError(ValueError):
    """One key of `inferenceservice-config` is missing or invalid; the message names the key."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f'{CONFIGMAP_NAME} key "{key}": {detail}')
        self.key = key
        self.detail = detail


class KeyConfig(BaseModel):
    """Base of the per-key models: camelCase aliases, unknown fields kept, immutable once parsed."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


def _empty_means_default(cls: type[BaseModel], value: object, field: str) -> object:
    if value == "":
        return cls.model_fields[field].default
    return value


class DeployConfig(KeyConfig):
    """Key `deploy`: the deployment mode used when an InferenceService has no deploymentMode annotation."""

    default_deployment_mode: str = Field(alias="defaultDeploymentMode")

    @field_validator("default_deployment_mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in DEPLOYMENT_MODES:
            raise ValueError(f"must be one of {', '.join(DEPLOYMENT_MODES)}, got {value!r}")
        return value


def _check_go_template(text: str) -> None:
    """Reject what Go's text/template parser would reject for the templates KServe accepts here."""
    rest = text
    while "{{" in rest or "}}" in rest:
        start, end = rest.find("{{"), rest.find("}}")
        if start < 0 or end < start:
            raise ValueError(f"unbalanced '{{{{' / '}}}}' in template {text!r}")
        action = rest[start + 2 : end].strip()
        if not action or "{{" in action:
            raise ValueError(f"empty or nested action in template {text!r}")
        rest = rest[end + 2 :]


class IngressConfig(KeyConfig):
    """Key `ingress`: gateways, domain and URL shape of InferenceService endpoints (reference §3.4)."""

    ingress_gateway: str = Field("", alias="ingressGateway")
    ingress_service: str = Field("", alias="ingressService")
    local_gateway: str = Field("", alias="localGateway")
    local_gateway_service: str = Field("", alias="localGatewayService")
    ingress_domain: str = Field(DEFAULT_INGRESS_DOMAIN, alias="ingressDomain")
    ingress_class_name: str | None = Field(None, alias="ingressClassName")
    domain_template: str = Field(DEFAULT_DOMAIN_TEMPLATE, alias="domainTemplate")
    url_scheme: str = Field(DEFAULT_URL_SCHEME, alias="urlScheme")
    disable_istio_virtual_host: bool = Field(False, alias="disableIstioVirtualHost")
    path_template: str = Field("", alias="pathTemplate")
    disable_ingress_creation: bool = Field(False, alias="disableIngressCreation")

    @model_validator(mode="before")
    @classmethod
    def _required(cls, data: Any, info: ValidationInfo) -> Any:
        """KServe's checks of a present key (a missing key gives an ingress without gateways)."""
        if isinstance(data, dict) and not (info.context or {}).get(MISSING_KEY_CONTEXT):
            missing = [k for k in ("ingressGateway", "ingressService") if not data.get(k)]
            if missing:
                raise ValueError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
            if data.get("pathTemplate") and not data.get("ingressDomain"):
                raise ValueError("ingressDomain is required when pathTemplate is set")
        return data

    @field_validator("ingress_domain", "domain_template", "url_scheme", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object, info: Any) -> object:
        return _empty_means_default(cls, value, info.field_name)

    @field_validator("path_template", "domain_template")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        _check_go_template(value)
        return value


class ResourceConfig(KeyConfig):
    """An image plus the CPU/memory requests and limits of a container the webhook injects."""

    image: str
    cpu_request: Quantity = Field("100m", alias="cpuRequest")
    cpu_limit: Quantity = Field("1", alias="cpuLimit")
    memory_request: Quantity = Field("100Mi", alias="memoryRequest")
    memory_limit: Quantity = Field("1Gi", alias="memoryLimit")

    @field_validator("image", mode="before")
    @classmethod
    def _empty_image_is_default(cls, value: object) -> object:
        return _empty_means_default(cls, value, "image")

    def resources(self) -> dict[str, dict[str, str]]:
        """The container `resources` stanza."""
        return {
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
        }


class StorageInitializerConfig(ResourceConfig):
    """Key `storageInitializer`: the init container that downloads the model (reference §4.3)."""

    image: str = "kserve/storage-initializer:latest"
    enable_direct_pvc_volume_mount: bool = Field(False, alias="enableDirectPvcVolumeMount")


class GCSConfig(KeyConfig):
    """`credentials.gcs`."""

    gcs_credential_file_name: str = Field(
        "gcloud-application-credentials.json", alias="gcsCredentialFileName"
    )

    @field_validator("gcs_credential_file_name", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return _empty_means_default(cls, value, "gcs_credential_file_name")


class S3Config(KeyConfig):
    """`credentials.s3`: secret key names and cluster-wide S3 settings (secret annotations override them).

    The two key names default to KServe's built-in `awsAccessKeyID`/`awsSecretAccessKey` when unset; the
    shipped ConfigMap sets them to `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`.
    """

    s3_access_key_id_name: str = Field("awsAccessKeyID", alias="s3AccessKeyIDName")
    s3_secret_access_key_name: str = Field("awsSecretAccessKey", alias="s3SecretAccessKeyName")
    s3_endpoint: str = Field("", alias="s3Endpoint")
    s3_use_https: str = Field("", alias="s3UseHttps")
    s3_region: str = Field("", alias="s3Region")
    s3_verify_ssl: str = Field("", alias="s3VerifySSL")
    s3_use_virtual_bucket: str = Field("", alias="s3UseVirtualBucket")
    s3_use_anonymous_credential: str = Field("", alias="s3UseAnonymousCredential")
    s3_ca_bundle: str = Field("", alias="s3CABundle")

    @field_validator("s3_access_key_id_name", "s3_secret_access_key_name", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object, info: Any) -> object:
        return _empty_means_default(cls, value, info.field_name)


class CredentialsConfig(KeyConfig):
    """Key `credentials`: how model-storage credentials are found and exposed to the storage initializer."""

    storage_spec_secret_name: str = Field("storage-config", alias="storageSpecSecretName")
    storage_secret_name_annotation: str = Field(
        STORAGE_SECRET_NAME_ANNOTATION, alias="storageSecretNameAnnotation"
    )
    gcs: GCSConfig = Field(default_factory=lambda: GCSConfig.model_validate({}))
    s3: S3Config = Field(default_factory=lambda: S3Config.model_validate({}))

    @field_validator("storage_spec_secret_name", "storage_secret_name_annotation", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object, info: Any) -> object:
        return _empty_means_default(cls, value, info.field_name)


class LoggerConfig(ResourceConfig):
    """Key `logger`: the request/response logger mode of the agent sidecar."""

    image: str = "kserve/agent:latest"
    default_url: str = Field("http://default-broker", alias="defaultUrl")


class BatcherConfig(ResourceConfig):
    """Key `batcher`: the batcher mode of the agent sidecar.

    `maxBatchSize`/`maxLatency` are later-KServe defaults for the `--max-batchsize`/`--max-latency` args when
    the pod's annotations do not set them; v0.11 ships neither, so by default the args are omitted.
    """

    image: str = "kserve/agent:latest"
    cpu_request: Quantity = Field("1", alias="cpuRequest")
    memory_request: Quantity = Field("1Gi", alias="memoryRequest")
    max_batch_size: str | None = Field(None, alias="maxBatchSize")
    max_latency: str | None = Field(None, alias="maxLatency")

    @field_validator("max_batch_size", "max_latency", mode="before")
    @classmethod
    def _digits(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value == "":
            return None
        if value is not None and not (isinstance(value, str) and value.isdigit()):
            raise ValueError(f"must be a whole number, got {value!r}")
        return value


class AgentConfig(ResourceConfig):
    """Key `agent`: image and resources of the `agent` sidecar (logger, batcher, model puller)."""

    image: str = "kserve/agent:latest"


class ExplainerConfig(KeyConfig):
    """One explainer runtime."""

    image: str
    default_image_version: str = Field(alias="defaultImageVersion")


class ExplainersConfig(KeyConfig):
    """Key `explainers`: images of the built-in explainers."""

    alibi: ExplainerConfig | None = None
    art: ExplainerConfig | None = None


class MetricsAggregatorConfig(KeyConfig):
    """Key `metricsAggregator`: cluster defaults for the two metrics annotations, as "true"/"false" strings.

    KServe stores strings and copies them into the pod annotations verbatim, "" when a field (or the whole
    key) is missing; JSON booleans are accepted and converted, any other string is an error rather than a
    silently-disabled feature.
    """

    enable_metric_aggregation: str = Field("", alias="enableMetricAggregation")
    enable_prometheus_scraping: str = Field("", alias="enablePrometheusScraping")

    @field_validator("enable_metric_aggregation", "enable_prometheus_scraping", mode="before")
    @classmethod
    def _bool_string(cls, value: object) -> object:
        if isinstance(value, bool):
            return "true" if value else "false"
        if value not in ("true", "false", ""):
            raise ValueError(f'must be "true", "false" or "", got {value!r}')
        return value

    @property
    def aggregation_enabled(self) -> bool:
        """Whether pods without the annotation aggregate metrics."""
        return self.enable_metric_aggregation == "true"

    @property
    def scraping_enabled(self) -> bool:
        """Whether pods without the annotation get Prometheus scrape annotations."""
        return self.enable_prometheus_scraping == "true"


class RouterConfig(ResourceConfig):
    """Key `router`: the InferenceGraph router image and resources."""

    image: str = "kserve/router:latest"


_MODELS: dict[str, type[KeyConfig]] = {
    DEPLOY: DeployConfig,
    INGRESS: IngressConfig,
    STORAGE_INITIALIZER: StorageInitializerConfig,
    CREDENTIALS: CredentialsConfig,
    LOGGER: LoggerConfig,
    BATCHER: BatcherConfig,
    AGENT: AgentConfig,
    EXPLAINERS: ExplainersConfig,
    METRICS_AGGREGATOR: MetricsAggregatorConfig,
    ROUTER: RouterConfig,
}

KEYS: tuple[str, ...] = tuple(_MODELS)
"""Every ConfigMap key this project reads."""

SHIPPED_DEFAULTS: dict[str, str] = {
    DEPLOY: '{"defaultDeploymentMode": "Serverless"}',
    INGRESS: json.dumps(
        {
            "ingressGateway": "knative-serving/knative-ingress-gateway",
            "ingressService": "istio-ingressgateway.istio-system.svc.cluster.local",
            "localGateway": "knative-serving/knative-local-gateway",
            "localGatewayService": "knative-local-gateway.istio-system.svc.cluster.local",
            "ingressDomain": "example.com",
            "ingressClassName": "istio",
            "domainTemplate": DEFAULT_DOMAIN_TEMPLATE,
            "urlScheme": "http",
            "disableIstioVirtualHost": False,
            "disableIngressCreation": False,
        }
    ),
    STORAGE_INITIALIZER: json.dumps(
        {
            "image": "kserve/storage-initializer:latest",
            "memoryRequest": "100Mi",
            "memoryLimit": "1Gi",
            "cpuRequest": "100m",
            "cpuLimit": "1",
            "enableDirectPvcVolumeMount": False,
        }
    ),
    CREDENTIALS: json.dumps(
        {
            "storageSpecSecretName": "storage-config",
            "storageSecretNameAnnotation": "serving.kserve.io/storageSecretName",
            "gcs": {"gcsCredentialFileName": "gcloud-application-credentials.json"},
            "s3": {
                "s3AccessKeyIDName": "AWS_ACCESS_KEY_ID",
                "s3SecretAccessKeyName": "AWS_SECRET_ACCESS_KEY",
                "s3Endpoint": "",
                "s3UseHttps": "",
                "s3Region": "",
                "s3VerifySSL": "",
                "s3UseVirtualBucket": "",
                "s3UseAnonymousCredential": "",
                "s3CABundle": "",
            },
        }
    ),
    LOGGER: json.dumps(
        {
            "image": "kserve/agent:latest",
            "memoryRequest": "100Mi",
            "memoryLimit": "1Gi",
            "cpuRequest": "100m",
            "cpuLimit": "1",
            "defaultUrl": "http://default-broker",
        }
    ),
    BATCHER: json.dumps(
        {
            "image": "kserve/agent:latest",
            "memoryRequest": "1Gi",
            "memoryLimit": "1Gi",
            "cpuRequest": "1",
            "cpuLimit": "1",
        }
    ),
    AGENT: json.dumps(
        {
            "image": "kserve/agent:latest",
            "memoryRequest": "100Mi",
            "memoryLimit": "1Gi",
            "cpuRequest": "100m",
            "cpuLimit": "1",
        }
    ),
    EXPLAINERS: json.dumps(
        {
            "alibi": {"image": "kserve/alibi-explainer", "defaultImageVersion": "latest"},
            "art": {"image": "kserve/art-explainer", "defaultImageVersion": "latest"},
        }
    ),
    METRICS_AGGREGATOR: '{"enableMetricAggregation": "false", "enablePrometheusScraping": "false"}',
    ROUTER: json.dumps(
        {
            "image": "kserve/router:latest",
            "memoryRequest": "100Mi",
            "memoryLimit": "1Gi",
            "cpuRequest": "100m",
            "cpuLimit": "1",
        }
    ),
}
"""The JSON KServe v0.11 ships for each key (config/configmap/inferenceservice.yaml holds the same values)."""


def _describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


_M = TypeVar("_M", bound=KeyConfig)


def parse_key(key: str, text: str, model: type[_M], *, missing: bool = False) -> _M:
    """Parse one key's JSON string into its model; raises ConfigError naming the key.

    `missing` says the text stands in for a key the ConfigMap does not have.
    """
    if not isinstance(text, str):
        raise ConfigError(key, f"value must be a JSON string, got {type(text).__name__}")
    try:
        raw = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as exc:
        raise ConfigError(key, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(raw, _Pairs):
        raise ConfigError(key, f"must be a JSON object, got {type(_plain(raw)).__name__}")
    try:
        return model.model_validate(_go_fields(model, raw), context={MISSING_KEY_CONTEXT: missing})
    except ValidationError as exc:
        raise ConfigError(key, _describe_validation_error(exc)) from None


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs in document order, duplicates kept (Go reads them in turn)."""


def _plain(value: Any) -> Any:
    """A decoded JSON value with every object as a dict (a repeated key: the last one wins)."""
    if isinstance(value, _Pairs):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _go_fold(name: str) -> str:
    """Go `encoding/json`'s case folding of a key: ASCII case, plus the long s and the Kelvin sign."""
    return "".join(
        "s" if ch == "\u017f" else "k" if ch == "\u212a" else ch.lower() if ch.isascii() else ch
        for ch in name
    )


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model class of a field typed `SomeModel` or `SomeModel | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        found = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return found[0] if len(found) == 1 else None
    return None


def _go_fields(model: type[BaseModel], pairs: _Pairs) -> dict[str, Any]:
    """A JSON object's fields keyed by `model`'s aliases, the way Go's decoder assigns them.

    Each key sets the field whose name matches it exactly, else case-insensitively; later keys overwrite
    earlier ones, and an object decoded into a nested struct that is already set merges into it. `null`
    leaves a field alone unless the field is optional (a Go pointer, reset to nil). Other keys are kept,
    except our Python field names, which Go would not recognise either.
    """
    by_alias = {(info.alias or name): info for name, info in model.model_fields.items()}
    folded = {_go_fold(alias): alias for alias in by_alias}
    out: dict[str, Any] = {}
    for key, value in pairs:
        alias = key if key in by_alias else folded.get(_go_fold(key))
        if alias is None:
            if key not in model.model_fields:  # a Python field name is no JSON name to Go
                out[key] = _plain(value)
            continue
        info = by_alias[alias]
        if value is None:
            if info.default is None:
                out[alias] = None
            continue
        nested = _nested_model(info.annotation)
        if nested is not None and isinstance(value, _Pairs):
            decoded = _go_fields(nested, value)
            previous = out.get(alias)
            out[alias] = {**previous, **decoded} if isinstance(previous, dict) else decoded
        else:
            out[alias] = _plain(value)
    return out


class InferenceServicesConfig:
    """The whole ConfigMap; each accessor parses its key on first use and raises ConfigError for it alone."""

    __slots__ = ("_cache", "_data", "_required")

    def __init__(self, data: Mapping[str, str], required: frozenset[str]) -> None:
        self._data = dict(data)
        self._required = required
        self._cache: dict[str, KeyConfig | ConfigError] = {}

    @classmethod
    def from_configmap(
        cls, data: Mapping[str, str] | None, *, required: Iterable[str] = ()
    ) -> InferenceServicesConfig:
        """Wrap a ConfigMap's `data`; `required` names keys whose absence is an error (never a default)."""
        wanted = frozenset(required)
        unknown = wanted - set(KEYS)
        if unknown:
            raise ValueError(f"unknown {CONFIGMAP_NAME} keys in required: {', '.join(sorted(unknown))}")
        return cls(data or {}, wanted)

    @property
    def data(self) -> Mapping[str, str]:
        """The raw ConfigMap data this view was built from."""
        return self._data

    def _get(self, key: str, model: type[_M]) -> _M:
        cached = self._cache.get(key)
        if cached is None:
            try:
                cached = self._parse(key, model)
            except ConfigError as exc:
                cached = exc
            self._cache[key] = cached
        if isinstance(cached, ConfigError):
            raise cached
        assert isinstance(cached, model)
        return cached

    def _parse(self, key: str, model: type[_M]) -> _M:
        if key in self._data:
            return parse_key(key, self._data[key], model)
        if key in self._required:
            raise ConfigError(key, "is missing")
        if key in MISSING_MEANS_EMPTY:
            return parse_key(key, "{}", model, missing=True)
        return parse_key(key, SHIPPED_DEFAULTS[key], model)

    def deploy(self) -> DeployConfig:
        """Key `deploy`."""
        return self._get(DEPLOY, DeployConfig)

    def ingress(self) -> IngressConfig:
        """Key `ingress`."""
        return self._get(INGRESS, IngressConfig)

    def storage_initializer(self) -> StorageInitializerConfig:
        """Key `storageInitializer`."""
        return self._get(STORAGE_INITIALIZER, StorageInitializerConfig)

    def credentials(self) -> CredentialsConfig:
        """Key `credentials`."""
        return self._get(CREDENTIALS, CredentialsConfig)

    def logger(self) -> LoggerConfig:
        """Key `logger`."""
        return self._get(LOGGER, LoggerConfig)

    def batcher(self) -> BatcherConfig:
        """Key `batcher`."""
        return self._get(BATCHER, BatcherConfig)

    def agent(self) -> AgentConfig:
        """Key `agent`."""
        return self._get(AGENT, AgentConfig)

    def explainers(self) -> ExplainersConfig:
        """Key `explainers`."""
        return self._get(EXPLAINERS, ExplainersConfig)

    def metrics_aggregator(self) -> MetricsAggregatorConfig:
        """Key `metricsAggregator`."""
        return self._get(METRICS_AGGREGATOR, MetricsAggregatorConfig)

    def router(self) -> RouterConfig:
        """Key `router`."""
        return self._get(ROUTER, RouterConfig)

    ACCESSORS: ClassVar[dict[str, Callable[[InferenceServicesConfig], KeyConfig]]] = {
        DEPLOY: deploy,
        INGRESS: ingress,
        STORAGE_INITIALIZER: storage_initializer,
        CREDENTIALS: credentials,
        LOGGER: logger,
        BATCHER: batcher,
        AGENT: agent,
        EXPLAINERS: explainers,
        METRICS_AGGREGATOR: metrics_aggregator,
        ROUTER: router,
    }

    def errors(self) -> dict[str, ConfigError]:
        """Every key's error, for an overview (e.g. a log line at start-up); empty when all keys are valid."""
        found: dict[str, ConfigError] = {}
        for key, accessor in self.ACCESSORS.items():
            try:
                accessor(self)
            except ConfigError as exc:
                found[key] = exc
        return found
