"""What local mode installs from `config/`, rendered the way `config/default` would deploy it.

Each base is built with kubectl's own kustomize (the same one the manifests are tested with), then given
`config/default`'s namespace: namespaced objects without one, and ServiceAccount subjects of bindings, go
to `kserve`. The webhook configurations are the one deliberate change: offline there is no Service network
in front of the manager, so `clientConfig.service` becomes `clientConfig.url` pointing at a loopback port
(the e2e forwarder). Names, paths, rules and selectors stay exactly as shipped, and the names must be the
ones the manager's self-signed mode patches (`webhooks.certs`), or the API server would never trust it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from webhooks.certs import MUTATING_CONFIGS, VALIDATING_CONFIGS

MANAGER_NAMESPACE = "kserve"
CLUSTER_SCOPED = frozenset(
    {
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterServingRuntime",
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
        "Namespace",
        "ValidatingWebhookConfiguration",
    }
)
WEBHOOK_KINDS = {
    "MutatingWebhookConfiguration": MUTATING_CONFIGS,
    "ValidatingWebhookConfiguration": VALIDATING_CONFIGS,
}

Manifest = dict[str, Any]


class RenderError(RuntimeError):
    """A base could not be built."""


def in_namespace(objects: Iterable[Manifest], namespace: str = MANAGER_NAMESPACE) -> list[Manifest]:
    """Copies with `namespace` set where `config/default` would set it."""
    result: list[Manifest] = []
    for original in objects:
        obj = copy.deepcopy(original)
        if obj.get("kind") not in CLUSTER_SCOPED:
            obj.setdefault("metadata", {}).setdefault("namespace", namespace)
        for subject in obj.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount":
                subject.setdefault("namespace", namespace)
        result.append(obj)
    return result


def url_webhook_configurations(objects: Iterable[Manifest], base_url: str) -> list[Manifest]:
    """The webhook configurations among `objects`, calling `base_url` + each webhook's service path."""
    result: list[Manifest] = []
    for original in objects:
        if original.get("kind") not in WEBHOOK_KINDS:
            continue
        obj = copy.deepcopy(original)
        for webhook in obj.get("webhooks") or []:
            config = webhook.get("clientConfig") or {}
            service = config.pop("service", None)
            if not isinstance(service, dict) or not service.get("path"):
                raise RenderError(f"webhook {webhook.get('name')} has no service path to turn into a url")
            config["url"] = base_url.rstrip("/") + str(service["path"])
            webhook["clientConfig"] = config
        result.append(obj)
    return result


def unpatched_webhook_configurations(objects: Iterable[Manifest]) -> list[str]:
    """`Kind/name` of shipped webhook configurations the self-signed manager would not patch."""
    return [
        f"{obj['kind']}/{obj['metadata']['name']}"
        for obj in objects
        if obj.get("kind") in WEBHOOK_KINDS and obj["metadata"]["name"] not in WEBHOOK_KINDS[obj["kind"]]
    ]


def write_manifests(objects: Sequence[Manifest], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path
