"""Shape checks and small idempotent edits on a pod held as a plain JSON dict.

The admission webhook receives the pod as raw JSON and answers with a JSON Patch computed against those raw
bytes, so the injectors edit the dict itself rather than a typed model (a model round trip could drop or
reorder fields and produce a noisy patch). The price of dicts is that any field may hold anything; so the
pod is checked once, up front, for exactly the fields the injectors touch (`check_pod`), and every problem
becomes a `MutationError` with a path and a reason instead of a KeyError/TypeError later. The edit helpers
are all "ensure" operations (add if absent, replace by name), which is what makes each injector idempotent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

Pod = dict[str, Any]
Container = dict[str, Any]

_DNS1123_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL: Final = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_LABEL_MAX: Final = 63
_DNS1123_SUBDOMAIN: Final = re.compile(rf"{_DNS1123_LABEL_FMT}(\.{_DNS1123_LABEL_FMT})*")
_DNS1123_SUBDOMAIN_MAX: Final = 253


class MutationError(Exception):
    """The pod cannot be mutated; the message is one line saying what is wrong.

    `code` is the HTTP-like status the admission response carries: 400 for a malformed pod, 500 for a
    configuration or lookup problem (as KServe's `admission.Errored`).
    """

    def __init__(self, message: str, *, code: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _bad(path: str, expected: str, value: object) -> MutationError:
    return MutationError(f"invalid pod: {path} must be {expected}, got {type(value).__name__}", code=400)


def _check_str_map(value: object, path: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _bad(path, "an object of strings", value)
    for key, item in value.items():
        if not isinstance(item, str):
            raise _bad(f'{path}["{key}"]', "a string", item)


def _check_named_list(value: object, path: str, *, required: bool = False) -> list[dict[str, Any]]:
    if value is None:
        if required:
            raise MutationError(f"invalid pod: {path} is missing", code=400)
        return []
    if not isinstance(value, list):
        raise _bad(path, "a list", value)
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"{path}[{index}]", "an object", item)
        if not isinstance(item.get("name"), str):
            raise _bad(f"{path}[{index}].name", "a string", item.get("name"))
    return value


def _check_optional_dict(value: object, path: str) -> None:
    if value is not None and not isinstance(value, dict):
        raise _bad(path, "an object", value)


def _check_container(container: dict[str, Any], path: str) -> None:
    for index, env in enumerate(_check_named_list(container.get("env"), f"{path}.env")):
        if "value" in env and env["value"] is not None and not isinstance(env["value"], str):
            raise _bad(f"{path}.env[{index}].value", "a string", env["value"])
    ports = container.get("ports")
    if ports is not None:
        if not isinstance(ports, list):
            raise _bad(f"{path}.ports", "a list", ports)
        for index, port in enumerate(ports):
            if not isinstance(port, dict):
                raise _bad(f"{path}.ports[{index}]", "an object", port)
            number = port.get("containerPort")
            if not isinstance(number, int) or isinstance(number, bool):
                raise _bad(f"{path}.ports[{index}].containerPort", "an integer", number)
    mounts = container.get("volumeMounts")
    if mounts is not None and (not isinstance(mounts, list) or not all(isinstance(m, dict) for m in mounts)):
        raise _bad(f"{path}.volumeMounts", "a list of objects", mounts)
    args = container.get("args")
    if args is not None and (not isinstance(args, list) or not all(isinstance(a, str) for a in args)):
        raise _bad(f"{path}.args", "a list of strings", args)
    resources = container.get("resources")
    _check_optional_dict(resources, f"{path}.resources")
    if isinstance(resources, dict):
        _check_optional_dict(resources.get("limits"), f"{path}.resources.limits")
    _check_optional_dict(container.get("securityContext"), f"{path}.securityContext")
    _check_optional_dict(container.get("readinessProbe"), f"{path}.readinessProbe")


def _check_metadata(pod: object) -> None:
    """Check that the pod is an object, and its metadata, labels and annotations."""
    if not isinstance(pod, dict):
        raise _bad("the object", "a Pod (a JSON object)", pod)
    metadata = pod.get("metadata")
    _check_optional_dict(metadata, "metadata")
    metadata = metadata or {}
    _check_str_map(metadata.get("labels"), "metadata.labels")
    _check_str_map(metadata.get("annotations"), "metadata.annotations")
    name = metadata.get("name")
    if name is not None and not isinstance(name, str):
        raise _bad("metadata.name", "a string", name)


def check_pod(pod: object) -> Pod:
    """Check every field the injectors read or write; raise MutationError (code 400) on the first problem."""
    _check_metadata(pod)
    assert isinstance(pod, dict)
    spec = pod.get("spec")
    if spec is None:
        raise MutationError("invalid pod: spec is missing", code=400)
    if not isinstance(spec, dict):
        raise _bad("spec", "an object", spec)
    containers = _check_named_list(spec.get("containers"), "spec.containers", required=True)
    if not containers:
        raise MutationError("invalid pod: spec.containers is empty", code=400)
    for index, container in enumerate(containers):
        _check_container(container, f"spec.containers[{index}]")
    for index, container in enumerate(_check_named_list(spec.get("initContainers"), "spec.initContainers")):
        _check_container(container, f"spec.initContainers[{index}]")
    _check_named_list(spec.get("volumes"), "spec.volumes")
    _check_str_map(spec.get("nodeSelector"), "spec.nodeSelector")
    _check_optional_dict(spec.get("securityContext"), "spec.securityContext")
    account = spec.get("serviceAccountName")
    if account is not None and not isinstance(account, str):
        raise _bad("spec.serviceAccountName", "a string", account)
    if account and not is_dns1123_subdomain(account):
        raise MutationError(
            f"invalid pod: spec.serviceAccountName {account!r} is not a valid ServiceAccount name (lower "
            "case letters, digits, '-' and '.', at most 253 characters, starting and ending with a letter "
            "or digit)",
            code=400,
        )
    return pod


def is_dns1123_subdomain(name: str) -> bool:
    """Kubernetes' rule for most object names (ServiceAccounts, Secrets): safe as one URL path segment."""
    return len(name) <= _DNS1123_SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN.fullmatch(name) is not None


def is_dns1123_label(name: str) -> bool:
    """Kubernetes' rule for namespace names."""
    return len(name) <= _DNS1123_LABEL_MAX and _DNS1123_LABEL.fullmatch(name) is not None


def get_labels(pod: Pod) -> Mapping[str, str]:
    """The pod's labels (read-only view; empty if none)."""
    return (pod.get("metadata") or {}).get("labels") or {}


def get_annotations(pod: Pod) -> Mapping[str, str]:
    """The pod's annotations (read-only view; empty if none)."""
    return (pod.get("metadata") or {}).get("annotations") or {}


def writable_annotations(pod: Pod) -> dict[str, str]:
    """The pod's annotations, creating `metadata.annotations` if absent."""
    metadata = pod.get("metadata")
    if metadata is None:
        metadata = pod["metadata"] = {}
    if metadata.get("annotations") is None:
        metadata["annotations"] = {}
    result: dict[str, str] = metadata["annotations"]
    return result


def _list(owner: dict[str, Any], key: str) -> list[Any]:
    if owner.get(key) is None:
        owner[key] = []
    result: list[Any] = owner[key]
    return result


def containers(pod: Pod) -> list[Container]:
    """`spec.containers` (checked non-empty by check_pod)."""
    return _list(pod["spec"], "containers")


def init_containers(pod: Pod) -> list[Container]:
    """`spec.initContainers`, created if absent."""
    return _list(pod["spec"], "initContainers")


def find(items: list[Container] | None, name: str) -> Container | None:
    """The first entry with this name, or None."""
    for item in items or ():
        if item.get("name") == name:
            return item
    return None


def find_container(pod: Pod, name: str) -> Container | None:
    """The app container with this name, or None."""
    return find(pod["spec"].get("containers"), name)


def ensure_volume(pod: Pod, volume: dict[str, Any]) -> None:
    """Add the volume unless one with its name exists."""
    volumes = _list(pod["spec"], "volumes")
    if find(volumes, volume["name"]) is None:
        volumes.append(volume)


def ensure_mount(container: Container, mount: dict[str, Any]) -> None:
    """Add the volume mount unless the container already mounts that volume at that path."""
    mounts = _list(container, "volumeMounts")
    for existing in mounts:
        if existing.get("name") == mount["name"] and existing.get("mountPath") == mount["mountPath"]:
            return
    mounts.append(mount)


def merge_env(container: Container, env: list[dict[str, Any]]) -> None:
    """Set each variable: replace an existing one of the same name in place, else append (no duplicates)."""
    current = _list(container, "env")
    for var in env:
        for index, existing in enumerate(current):
            if existing.get("name") == var["name"]:
                current[index] = var
                break
        else:
            current.append(var)


def set_existing_env(container: Container, name: str, value: str, *, only_if_non_empty: bool = False) -> None:
    """Overwrite the value of an env var that is already there; never adds one."""
    for var in container.get("env") or ():
        if var.get("name") == name and (var.get("value") or not only_if_non_empty):
            var["value"] = value
            var.pop("valueFrom", None)


def ensure_port(container: Container, port: dict[str, Any]) -> None:
    """Add the container port unless one with its name or number exists."""
    ports = _list(container, "ports")
    for existing in ports:
        if existing.get("name") == port["name"] or existing.get("containerPort") == port["containerPort"]:
            return
    ports.append(port)
