"""RawDeployment routing: the Kubernetes Ingress `<isvc>`, the hosts it serves, the URL and the address.

Without Knative and Istio, KServe v0.11 publishes an InferenceService through one `networking.k8s.io/v1`
Ingress named like it, whose hosts come from the `ingress` config: `domainTemplate` (default
`{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}`) rendered for the InferenceService (the top-level host,
which is `status.url`) and for each component (`<isvc>-predictor-<ns>.<domain>`, the component's URL). Every
rule is a `Prefix` path `/` to a component's Service on port 80:

- the top-level host goes to the transformer if there is one, else to the predictor (also with an explainer);
- each component's host goes to that component;
- `ingressClassName` is the config's, when set; the Ingress carries the InferenceService's annotations.

Cluster-local InferenceServices (label `networking.kserve.io/visibility: cluster-local`, or ingressDomain
`svc.cluster.local`) get no Ingress; an Ingress left from before is deleted (KServe leaves it). Either way
`status.url` is `<urlScheme>://<top-level host>` and `status.address.url` names the entry component's Service
(`<urlScheme>://<isvc>-transformer.<ns>.svc.cluster.local`, else the predictor's). Until the predictor (then
the transformer, or the explainer without a transformer) is Ready, a public InferenceService gets no Ingress
and IngressReady is False with KServe's `<Component> ingress not created`.

Where KServe's rules are broken this module does what they evidently mean (README, "Where it deliberately
differs"): with a transformer, KServe routes the transformer's own host to the predictor and gives the
explainer's rule the transformer's host, so the transformer's URL reaches the explainer or the predictor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from apis import constants as c
from apis.conditions import FALSE, Condition
from apis.config import IngressConfig
from apis.inferenceservice import InferenceService
from apis.resources import INGRESSES
from manager.client import Object
from reconcilers.ingress import IngressConfigError, cluster_local_host

CLUSTER_LOCAL_DOMAIN: Final = "svc.cluster.local"
"""An ingressDomain that makes every InferenceService cluster-local (KServe `ClusterLocalDomain`)."""
SERVICE_PORT: Final = 80

_ACTION: Final = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.DOTALL)
_FIELD: Final = re.compile(r"^\.(Name|Namespace|IngressDomain)$")
_MAP_FIELD: Final = re.compile(r"^\.(Annotations|Labels)\.([A-Za-z_][A-Za-z0-9_]*)$")
_MAP_INDEX: Final = re.compile(r'^index\s+\.(Annotations|Labels)\s+"((?:[^"\\]|\\.)*)"$')
_NO_VALUE: Final = "<no value>"
"""What Go's text/template prints for a missing map key reached as a field."""
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# --- Hosts ----------------------------------------------------------------------------------------


def _render(template: str, values: Mapping[str, Any]) -> str:
    def substitute(match: re.Match[str]) -> str:
        action = match.group(2).strip()
        if found := _FIELD.match(action):
            return str(values[found.group(1)])
        if found := _MAP_FIELD.match(action):
            return str(values[found.group(1)].get(found.group(2), _NO_VALUE))
        if found := _MAP_INDEX.match(action):
            key = found.group(2).encode().decode("unicode_escape")
            return str(values[found.group(1)].get(key, ""))
        raise IngressConfigError(
            f"ingress domainTemplate {template!r}: unsupported action {{{{{match.group(2)}}}}}; use .Name, "
            '.Namespace, .IngressDomain, .Annotations.<key>, .Labels.<key> or index .Labels "<key>"'
        )

    pieces: list[str] = []
    position = 0
    for match in _ACTION.finditer(template):
        text = template[position : match.start()]
        if match.group(1):
            text = text.rstrip()
        pieces.append(text)
        pieces.append(substitute(match))
        position = match.end()
        if match.group(3):
            rest = template[position:]
            position += len(rest) - len(rest.lstrip())
    pieces.append(template[position:])
    return "".join(pieces)


def _check_domain(domain: str, template: str) -> None:
    """Kubernetes' IsFullyQualifiedDomainName, which KServe applies to every rendered host."""
    name = domain.removesuffix(".")
    problem = ""
    if not name:
        problem = "it is empty"
    elif len(name) > 253:
        problem = "it is longer than 253 characters"
    elif len(name.split(".")) < 2:
        problem = "it should be a domain with at least two segments separated by dots"
    else:
        bad = [label for label in name.split(".") if len(label) > 63 or not _DNS_LABEL.match(label)]
        if bad:
            problem = (
                f"{bad[0]!r} is not a DNS label (lower case alphanumeric characters or '-', starting and "
                "ending with an alphanumeric character, at most 63 characters)"
            )
    if problem:
        raise IngressConfigError(
            f"ingress domainTemplate {template!r} renders the host {domain!r}, which is not a fully "
            f"qualified domain name: {problem}"
        )


def domain_name(name: str, isvc: InferenceService, config: IngressConfig) -> str:
    """The host `domainTemplate` renders for `name` with the InferenceService's namespace, labels and
    annotations (KServe `GenerateDomainName`); `IngressConfigError` for a template or host it refuses."""
    values = {
        "Name": name,
        "Namespace": isvc.namespace,
        "IngressDomain": config.ingress_domain,
        "Annotations": isvc.annotations,
        "Labels": isvc.labels,
    }
    domain = _render(config.domain_template, values)
    _check_domain(domain, config.domain_template)
    return domain


def component_url(component_name: str, isvc: InferenceService, config: IngressConfig) -> str:
    """A component's `status.components.<c>.url`: always http, its own host (KServe createRawURL)."""
    return f"http://{domain_name(component_name, isvc, config)}"


def is_cluster_local(isvc: InferenceService, config: IngressConfig) -> bool:
    """No Ingress: the visibility label says cluster-local, or the ingress domain is the cluster's."""
    labelled = isvc.labels.get(c.NETWORK_VISIBILITY_LABEL) == c.CLUSTER_LOCAL_VISIBILITY
    return labelled or config.ingress_domain == CLUSTER_LOCAL_DOMAIN


@dataclass(frozen=True, slots=True)
class ServiceNames:
    """The Services the Ingress routes to: `<isvc>-<component>`, or the legacy `-default` names."""

    predictor: str
    transformer: str
    explainer: str

    def entry(self, isvc: InferenceService) -> str:
        return self.transformer if isvc.spec.transformer is not None else self.predictor


def service_names(isvc: InferenceService, legacy: frozenset[str] | set[str]) -> ServiceNames:
    """KServe's choice of names from the legacy Services that exist.

    With a transformer, a legacy transformer Service makes every name legacy; else, with an explainer, a
    legacy explainer Service makes the explainer's and the predictor's legacy; else the predictor's own.
    """
    name = isvc.name

    def pick(component: str, use_legacy: bool) -> str:
        if use_legacy:
            return c.legacy_component_name(name, component)
        return c.component_name(name, component)

    def exists(component: str) -> bool:
        return c.legacy_component_name(name, component) in legacy

    if isvc.spec.transformer is not None:
        old = exists(c.TRANSFORMER)
        return ServiceNames(pick(c.PREDICTOR, old), pick(c.TRANSFORMER, old), pick(c.EXPLAINER, old))
    if isvc.spec.explainer is not None:
        old = exists(c.EXPLAINER)
        return ServiceNames(pick(c.PREDICTOR, old), pick(c.TRANSFORMER, False), pick(c.EXPLAINER, old))
    old = exists(c.PREDICTOR)
    return ServiceNames(pick(c.PREDICTOR, old), pick(c.TRANSFORMER, False), pick(c.EXPLAINER, False))


def service_url(isvc: InferenceService, config: IngressConfig) -> str:
    """`status.url`: `<urlScheme>://<domainTemplate for the InferenceService>`."""
    return f"{config.url_scheme}://{domain_name(isvc.name, isvc, config)}"


def address_url(isvc: InferenceService, config: IngressConfig, names: ServiceNames) -> str:
    """`status.address.url`: the entry component's Service, cluster-local, with the config's urlScheme."""
    return f"{config.url_scheme}://{cluster_local_host(names.entry(isvc), isvc.namespace)}"


# --- The Ingress ----------------------------------------------------------------------------------


def _rule(host: str, service: str) -> Object:
    backend = {"service": {"name": service, "port": {"number": SERVICE_PORT}}}
    return {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}}


def _gate(isvc: InferenceService, component: str) -> bool:
    """IngressReady False `<Component> ingress not created` while `component` is not Ready; True if so."""
    status = isvc.status
    if status.is_condition_ready(c.READY_CONDITIONS[component]):
        return False
    reason = c.INGRESS_NOT_CREATED_REASONS[component]
    status.set_condition(c.INGRESS_READY, Condition(type=c.INGRESS_READY, status=FALSE, reason=reason))
    return True


def desired_ingress(isvc: InferenceService, config: IngressConfig, names: ServiceNames) -> Object | None:
    """The Ingress `<isvc>` (KServe createRawIngress), or None with IngressReady explaining what it waits
    for. Raises `IngressConfigError` for a domainTemplate that renders no valid host."""
    if _gate(isvc, c.PREDICTOR):
        return None
    top = domain_name(isvc.name, isvc, config)
    rules: list[Object] = []
    if isvc.spec.transformer is not None:
        if _gate(isvc, c.TRANSFORMER):
            return None
        if isvc.spec.explainer is not None:
            rules.append(_rule(domain_name(names.explainer, isvc, config), names.explainer))
        rules.append(_rule(top, names.transformer))
        rules.append(_rule(domain_name(names.transformer, isvc, config), names.transformer))
    elif isvc.spec.explainer is not None:
        if _gate(isvc, c.EXPLAINER):
            return None
        rules.append(_rule(top, names.predictor))
        rules.append(_rule(domain_name(names.explainer, isvc, config), names.explainer))
    else:
        rules.append(_rule(top, names.predictor))
    rules.append(_rule(domain_name(names.predictor, isvc, config), names.predictor))
    meta: Object = {"name": isvc.name, "namespace": isvc.namespace}
    if isvc.annotations:
        meta["annotations"] = dict(isvc.annotations)
    meta["ownerReferences"] = [isvc.owner_reference()]
    spec: Object = {}
    if config.ingress_class_name:
        spec["ingressClassName"] = config.ingress_class_name
    spec["rules"] = rules
    return {"apiVersion": INGRESSES.api_version, "kind": INGRESSES.kind, "metadata": meta, "spec": spec}
