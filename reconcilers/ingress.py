"""The Istio ingress of a Serverless InferenceService: one VirtualService, one ExternalName Service, the URL.

Knative gives every component its own hostname (`<isvc>-predictor.<ns>.<domain>`). Users want one address
per InferenceService, so KServe v0.11 publishes `<isvc>.<ns>.<domain>` (and the in-cluster
`<isvc>.<ns>.svc.cluster.local`) through an Istio VirtualService that forwards every request to Knative's
local gateway with the Host header rewritten to the component that should answer first: the transformer if
there is one, else the predictor; `:explain` calls go to the explainer. The ExternalName Service `<isvc>`
makes the in-cluster name resolvable at all. Section 3.4 of the behaviour reference is the specification;
URLs, hosts, route order, regular expressions and condition reasons are user-visible and match v0.11.

The pure builders (`service_host`, `service_url`, `desired_virtual_service`, ...) derive everything from the
InferenceService's component status and the `ingress` config, so they are table-tested without a cluster.
`IngressReconciler` adds the reads (from the shared cache) and the writes, which go through
`apply_if_changed`: unlike v0.11, which updated the ExternalName Service on every reconcile, a steady state
writes nothing. The desired objects are therefore built deterministically (same input, same JSON) and carry
no empty maps the API server would drop (they would read back as a difference forever).

Where v0.11 silently gives up (an unrenderable `pathTemplate` is logged and the URL stays empty),
`IngressConfigError` is raised so the caller can mark IngressReady False with a reason users can read.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from apis import constants as c
from apis.conditions import FALSE, TRUE, UNKNOWN, Condition
from apis.config import IngressConfig
from apis.inferenceservice import InferenceService
from apis.knative import Addressable
from apis.resources import KNATIVE_SERVICES, VIRTUAL_SERVICES
from manager.cache import Cache
from manager.client import SERVICES, Client, Object
from reconcilers.apply import apply_if_changed

EXPLAIN_URI_REGEX: Final = r"^/v1/models/[\w-]+:explain$"
"""The URI match of the explainer route (KServe's ExplainPrefix)."""

LOCAL_GATEWAY_PORT: Final = 80
CLUSTER_DOMAIN: Final = "cluster.local"
_LOCAL_SUFFIX: Final = f".svc.{CLUSTER_DOMAIN}"
_PORT_MATCH: Final = r"(?::\d{1,5})?"
"""Any port (matches 0-99999, as Knative's expression does)."""

_GO_REGEXP_SPECIAL: Final = frozenset("\\.+*?()|[]{}^$")
_TEMPLATE_ACTION: Final = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_TEMPLATE_FIELDS: Final = ("Name", "Namespace")
_URL_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:|:")
"""What Go's URL parser takes for a scheme (a leading ":" is its "missing protocol scheme" error)."""


class IngressConfigError(ValueError):
    """The `ingress` config cannot produce a URL for this InferenceService (e.g. a bad pathTemplate)."""


# --- Hosts and URLs -------------------------------------------------------------------------------


def cluster_local_host(name: str, namespace: str) -> str:
    """`<name>.<namespace>.svc.cluster.local` (Knative's GetServiceHostname)."""
    return f"{name}.{namespace}{_LOCAL_SUFFIX}"


def _quote_meta(text: str) -> str:
    """Go's regexp.QuoteMeta: escape only RE2 metacharacters (Python's re.escape also escapes `-`)."""
    return "".join("\\" + ch if ch in _GO_REGEXP_SPECIAL else ch for ch in text)


def host_regexp(host: str) -> str:
    """The authority regex matching `host` with any port; cluster-local hosts also match their short forms.

    `a.ns.svc.cluster.local` matches `a.ns`, `a.ns.svc` and `a.ns.svc.cluster.local`, each with or without
    a port; any other host matches exactly itself with or without a port.
    """
    if not host.endswith(_LOCAL_SUFFIX):
        return f"^{_quote_meta(host)}{_PORT_MATCH}$"
    prefix = _quote_meta(host.removesuffix(_LOCAL_SUFFIX))
    svc = _quote_meta(".svc")
    cluster = _quote_meta(f".{CLUSTER_DOMAIN}")
    return f"^{prefix}({svc}({cluster})?)?{_PORT_MATCH}$"


def _entry_component(isvc: InferenceService) -> str:
    """The component that receives traffic first: the transformer if the spec has one, else the predictor."""
    return c.TRANSFORMER if isvc.spec.transformer is not None else c.PREDICTOR


def _entry_url(isvc: InferenceService) -> str | None:
    """The entry component's URL from status, or None while it has none."""
    status = isvc.status.components.get(_entry_component(isvc))
    if status is None or not status.url:
        return None
    return status.url


def _strip_component(text: str, component: str) -> str:
    """Remove the first `-<component>-default`, or else the first `-<component>`."""
    legacy = f"-{component}-default"
    if legacy in text:
        return text.replace(legacy, "", 1)
    return text.replace(f"-{component}", "", 1)


def service_host(isvc: InferenceService) -> str | None:
    """The InferenceService's external host, derived from the entry component's host (KServe getServiceHost).

    `kftest-predictor.user1.example.com` -> `kftest.user1.example.com`;
    `kftest-predictor-user1.example.com` -> `kftest-user1.example.com`. None while the URL is unknown.
    """
    url = _entry_url(isvc)
    if url is None:
        return None
    host = urlsplit(url).netloc.rpartition("@")[2]
    if not host:
        return None
    return _strip_component(host, _entry_component(isvc))


def render_path_template(template: str, name: str, namespace: str) -> str:
    """Render a Go-template URL path using `.Name` and `.Namespace` only; the result starts with `/`.

    Raises `IngressConfigError` for any other action (fields, functions, trim markers, comments), for
    unbalanced delimiters, and for a result that is not a plain URL path.
    """
    values = {"Name": name, "Namespace": namespace}

    def substitute(match: re.Match[str]) -> str:
        action = match.group(1).strip()
        field = action.removeprefix(".")
        if not action.startswith(".") or field not in _TEMPLATE_FIELDS:
            raise IngressConfigError(
                f"ingress pathTemplate {template!r}: unsupported action {{{{{match.group(1)}}}}}; "
                "only {{ .Name }} and {{ .Namespace }} are allowed"
            )
        return values[field]

    path = _TEMPLATE_ACTION.sub(substitute, template)
    if "{{" in path or "}}" in path:
        raise IngressConfigError(f"ingress pathTemplate {template!r}: unbalanced '{{{{' or '}}}}'")
    if _URL_SCHEME.match(path):
        # KServe (url.ParseRequestURI) refuses a rendered URL with a scheme or host.
        raise IngressConfigError(
            f"ingress pathTemplate {template!r} renders {path!r}, which has a scheme or a host; it must "
            "render a URL path, e.g. /serving/{{ .Namespace }}/{{ .Name }}"
        )
    if not path.startswith("/"):
        path = "/" + path
    bad = sorted({ch for ch in path if ch in "?#" or ch.isspace()})
    if bad:
        raise IngressConfigError(
            f"ingress pathTemplate {template!r} renders {path!r}, which is not a URL path "
            f"(contains {' '.join(repr(ch) for ch in bad)})"
        )
    return path


def service_url(isvc: InferenceService, config: IngressConfig) -> str | None:
    """The InferenceService's `status.url` (KServe getServiceUrl); None while the entry URL is unknown.

    The entry component's URL with the scheme set to `urlScheme` and, when the Istio virtual host is
    enabled, the component suffix removed. With a `pathTemplate`: `<urlScheme>://<ingressDomain><path>`.
    """
    url = _entry_url(isvc)
    if url is None:
        return None
    parts = urlsplit(url)
    if not parts.netloc:
        return None
    if config.path_template:
        path = render_path_template(config.path_template, isvc.name, isvc.namespace)
        return f"{config.url_scheme}://{config.ingress_domain}{path}"
    rebuilt = urlunsplit(parts._replace(scheme=config.url_scheme))
    if config.disable_istio_virtual_host:
        return rebuilt
    return _strip_component(rebuilt, _entry_component(isvc))


def ksvc_name(isvc_name: str, component: str, *, use_default: bool) -> str:
    """A component's Knative Service: `<isvc>-<component>`, or the legacy `-default` name."""
    if use_default:
        return c.legacy_component_name(isvc_name, component)
    return c.component_name(isvc_name, component)


def host_prefix(isvc: InferenceService, *, disable_virtual_host: bool, use_default: bool) -> str:
    """The Service name in `status.address`: the InferenceService itself, or its entry component's ksvc."""
    if not disable_virtual_host:
        return isvc.name
    return ksvc_name(isvc.name, _entry_component(isvc), use_default=use_default)


def address_url(isvc: InferenceService, config: IngressConfig, *, use_default: bool) -> str:
    """`status.address.url`: always http, always the cluster-local name."""
    prefix = host_prefix(
        isvc, disable_virtual_host=config.disable_istio_virtual_host, use_default=use_default
    )
    return f"http://{cluster_local_host(prefix, isvc.namespace)}"


def is_internal(isvc: InferenceService, host: str) -> bool:
    """Cluster-local only: the visibility label, or Knative already gave the entry a cluster-local URL."""
    labelled = isvc.labels.get(c.KNATIVE_VISIBILITY_LABEL) == c.CLUSTER_LOCAL_VISIBILITY
    return labelled or host == cluster_local_host(isvc.name, isvc.namespace)


# --- Desired objects ------------------------------------------------------------------------------


def _metadata(isvc: InferenceService, *, labels: dict[str, str], annotations: dict[str, str]) -> Object:
    meta: Object = {"name": isvc.name, "namespace": isvc.namespace}
    if labels:
        meta["labels"] = dict(sorted(labels.items()))
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    meta["ownerReferences"] = [isvc.owner_reference()]
    return meta


def _not_ready_gate(isvc: InferenceService, component: str) -> bool:
    """Mark IngressReady False/Unknown with KServe's reason when `component` is not Ready; True if so."""
    condition_type = c.READY_CONDITIONS[component]
    status = isvc.status
    if status.is_condition_ready(condition_type):
        return False
    value = UNKNOWN if status.is_condition_unknown(condition_type) else FALSE
    status.set_condition(
        c.INGRESS_READY,
        Condition(type=c.INGRESS_READY, status=value, reason=c.INGRESS_NOT_CREATED_REASONS[component]),
    )
    return True


def _match(authority_host: str, gateway: str, *, uri: dict[str, str] | None = None) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if uri is not None:
        match["uri"] = uri
    match["authority"] = {"regex": host_regexp(authority_host)}
    match["gateways"] = [gateway]
    return match


def _matches(
    internal_host: str, external_host: str, internal: bool, config: IngressConfig, uri: dict[str, str] | None
) -> list[dict[str, Any]]:
    matches = [_match(internal_host, config.local_gateway, uri=uri)]
    if not internal:
        matches.append(_match(external_host, config.ingress_gateway, uri=uri))
    return matches


def _forward(config: IngressConfig, host_header: str) -> dict[str, Any]:
    """Route to Knative's local gateway with the Host header naming the component's Knative Service."""
    return {
        "route": [
            {
                "destination": {
                    "host": config.local_gateway_service,
                    "port": {"number": LOCAL_GATEWAY_PORT},
                },
                "weight": 100,
            }
        ],
        "headers": {"request": {"set": {"Host": host_header}}},
    }


def desired_virtual_service(
    isvc: InferenceService, config: IngressConfig, *, use_default: bool
) -> Object | None:
    """The VirtualService `<isvc>` (KServe createIngress), or None.

    None without side effects while the entry host is unknown. None with IngressReady set False (or Unknown
    when the component's condition is absent/Unknown) and reason `<Component> ingress not created` while
    the predictor, then the transformer, then the explainer is not Ready. Raises `IngressConfigError` for an
    unusable pathTemplate.
    """
    host = service_host(isvc)
    if host is None:
        return None
    name, ns = isvc.name, isvc.namespace
    if _not_ready_gate(isvc, c.PREDICTOR):
        return None
    if isvc.spec.transformer is not None and _not_ready_gate(isvc, c.TRANSFORMER):
        return None
    backend = ksvc_name(name, _entry_component(isvc), use_default=use_default)
    internal = is_internal(isvc, host)
    local_host = cluster_local_host(name, ns)
    routes: list[dict[str, Any]] = []
    if isvc.spec.explainer is not None:
        if _not_ready_gate(isvc, c.EXPLAINER):
            return None
        explainer = ksvc_name(name, c.EXPLAINER, use_default=use_default)
        routes.append(
            {
                "match": _matches(local_host, host, internal, config, {"regex": EXPLAIN_URI_REGEX}),
                **_forward(config, cluster_local_host(explainer, ns)),
            }
        )
    backend_host = cluster_local_host(backend, ns)
    routes.append(
        {"match": _matches(local_host, host, internal, config, None), **_forward(config, backend_host)}
    )
    hosts = [local_host]
    if not internal:
        hosts.append(host)
    if config.path_template:
        path = render_path_template(config.path_template, name, ns).removesuffix("/")
        routes.append(
            {
                "match": [
                    _match(config.ingress_domain, config.ingress_gateway, uri={"prefix": path + "/"}),
                    _match(config.ingress_domain, config.ingress_gateway, uri={"exact": path}),
                ],
                "rewrite": {"uri": "/"},
                **_forward(config, backend_host),
            }
        )
        hosts.append(config.ingress_domain)
    gateways = [config.local_gateway]
    if not internal:
        gateways.append(config.ingress_gateway)
    annotations = {k: v for k, v in isvc.annotations.items() if k not in c.SERVICE_ANNOTATION_DISALLOWED}
    return {
        "apiVersion": VIRTUAL_SERVICES.api_version,
        "kind": VIRTUAL_SERVICES.kind,
        "metadata": _metadata(isvc, labels=isvc.labels, annotations=annotations),
        "spec": {"hosts": hosts, "gateways": gateways, "http": routes},
    }


def desired_external_service(isvc: InferenceService, config: IngressConfig) -> Object:
    """The ExternalName Service `<isvc>` pointing at Knative's local gateway (makes the name resolvable)."""
    return {
        "apiVersion": SERVICES.api_version,
        "kind": SERVICES.kind,
        "metadata": _metadata(isvc, labels={}, annotations={}),
        "spec": {
            "type": "ExternalName",
            "externalName": config.local_gateway_service,
            "sessionAffinity": "None",
        },
    }


# --- Reconciler -----------------------------------------------------------------------------------


class IngressReconciler:
    """Converges the VirtualService and ExternalName Service of one InferenceService and sets its URLs."""

    def __init__(self, client: Client, cache: Cache) -> None:
        self.client = client
        self.cache = cache

    def uses_default_names(self, isvc: InferenceService) -> bool:
        """Whether the predictor still runs under its kfserving-era name `<isvc>-predictor-default`."""
        legacy = c.legacy_component_name(isvc.name, c.PREDICTOR)
        return self.cache.get(KNATIVE_SERVICES, legacy, isvc.namespace) is not None

    async def reconcile(self, isvc: InferenceService, config: IngressConfig) -> None:
        """KServe's ingress Reconcile on `isvc` (its status is edited in place; the caller writes it).

        Nothing happens while the entry component has no URL. Otherwise, unless the virtual host is
        disabled, the ExternalName Service and then the VirtualService are applied when they differ (a
        component that is not Ready stops here with IngressReady explaining why); then `status.url`,
        `status.address.url` and IngressReady=True are set. Raises `IngressConfigError` for an unusable
        pathTemplate, `reconcilers.apply.NotControlled` when another object holds the name of the Service
        or the VirtualService, and `ApiError` when a write fails.
        """
        host = service_host(isvc)
        url = service_url(isvc, config)
        if host is None or url is None:
            return
        use_default = self.uses_default_names(isvc)
        if not config.disable_istio_virtual_host:
            virtual_service = desired_virtual_service(isvc, config, use_default=use_default)
            if virtual_service is None:
                return
            service = desired_external_service(isvc, config)
            live_service = self.cache.get(SERVICES, isvc.name, isvc.namespace)
            await apply_if_changed(self.client, SERVICES, service, live_service)
            live_vs = self.cache.get(VIRTUAL_SERVICES, isvc.name, isvc.namespace)
            await apply_if_changed(self.client, VIRTUAL_SERVICES, virtual_service, live_vs)
        status = isvc.status
        status.url = url
        status.address = Addressable(url=address_url(isvc, config, use_default=use_default))
        status.set_condition(c.INGRESS_READY, Condition(type=c.INGRESS_READY, status=TRUE))
