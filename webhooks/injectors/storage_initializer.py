"""The storage-initializer init container that downloads the model before the server starts.

The InferenceService controller does not put the init container into the Knative revision template (Knative
would reject or rewrite it); it leaves the model's URI in the internal annotation
`internal.serving.kserve.io/storage-initializer-sourceuri` and this injector, called from the pod webhook,
adds the init container, the shared `kserve-provision-location` emptyDir at `/mnt/models`, read-only mounts
on the model (and transformer) container and rewrites `STORAGE_URI` to the local path, as KServe v0.11 does.

`pvc://<claim>/<path>` sources mount the claim instead: at `/mnt/pvc` for the init container to copy from,
or, with `enableDirectPvcVolumeMount`, directly at `/mnt/models` (sub-path `<path>`) with no init
container at all.

Differences from v0.11 (reference §4.5, §10):
- The `serving.kserve.io/storage-initializer-uid` annotation (e.g. "1337" for Istio CNI) sets `runAsUser`
  even when kserve-container has no securityContext; v0.11 dereferences a nil pointer there and the pod is
  rejected with "EOF". A value that is not a non-negative integer is an admission error (v0.11 ignores it).
- Without a user securityContext the init container gets the restricted profile (see `security`).
- Idempotent: an existing `storage-initializer` init container skips the injector (as in KServe), and the
  direct-PVC path, which adds no init container, only ever "ensures" its volume, mount and env value.
"""

from __future__ import annotations

from apis.config import InferenceServicesConfig
from apis.constants import (
    AGENT_ANNOTATION,
    INFERENCE_SERVICE_CONTAINER_NAME,
    STORAGE_INITIALIZER_CONTAINER_NAME,
    STORAGE_INITIALIZER_SOURCE_URI_ANNOTATION,
    STORAGE_INITIALIZER_UID_ANNOTATION,
    STORAGE_SPEC_ANNOTATION,
)
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

TRANSFORMER_CONTAINER_NAME = "transformer-container"
MODEL_MOUNT_PATH = "/mnt/models"
PROVISION_VOLUME_NAME = "kserve-provision-location"
PVC_VOLUME_NAME = "kserve-pvc-source"
PVC_MOUNT_PATH = "/mnt/pvc"
PVC_URI_PREFIX = "pvc://"
STORAGE_URI_ENV = "STORAGE_URI"


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


async def inject_storage_initializer(
    pod: Pod, namespace: str, configs: InferenceServicesConfig, credentials: CredentialInjector
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
            mount: dict[str, object] = {
                "name": PVC_VOLUME_NAME,
                "mountPath": MODEL_MOUNT_PATH,
                "readOnly": True,
            }
            if path:
                mount["subPath"] = path
            ensure_mount(model, mount)
            set_existing_env(model, STORAGE_URI_ENV, MODEL_MOUNT_PATH, only_if_non_empty=True)
            return
        pvc_mount = {"name": PVC_VOLUME_NAME, "mountPath": PVC_MOUNT_PATH, "readOnly": True}
        init_mounts.append(dict(pvc_mount))
        for reader in readers:
            ensure_mount(reader, dict(pvc_mount))
        source_uri = f"{PVC_MOUNT_PATH}/{path}"

    ensure_volume(pod, {"name": PROVISION_VOLUME_NAME, "emptyDir": {}})
    init_mounts.append({"name": PROVISION_VOLUME_NAME, "mountPath": MODEL_MOUNT_PATH})
    security_context = injected_security_context(pod, model)
    init_container: Container = {
        "name": STORAGE_INITIALIZER_CONTAINER_NAME,
        "image": config.image,
        "args": [source_uri, MODEL_MOUNT_PATH],
        "resources": config.resources(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": init_mounts,
        "securityContext": security_context,
    }
    for reader in readers:
        ensure_mount(reader, {"name": PROVISION_VOLUME_NAME, "mountPath": MODEL_MOUNT_PATH, "readOnly": True})
    set_existing_env(model, STORAGE_URI_ENV, MODEL_MOUNT_PATH, only_if_non_empty=True)

    if pod_annotations.get(STORAGE_SPEC_ANNOTATION) == "true":
        await credentials.inject_storage_spec_credentials(pod, namespace, init_container)
    else:
        await credentials.inject_service_account_credentials(pod, namespace, init_container)

    if uid is not None:
        security_context["runAsUser"] = uid
        if uid == 0 and security_context.get("runAsNonRoot") is True:
            del security_context["runAsNonRoot"]
    init_containers(pod).append(init_container)
