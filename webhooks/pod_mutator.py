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
(code 400), a broken ConfigMap key (named), an unreadable Secret (code 500). ConfigMap keys are read only
when an injector needs them, so a broken `logger` key fails only pods that use the logger.

The ConfigMap data comes from a provider callable (the informer cache in production); its parsed form is
reused while the data is unchanged, so a request costs one deep copy and the injectors, not a JSON parse.

Deliberate differences from v0.11, each documented in its injector:
- securityContext of the containers we inject: KServe copies the user's and injects none when the user set
  none, which a namespace enforcing the restricted Pod Security Standard rejects; we inject the restricted
  profile (runAsNonRoot, allowPrivilegeEscalation false, capabilities drop ALL, seccomp RuntimeDefault)
  unless the user's own container or pod securityContext asks otherwise (`injectors.security`);
- the storage-initializer UID annotation works without a user securityContext (v0.11 panics);
- metrics env vars merged by name, not duplicated; `prometheus.io/scrape: "true"` set;
- malformed ConfigMap JSON, bad quantities, bad annotations: admission errors naming the problem, no panic.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from apis.config import ConfigError
from apis.constants import INFERENCE_SERVICE_LABEL
from webhooks.admission import (
    AdmissionRequest,
    AdmissionResponse,
    allowed,
    errored,
    patch_response_from_raw,
)
from webhooks.config import ConfigProvider, ConfigView
from webhooks.injectors.accelerator import inject_accelerator_selector
from webhooks.injectors.agent import inject_agent
from webhooks.injectors.credentials import CredentialInjector, CredentialLookup
from webhooks.injectors.metrics_aggregator import inject_metrics_aggregator
from webhooks.injectors.pod import MutationError, Pod, check_pod
from webhooks.injectors.storage_initializer import inject_storage_initializer

__all__ = ["ConfigProvider", "MutationError", "PodMutator", "PodMutatorHandler", "needs_mutation"]

log = logging.getLogger(__name__)


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


@contextmanager
def _errors_as_mutation_error(injector: str) -> Iterator[None]:
    try:
        yield
    except MutationError:
        raise
    except ConfigError as exc:
        raise MutationError(str(exc)) from None
    except Exception as exc:  # a bug must still answer the API server with a message, never EOF
        log.exception("pod mutation failed in the %s injector", injector)
        raise MutationError(f"internal error in the {injector} injector: {exc!r}") from exc


class PodMutator:
    """Applies KServe's injectors; config from `config_provider`, secrets through `lookup`."""

    def __init__(self, config_provider: ConfigProvider, lookup: CredentialLookup) -> None:
        self._config = ConfigView(config_provider)
        self._lookup = lookup

    async def mutate(self, pod: Any, namespace: str) -> Pod:
        """A mutated deep copy of a labelled pod, or `pod` itself when it is not ours."""
        if not needs_mutation(pod):
            return pod  # type: ignore[no-any-return]
        mutated = check_pod(copy.deepcopy(pod))
        namespace = namespace or (mutated.get("metadata") or {}).get("namespace") or ""
        try:
            config = self._config.current()
        except LookupError as exc:
            raise MutationError(str(exc)) from exc
        credentials = CredentialInjector(config.credentials, self._lookup)

        with _errors_as_mutation_error("accelerator"):
            inject_accelerator_selector(mutated)
        with _errors_as_mutation_error("storage-initializer"):
            await inject_storage_initializer(mutated, namespace, config, credentials)
        with _errors_as_mutation_error("agent"):
            await inject_agent(mutated, namespace, config, credentials)
        with _errors_as_mutation_error("metrics-aggregator"):
            inject_metrics_aggregator(mutated, config.metrics_aggregator())
        return mutated


class PodMutatorHandler:
    """The `/mutate-pods` handler: a JSON Patch for our pods, "allowed" for others, 4xx/5xx on errors."""

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
        return patch_response_from_raw(request.raw_object or pod, mutated)
