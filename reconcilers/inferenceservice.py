"""The InferenceService reconcile: read, compute, converge, and tell the user why it is not Ready.

`InferenceServiceKind` is the domain half of a `manager.kindreconciler.KindReconciler`, which reads the
object from the cache, keeps the finalizer `inferenceservice.finalizers`, writes the status when it changed
and reports problems. One pass, level-based, in KServe v0.11's order (§3.2 of the behaviour reference):

1. `inferenceservice-config` from the cache; the deployment mode (annotation, else `deploy`), which picks the
   backend (`reconcilers.backend`; Serverless is `reconcilers.serverless`, RawDeployment `reconcilers.raw`;
   ModelMesh is refused with UnsupportedDeploymentMode);
2. the model-config ConfigMap of a multi-model predictor (for TrainedModels), before runtime selection, so
   it exists even when no runtime serves the predictor;
3. per component (predictor, transformer, explainer): build it (`reconcilers.components`) and hand it to the
   backend, which converges its children and folds their status in; or have the backend delete them when
   the component left the spec;
4. the backend's cross-component status and model status, then its ingress (status.url/address,
   IngressReady);
5. Ready explains itself (`explain_not_ready`); the skeleton writes the status, and InferenceServiceReady /
   InferenceServiceNotReady mark the transitions. On deletion, the child TrainedModels are deleted before
   the finalizer goes (children with owner references are garbage-collected by kube-controller-manager).

Where KServe retries a user mistake forever with an `InternalError` event (unknown runtime, broken config, a
child's name taken by another object), this reconciler raises a `UserProblem`: the condition is False with a
precise reason and message, one Warning event is recorded, and nothing is retried; the watches on the
ConfigMap, the ServingRuntimes and the children bring the object back when the cause is fixed. Only API
failures are retried with backoff. Each config key is read only by the InferenceServices that need it: a
broken `deploy` key concerns those without a deploymentMode annotation, a broken `explainers` key those with
a built-in explainer, a broken `ingress` key every one (at its ingress step).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from apis import constants as c
from apis.base import InvalidObjectError
from apis.config import ConfigError, InferenceServicesConfig
from apis.inferenceservice import FailureInfo, InferenceService, InferenceServiceStatus
from apis.resources import INFERENCE_SERVICES, TRAINED_MODELS
from manager.cache import Cache
from manager.client import CONFIGMAPS, Client, Object
from manager.errors import ApiError, NotFound
from manager.events import NORMAL, WARNING
from manager.informer import Informer
from manager.kindreconciler import Kind, KindReconciler, Recorder, UserProblem
from manager.reconcile import Result
from reconcilers.apply import NotControlled
from reconcilers.backend import DeploymentBackend
from reconcilers.components import REASON_INVALID_CONFIG, ComponentBuilder, ComponentSpecError
from reconcilers.ingress import IngressConfigError
from reconcilers.modelconfig import ensure_model_config
from reconcilers.raw import RawBackend
from reconcilers.serverless import ServerlessBackend

log = logging.getLogger(__name__)

# Reasons of our own where KServe has none (KServe retries these forever without saying why).
REASON_CONFIG_MISSING = "ConfigMapMissing"
REASON_UNSUPPORTED_MODE = "UnsupportedDeploymentMode"
REASON_INVALID_OBJECT = "InvalidSpec"


class InferenceServiceKind(Kind[InferenceService]):
    """Converges one InferenceService through the backend of its deployment mode."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        recorder: Recorder,
        *,
        config_namespace: str,
        backends: Sequence[DeploymentBackend],
    ) -> None:
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.config_namespace = config_namespace
        self.backends: Mapping[str, DeploymentBackend] = {b.mode: b for b in backends}
        self.components = ComponentBuilder(cache)

    def parse(self, obj: Object) -> InferenceService:
        try:
            return InferenceService.from_object(obj)
        except InvalidObjectError as exc:
            # Not even the status can be written through the model; say so where users look.
            raise UserProblem(REASON_INVALID_OBJECT, str(exc)) from None

    def object_of(self, obj: InferenceService) -> Object:
        return obj.to_object()

    def status_of(self, obj: InferenceService) -> Object:
        return obj.status.to_object()

    async def reconcile_kind(self, obj: InferenceService) -> Result | None:
        isvc = obj
        status = isvc.status
        status.initialize_conditions()
        config = self._config()
        backend = self._backend(isvc, config)
        await ensure_model_config(self.client, self.cache, isvc)
        await self._reconcile_components(isvc, config, backend)
        await self._reconcile_ingress(isvc, config, backend)
        explain_not_ready(status, list(isvc.spec.components()))
        status.observed_generation = isvc.generation
        return None

    def mark_problem(self, obj: InferenceService, condition: str, problem: UserProblem) -> None:
        status = obj.status
        status.conditions_manager().mark_false(condition, problem.reason, problem.message)
        hold_ingress_for(status, condition)
        status.observed_generation = obj.generation

    def status_updated(self, obj: InferenceService, previous: Object, current: Object) -> None:
        was_ready = InferenceServiceStatus.from_object(previous).is_ready()
        is_ready = obj.status.is_ready()
        involved = obj.to_object()
        if was_ready and not is_ready:
            message = f"InferenceService [{obj.name}] is no longer Ready"
            self.recorder.event(involved, WARNING, c.EVENT_INFERENCE_SERVICE_NOT_READY, message)
        elif is_ready and not was_ready:
            message = f"InferenceService [{obj.name}] is Ready"
            self.recorder.event(involved, NORMAL, c.EVENT_INFERENCE_SERVICE_READY, message)

    def update_failed_message(
        self, obj: InferenceService, previous: Object, desired: Object, error: ApiError
    ) -> str:
        return f'Failed to update status for InferenceService "{obj.name}": {error}'

    async def finalize_kind(self, obj: InferenceService) -> None:
        await self._delete_trained_models(obj)

    # -- configuration ------------------------------------------------------------------------------

    def _config(self) -> InferenceServicesConfig:
        configmap = self.cache.get(CONFIGMAPS, c.INFERENCE_SERVICE_CONFIGMAP, self.config_namespace)
        if configmap is None:
            raise UserProblem(
                REASON_CONFIG_MISSING,
                f"ConfigMap {self.config_namespace}/{c.INFERENCE_SERVICE_CONFIGMAP} not found",
                condition=c.PREDICTOR_READY,
            )
        return InferenceServicesConfig.from_configmap(configmap.get("data") or {})

    def _backend(self, isvc: InferenceService, config: InferenceServicesConfig) -> DeploymentBackend:
        """The backend of the annotation's mode when it names one, else of the `deploy` key's (read only
        then)."""
        mode = isvc.annotated_deployment_mode()
        if mode is None:
            try:
                mode = config.deploy().default_deployment_mode
            except ConfigError as exc:
                raise UserProblem(REASON_INVALID_CONFIG, str(exc), condition=c.PREDICTOR_READY) from exc
        backend = self.backends.get(mode)
        if backend is None:
            supported = ", ".join(f'"{m}"' for m in self.backends)
            raise UserProblem(
                REASON_UNSUPPORTED_MODE,
                f'deployment mode "{mode}" is not supported by this controller; it supports {supported} '
                f"(set by annotation {c.DEPLOYMENT_MODE_ANNOTATION} or config key deploy)",
                condition=c.PREDICTOR_READY,
            )
        return backend

    # -- components ---------------------------------------------------------------------------------

    async def _reconcile_components(
        self, isvc: InferenceService, config: InferenceServicesConfig, backend: DeploymentBackend
    ) -> None:
        status = isvc.status
        wanted = isvc.spec.components()
        existing = backend.existing_names(isvc)
        for component in c.COMPONENTS:
            if component not in wanted:
                await backend.remove_component(isvc, component)
                if component in status.components:
                    status.remove_component(component)
                continue
            condition = c.READY_CONDITIONS[component]
            try:
                built = self.components.build(isvc, component, config=config, existing_names=existing)
                await backend.apply_component(isvc, built)
            except ComponentSpecError as exc:
                if exc.model_failure_message is not None:
                    # KServe's modelStatus for a runtime that cannot serve the model.
                    failure = FailureInfo(reason=exc.reason, message=exc.model_failure_message)
                    status.update_model_transition_status(c.TRANSITION_INVALID_SPEC, failure)
                raise UserProblem(exc.reason, exc.message, condition=condition) from exc
            except NotControlled as exc:
                raise UserProblem(exc.reason, exc.message, condition=condition) from exc
        backend.propagate(isvc, [comp for comp in c.COMPONENTS if comp in wanted])

    # -- ingress ------------------------------------------------------------------------------------

    @staticmethod
    async def _reconcile_ingress(
        isvc: InferenceService, config: InferenceServicesConfig, backend: DeploymentBackend
    ) -> None:
        try:
            await backend.reconcile_ingress(isvc, config.ingress())
        except (ConfigError, IngressConfigError) as exc:
            raise UserProblem(REASON_INVALID_CONFIG, str(exc), condition=c.INGRESS_READY) from exc
        except NotControlled as exc:
            raise UserProblem(exc.reason, exc.message, condition=c.INGRESS_READY) from exc
        except ApiError as exc:
            if exc.status not in (400, 422):
                raise
            # What the API server refuses here was built from the `ingress` key (e.g. no gateway service).
            message = f'{exc.message} (built from key "ingress" of {c.INFERENCE_SERVICE_CONFIGMAP})'
            raise UserProblem(REASON_INVALID_CONFIG, message, condition=c.INGRESS_READY) from exc

    # -- deletion -----------------------------------------------------------------------------------

    async def _delete_trained_models(self, isvc: InferenceService) -> None:
        selector = f"{c.TRAINED_MODEL_ISVC_LABEL}={isvc.name}"
        page = await self.client.list_page(TRAINED_MODELS, isvc.namespace, label_selector=selector)
        for tm in page.get("items") or []:
            name = tm["metadata"]["name"]
            try:
                await self.client.delete(
                    TRAINED_MODELS, name, isvc.namespace, propagation_policy="Background"
                )
            except NotFound:
                continue
            except ApiError as exc:
                # KServe only logs these; the TrainedModel controller also deletes orphans.
                log.warning("deleting TrainedModel %s/%s failed: %s", isvc.namespace, name, exc)


def inferenceservice_reconciler(
    client: Client,
    cache: Cache,
    recorder: Recorder,
    *,
    config_namespace: str,
    pods: Informer | None = None,
) -> KindReconciler[InferenceService]:
    """The InferenceService reconciler: the skeleton around `InferenceServiceKind` with its backends."""
    kind = InferenceServiceKind(
        client,
        cache,
        recorder,
        config_namespace=config_namespace,
        backends=[ServerlessBackend(client, cache, pods=pods), RawBackend(client, cache, pods=pods)],
    )
    return KindReconciler(
        kind,
        resource=INFERENCE_SERVICES,
        client=client,
        cache=cache,
        recorder=recorder,
        finalizer=c.INFERENCE_SERVICE_FINALIZER,
        internal_error_events=True,
    )


_SECONDARY_COMPONENTS = {c.READY_CONDITIONS[comp]: comp for comp in (c.TRANSFORMER, c.EXPLAINER)}


def hold_ingress_for(status: InferenceServiceStatus, condition_type: str) -> None:
    """A transformer or explainer that cannot be built holds the ingress back, as a not-Ready one does.

    Ready depends only on the predictor and the ingress; KServe's ingress waits for every component with
    IngressReady False "<Component> ingress not created". The same gate applies here, and Ready then carries
    the component's own reason.
    """
    component = _SECONDARY_COMPONENTS.get(condition_type)
    if component is None:
        return
    status.conditions_manager().mark_false(c.INGRESS_READY, c.INGRESS_NOT_CREATED_REASONS[component], "")
    explain_not_ready(status, [component])


def explain_not_ready(status: InferenceServiceStatus, components: Sequence[str]) -> None:
    """Make Ready carry the root cause when the ingress is only waiting for a component.

    KServe's Ready follows IngressReady, whose reason is then "Predictor ingress not created": true, but it
    hides why the predictor is not ready (users' most common complaint). When that is the case, Ready takes
    the first not-ready component condition's own reason and message, which for a Knative failure are
    Knative's (e.g. RevisionFailed, `Revision "x" failed with message: ...`). IngressReady keeps KServe's
    reason, so nothing KServe reports is lost.
    """
    ready = status.get_condition(c.READY)
    if ready is None or ready.is_true or ready.reason not in c.INGRESS_NOT_CREATED_REASONS.values():
        return
    for component in components:
        cause = status.get_condition(c.READY_CONDITIONS[component])
        if cause is not None and not cause.is_true and cause.reason:
            explained = ready.model_copy(
                update={"status": cause.status, "reason": cause.reason, "message": cause.message}
            )
            status.conditions_manager().set(explained)
            return
