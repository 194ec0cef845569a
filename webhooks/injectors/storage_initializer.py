"""The storage-initializer init container that downloads the model before the server starts.

The InferenceService controller does not put the init container into the Knative revision template (Knative
would reject or rewrite it); it leaves the model's URI in the internal annotation
`internal.serving.kserve.io/storage-initializer-sourceuri` and this injector, called from the pod webhook,
adds the init container, the shared `kserve-provision-location` emptyDir at `/mnt/models`, read-only mounts
on the model container and on a collocated `transformer-container`, and rewrites their non-empty
`STORAGE_URI` env to the local path, as KServe v0.11 does.

`pvc://<claim>/<path>` sources mount the claim instead: at `/mnt/pvc` for the init container to copy from,
or, with `enableDirectPvcVolumeMount`, directly at `/mnt/models` (sub-path `<path>`) on the model and the
transformer container, with no init container at all.

After the credentials (`credentials`), a ClusterStorageContainer serving the source URI (the rewritten one
for a storage spec) is merged over the init container, as Kubernetes' strategic merge does (env, ports and
mounts by key, other lists replaced); without one, the ConfigMap's image and resources stay.

Differences from v0.11 (README):
- The `serving.kserve.io/storage-initializer-uid` annotation (e.g. "1337" for Istio CNI) sets `runAsUser`
  even when kserve-container has no securityContext; v0.11 dereferences a nil pointer there and the pod is
  rejected with "EOF". A value that is not a non-negative integer is an admission error (v0.11 ignores it).
- Without a user securityContext the init container gets the restricted profile (see `security`).
- The init container keeps the name `storage-initializer` when a ClusterStorageContainer names its
  container otherwise (KServe renames it, and a webhook re-invocation then injects a second one).
- Idempotent: an existing `storage-initializer` init container skips the injector (as in KServe), and the
  direct-PVC path, which adds no init container, only ever "ensures" its volume, mounts and env values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from apis.config import InferenceServicesConfig
from apis.constants import (
    AGENT_ANNOTATION,
    INFERENCE_SERVICE_CONTAINER_NAME,
    STORAGE_INITIALIZER_CONTAINER_NAME,
    STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION,
    STORAGE_INITIALIZER_UID_ANNOTATION,
    STORAGE_SPEC_ANNOTATION,
)
from apis.storagecontainer import StorageContainerError, storage_container_for
from reconcilers.runtime import CONTAINER_LIST_KEYS, strategic_merge
from webhooks.injectors.credentials import CredentialInjector
from webhooks.injectors.pod import (
    Container,
    MutationError,
    Pod,
    ensure_mount,
    ensure_volume,
    find,
    find_container,
    get_annotations,
    init_containers,
    set_existing_env,
)
from webhooks.injectors.security import injected_security_context

StorageContainersProvider = Callable[[], Iterable[Mapping[str, Any]]]
"""Returns the cluster's ClusterStorageContainer objects (the informer cache in production)."""

TRANSFORMER_CONTAINER_NAME: Final = "transformer-container"
MODEL_MOUNT_PATH: Final = "/mnt/models"
PROVISION_VOLUME_NAME: Final = "kserve-provision-location"
PVC_VOLUME_NAME: Final = "kserve-pvc-source"
PVC_MOUNT_PATH: Final = "/mnt/pvc"
PVC_URI_PREFIX: Final = "pvc://"
STORAGE_URI_ENV: Final = "STORAGE_URI"


def parse_pvc_uri(uri: str) -> tuple[str, str]:
    """`pvc://<claim>/<path>` -> (claim, path); the path may be empty."""
    claim, _, path = uri.removeprefix(PVC_URI_PREFIX).partition("/")
    if not claim:
        raise MutationError(f"invalid storage URI {uri!r}: expected pvc://<claim-name>/[path]")
    return claim, path


def parse_uid(value: str) -> int:
    """The storage-initializer-uid annotation as a user ID."""
    try:
        uid = int(value, 10)
    except ValueError:
        uid = -1
    if not 0 <= uid < 2**63:
        raise MutationError(
            f'annotation "{STORAGE_INITIALIZER_UID_ANNOTATION}" must be a non-negative integer user ID, '
            f"got {value!r}"
        )
    return uid


def _without_nulls(value: Any) -> Any:
    """A JSON value with null members dropped, as Go's decode/encode round trip of a Container drops them."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def merge_storage_container(init_container: Container, storage_container: Mapping[str, Any]) -> Container:
    """The init container with a ClusterStorageContainer's container merged over it (name kept)."""
    merged: Container = strategic_merge(
        init_container, _without_nulls(storage_container), CONTAINER_LIST_KEYS
    )
    merged["name"] = STORAGE_INITIALIZER_CONTAINER_NAME
    return merged


def _mount_pvc_directly(readers: list[Container], path: str) -> None:
    mount: dict[str, object] = {"name": PVC_VOLUME_NAME, "mountPath": MODEL_MOUNT_PATH, "readOnly": True}
    if path:
        mount["subPath"] = path
    for reader in readers:
        ensure_mount(reader, dict(mount))


async def inject_storage_initializer(
    pod: Pod,
    namespace: str,
    configs: InferenceServicesConfig,
    credentials: CredentialInjector,
    storage_containers: StorageContainersProvider = tuple,
) -> None:
    """Add the storage initializer (or the direct PVC mount) for the pod's source-URI annotation."""
    pod_annotations = get_annotations(pod)
    source_uri = pod_annotations.get(STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION)
    if source_uri is None or AGENT_ANNOTATION in pod_annotations:
        return
    if find(pod["spec"].get("initContainers"), STORAGE_INITIALIZER_CONTAINER_NAME) is not None:
        return
    uid_annotation = pod_annotations.get(STORAGE_INITIALIZER_UID_ANNOTATION)
    uid = parse_uid(uid_annotation) if uid_annotation is not None else None
    model = find_container(pod, INFERENCE_SERVICE_CONTAINER_NAME)
    if model is None:
        raise MutationError(
            "cannot inject the storage initializer: "
            f"the pod has no container named {INFERENCE_SERVICE_CONTAINER_NAME}"
        )
    config = configs.storage_initializer()
    transformer = find_container(pod, TRANSFORMER_CONTAINER_NAME)
    readers: list[Container] = [model] if transformer is None else [model, transformer]
    init_mounts: list[dict[str, object]] = []

    if source_uri.startswith(PVC_URI_PREFIX):
        claim, path = parse_pvc_uri(source_uri)
        ensure_volume(pod, {"name": PVC_VOLUME_NAME, "persistentVolumeClaim": {"claimName": claim}})
        if config.enable_direct_pvc_volume_mount:
            _mount_pvc_directly(readers, path)
            for reader in readers:
                set_existing_env(reader, STORAGE_URI_ENV, MODEL_MOUNT_PATH, only_if_non_empty=True)
            return
        pvc_mount = {"name": PVC_VOLUME_NAME, "mountPath": PVC_MOUNT_PATH, "readOnly": True}
        init_mounts.append(dict(pvc_mount))
        for reader in readers:
            ensure_mount(reader, dict(pvc_mount))
        source_uri = f"{PVC_MOUNT_PATH}/{path}"

    ensure_volume(pod, {"name": PROVISION_VOLUME_NAME, "emptyDir": {}})
    init_mounts.append({"name": PROVISION_VOLUME_NAME, "mountPath": MODEL_MOUNT_PATH})
    init_container: Container = {
        "name": STORAGE_INITIALIZER_CONTAINER_NAME,
        "image": config.image,
        "args": [source_uri, MODEL_MOUNT_PATH],
        "resources": config.resources(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": init_mounts,
        "securityContext": injected_security_context(pod, model),
    }
    for reader in readers:
        ensure_mount(reader, {"name": PROVISION_VOLUME_NAME, "mountPath": MODEL_MOUNT_PATH, "readOnly": True})
        set_existing_env(reader, STORAGE_URI_ENV, MODEL_MOUNT_PATH, only_if_non_empty=True)

    if pod_annotations.get(STORAGE_SPEC_ANNOTATION) == "true":
        await credentials.inject_storage_spec_credentials(pod, namespace, init_container)
        source_uri = init_container["args"][0]
    else:
        await credentials.inject_service_account_credentials(pod, namespace, init_container)

    try:
        match = storage_container_for(storage_containers(), source_uri)
    except StorageContainerError as exc:
        raise MutationError(str(exc)) from None
    if match is not None:
        init_container = merge_storage_container(init_container, match.spec.container)

    if uid is not None:
        security_context = init_container.get("securityContext")
        if not isinstance(security_context, dict):
            security_context = init_container["securityContext"] = {}
        security_context["runAsUser"] = uid
        if uid == 0 and security_context.get("runAsNonRoot") is True:
            del security_context["runAsNonRoot"]
    init_containers(pod).append(init_container)
