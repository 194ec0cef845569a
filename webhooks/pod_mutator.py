"""The `/mutate-pods` logic: KServe's pod injectors over a deep copy of the admitted pod.

Only pods labelled `serving.kserve.io/inferenceservice` are touched (the webhook's objectSelector already
filters, this is the controller-side `needMutate` check); anything else is returned as is. For a labelled
pod the injectors run in KServe v0.11's order: GKE accelerator selector, storage initializer (with
credentials), agent sidecar, metrics aggregation. The mutation is pure apart from the ServiceAccount/Secret
reads behind `CredentialLookup`, so it is tested without a server; `PodMutatorHandler` adapts it to the
admission handler protocol of `webhooks.admission`.

Why errors look the way they do: v0.11 panics on malformed ConfigMap JSON and on a nil securityContext,
and the API server then reports "failed calling webhook ... EOF", which tells the user nothing (reference
§9 item 4). Here every failure is a `MutationError` with one line saying what is wrong: a malformed pod
(code 400, including a namespace or ServiceAccount name that is no valid name, which would otherwise end
up in a lookup's URL path), a broken ConfigMap key (named), an unreadable Secret (code 500). ConfigMap keys
are read only when an injector needs them, so a broken `logger` key fails only pods that use the logger.

The ConfigMap data comes from a provider callable (the informer cache in production); its parsed form is
reused while the data is unchanged, so a request costs one deep copy and the injectors, not a JSON parse.
ClusterStorageContainers come from a provider callable too (the informer cache), read only for pods that
get a storage initializer.

The answer is the JSON Patch from the pod as received to the mutated copy, the operations
`jsonpatch.make_patch` gives, computed by `webhooks.json_patch` from the subtrees the injectors changed
(a full diff of the pod cost about 1 ms, more than the rest of an admission; issue 13).

Deliberate differences from v0.11, each documented in its injector:
- securityContext of the containers we inject: KServe copies the user's and injects none when the user set
  none, which a namespace enforcing the restricted Pod Security Standard rejects; we inject the restricted
  profile (runAsNonRoot, allowPrivilegeEscalation false, capabilities drop ALL, seccomp RuntimeDefault)
  unless the user's own container or pod securityContext asks otherwise (`injectors.security`);
- the storage-initializer UID annotation works without a user securityContext (v0.11 panics);
- a ClusterStorageContainer never renames the init container (`injectors.storage_initializer`);
- credentials: env vars set by name, stale ServiceAccount Secret references skipped (`injectors.credentials`);
- metrics env vars merged by name, not duplicated; `prometheus.io/scrape: "true"` set;
- malformed ConfigMap JSON, bad quantities, bad annotations: admission errors naming the problem, no panic.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from apis.config import ConfigError
from apis.constants import INFERENCE_SERVICE_LABEL
from webhooks.admission import AdmissionRequest, AdmissionResponse, Status, allowed, errored
from webhooks.config import ConfigProvider, ConfigView
from webhooks.injectors.accelerator import inject_accelerator_selector
from webhooks.injectors.agent import inject_agent
from webhooks.injectors.credentials import CredentialInjector, CredentialLookup
from webhooks.injectors.metrics_aggregator import inject_metrics_aggregator
from webhooks.injectors.pod import MutationError, Pod, check_pod, is_dns1123_label
from webhooks.injectors.storage_initializer import StorageContainersProvider, inject_storage_initializer
from webhooks.json_patch import copy_json, make_patch

__all__ = ["ConfigProvider", "MutationError", "PodMutator", "PodMutatorHandler", "needs_mutation"]

log = logging.getLogger(__name__)

_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def needs_mutation(pod: object) -> bool:
    """Whether the pod carries the InferenceService label (MutationError if it is not a JSON object at all).

    Nothing else is checked: a pod that is not ours is admitted as it is, whatever it contains.
    """
    if not isinstance(pod, dict):
        raise MutationError(
            f"invalid pod: the object must be a Pod (a JSON object), got {type(pod).__name__}", code=400
        )
    metadata = pod.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    return isinstance(labels, dict) and INFERENCE_SERVICE_LABEL in labels


class PodMutator:
    """Applies KServe's injectors.

    Config comes from `config_provider`, secrets through `lookup`, ClusterStorageContainers from
    `storage_containers`.
    """

    def __init__(
        self,
        config_provider: ConfigProvider,
        lookup: CredentialLookup,
        storage_containers: StorageContainersProvider = tuple,
    ) -> None:
        self._config = ConfigView(config_provider)
        self._lookup = lookup
        self._storage_containers = storage_containers

    async def mutate(self, pod: Any, namespace: str) -> Pod:
        """A mutated deep copy of a labelled pod, or `pod` itself when it is not ours."""
        if not needs_mutation(pod):
            return pod  # type: ignore[no-any-return]
        mutated = check_pod(copy_json(pod))
        namespace = namespace or (mutated.get("metadata") or {}).get("namespace") or ""
        if namespace and not is_dns1123_label(namespace):
            raise MutationError(
                f"invalid pod: namespace {namespace!r} is not a valid namespace name (lower case letters, "
                "digits and '-', at most 63 characters, starting and ending with a letter or digit)",
                code=400,
            )
        try:
            config = self._config.current()
        except LookupError as exc:
            raise MutationError(str(exc)) from exc
        credentials = CredentialInjector(config.credentials, self._lookup)

        injector = "accelerator"  # one `try` for all four: a `with` each costs microseconds per pod
        try:
            inject_accelerator_selector(mutated)
            injector = "storage-initializer"
            containers = self._storage_containers
            await inject_storage_initializer(mutated, namespace, config, credentials, containers)
            injector = "agent"
            await inject_agent(mutated, namespace, config, credentials)
            injector = "metrics-aggregator"
            inject_metrics_aggregator(mutated, config.metrics_aggregator())
        except MutationError:
            raise
        except ConfigError as exc:
            raise MutationError(str(exc)) from None
        except Exception as exc:  # a bug must still answer the API server with a message, never EOF
            log.exception("pod mutation failed in the %s injector", injector)
            raise MutationError(f"internal error in the {injector} injector: {exc!r}") from exc
        return mutated


class PodMutatorHandler:
    """The `/mutate-pods` handler: a JSON Patch for our pods, "allowed" for others, 4xx/5xx on errors."""

    reads_raw_object = False  # the mutator copies the pod and diffs the copy against `request.object`

    def __init__(self, mutator: PodMutator) -> None:
        self._mutator = mutator

    async def handle(self, request: AdmissionRequest) -> AdmissionResponse:
        """Mutate the request's pod (KServe: decode failure 400, mutation failure 500)."""
        if request.kind.group or request.kind.kind != "Pod":
            kind = f"{request.kind.group}/{request.kind.kind}" if request.kind.group else request.kind.kind
            return errored(400, f"expected a core/v1 Pod, got {kind}")
        pod = request.object
        if pod is None:
            return errored(400, "the admission request carries no pod")
        try:
            mutated = await self._mutator.mutate(pod, request.namespace)
        except MutationError as exc:
            return errored(exc.code, exc.message)
        if mutated is pod:
            return allowed()
        # The mutator never edits `pod` (it works on a copy): `pod` is the object as the API server sent it.
        operations = make_patch(pod, mutated)
        if not operations:
            return allowed()
        patch = base64.b64encode(_encode_json(operations).encode("utf-8")).decode("ascii")
        return AdmissionResponse(allowed=True, status=Status(code=200), patch=patch, patch_type="JSONPatch")
