"""The InferenceService reconcile: read, compute, converge, and tell the user why it is not Ready.

One pass, level-based, in KServe v0.11's order (§3.2 of the behaviour reference):

1. read the InferenceService from the cache (gone: nothing to do);
2. finalizer `inferenceservice.finalizers`: add it, or on deletion delete the child TrainedModels and remove
   it (children with owner references are garbage-collected by kube-controller-manager);
3. read `inferenceservice-config` from the cache; pick the deployment mode (annotation, else `deploy`);
4. per component (predictor, transformer, explainer): converge its Knative Service, or delete it when the
   component left the spec; fold the Knative status into the InferenceService status;
5. cross-component RoutesReady and LatestDeploymentReady; model status from the revision's pods;
6. ingress: the Istio VirtualService and the ExternalName Service, status.url/address, IngressReady;
   the model-config ConfigMap of a multi-model predictor (for TrainedModels);
7. write status only when it changed semantically, re-reading the object on each conflict; emit
   InferenceServiceReady / InferenceServiceNotReady on transitions.

Where KServe retries a user mistake forever with an `InternalError` event (unknown runtime, broken config),
this reconciler marks the condition False with a precise reason and message, records one Warning event and
stops; the watches on the ConfigMap and on ServingRuntimes bring the object back when the cause is fixed.
Only API failures are retried with backoff.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Sequence
from typing import Any

from apis import constants as c
from apis.base import InvalidObjectError
from apis.config import ConfigError, InferenceServicesConfig
from apis.inferenceservice import FailureInfo, InferenceService, InferenceServiceStatus
from apis.knative import REVISION_LABEL, KnativeServiceStatus
from apis.resources import INFERENCE_SERVICES, TRAINED_MODELS
from manager.cache import Cache
from manager.client import CONFIGMAPS, Client, Object
from manager.errors import ApiError, Conflict, NotFound
from manager.events import EventRecorder
from manager.informer import LABEL_INDEX, Informer
from manager.reconcile import Request, Result
from reconcilers.ingress import IngressConfigError, IngressReconciler
from reconcilers.knative_service import ComponentSpecError, KnativeServiceReconciler
from reconcilers.modelconfig import ensure_model_config

log = logging.getLogger(__name__)

STATUS_UPDATE_ATTEMPTS = 5

# Reasons of our own where KServe has none (KServe retries these forever without saying why).
REASON_INVALID_CONFIG = "InvalidConfiguration"
REASON_CONFIG_MISSING = "ConfigMapMissing"
REASON_UNSUPPORTED_MODE = "UnsupportedDeploymentMode"
REASON_INVALID_OBJECT = "InvalidSpec"


class SpecProblem(Exception):
    """A problem only the user can fix: shown as a False condition and a Warning event, not retried."""

    def __init__(self, condition: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.condition = condition
        self.reason = reason
        self.message = message


class InferenceServiceReconciler:
    """Converges one InferenceService and its Knative Services, VirtualService and ExternalName Service."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        recorder: EventRecorder,
        *,
        config_namespace: str,
        knative: KnativeServiceReconciler,
        ingress: IngressReconciler,
        pods: Informer | None = None,
    ) -> None:
        self.client = client
        self.cache = cache
        self.recorder = recorder
        self.config_namespace = config_namespace
        self.knative = knative
        self.ingress = ingress
        self.pods = pods

    async def reconcile(self, request: Request) -> Result:
        obj = self.cache.get(INFERENCE_SERVICES, request.name, request.namespace)
        if obj is None:
            return Result()
        try:
            isvc = InferenceService.from_object(obj)
        except InvalidObjectError as exc:
            # Not even the status can be written through the model; say so where users look.
            self.recorder.event(obj, "Warning", REASON_INVALID_OBJECT, str(exc))
            log.warning("cannot parse InferenceService: %s", exc)
            return Result()
        if isvc.is_deleting:
            await self._finalize(isvc)
            return Result()
        if c.INFERENCE_SERVICE_FINALIZER not in isvc.finalizers:
            await self._add_finalizer(isvc)

        before = _comparable(isvc.status)
        was_ready = isvc.status.is_ready()
        status = isvc.status
        status.initialize_conditions()
        try:
            config = self._config()
            mode = isvc.deployment_mode(config.deploy().default_deployment_mode)
            if mode != c.SERVERLESS:
                raise SpecProblem(
                    c.PREDICTOR_READY,
                    REASON_UNSUPPORTED_MODE,
                    f'deployment mode "{mode}" is not supported by this controller; only "{c.SERVERLESS}" is '
                    f"(set by annotation {c.DEPLOYMENT_MODE_ANNOTATION} or config key deploy)",
                )
            await self._reconcile_components(isvc, config)
            await self._reconcile_ingress(isvc, config)
            await ensure_model_config(self.client, self.cache, isvc)
            explain_not_ready(status, list(isvc.spec.components()))
        except SpecProblem as problem:
            status.conditions_manager().mark_false(problem.condition, problem.reason, problem.message)
            self.recorder.event(obj, "Warning", problem.reason, problem.message)
        except ApiError as exc:
            self.recorder.event(obj, "Warning", c.EVENT_INTERNAL_ERROR, str(exc))
            await self._write_status(isvc, before, was_ready)
            raise
        status.observed_generation = isvc.generation
        await self._write_status(isvc, before, was_ready)
        return Result()

    # -- configuration ------------------------------------------------------------------------------

    def _config(self) -> InferenceServicesConfig:
        configmap = self.cache.get(CONFIGMAPS, c.INFERENCE_SERVICE_CONFIGMAP, self.config_namespace)
        if configmap is None:
            raise SpecProblem(
                c.PREDICTOR_READY,
                REASON_CONFIG_MISSING,
                f"ConfigMap {self.config_namespace}/{c.INFERENCE_SERVICE_CONFIGMAP} not found",
            )
        return InferenceServicesConfig.from_configmap(configmap.get("data") or {})

    # -- components ---------------------------------------------------------------------------------

    async def _reconcile_components(self, isvc: InferenceService, config: InferenceServicesConfig) -> None:
        status = isvc.status
        wanted = isvc.spec.components()
        try:
            explainers = config.explainers()
        except ConfigError as exc:
            raise SpecProblem(c.PREDICTOR_READY, REASON_INVALID_CONFIG, str(exc)) from exc
        for component in c.COMPONENTS:
            if component not in wanted:
                await self.knative.delete(isvc, component)
                if component in status.components:
                    status.remove_component(component)
                continue
            try:
                ksvc_status = await self.knative.reconcile(isvc, component, explainers_config=explainers)
            except ComponentSpecError as exc:
                if exc.model_failure_message is not None:
                    # KServe's modelStatus for a runtime that cannot serve the model.
                    failure = FailureInfo(reason=exc.reason, message=exc.model_failure_message)
                    status.update_model_transition_status(c.TRANSITION_INVALID_SPEC, failure)
                raise SpecProblem(c.READY_CONDITIONS[component], exc.reason, exc.message) from exc
            parsed = KnativeServiceStatus.from_object(ksvc_status) if ksvc_status else None
            status.propagate_status(component, parsed)
        present = [comp for comp in c.COMPONENTS if comp in wanted]
        status.propagate_cross_component_status(present, c.ROUTES_READY)
        status.propagate_cross_component_status(present, c.LATEST_DEPLOYMENT_READY)
        predictor = status.components.get(c.PREDICTOR)
        if predictor is not None and self.pods is not None:
            status.propagate_model_status(predictor, self._revision_pods(predictor.latest_created_revision))

    def _revision_pods(self, revision: str | None) -> Sequence[Object]:
        if not revision or self.pods is None:
            return []
        return self.pods.store.by_index(LABEL_INDEX, f"{REVISION_LABEL}={revision}")

    # -- ingress ------------------------------------------------------------------------------------

    async def _reconcile_ingress(self, isvc: InferenceService, config: InferenceServicesConfig) -> None:
        try:
            ingress = config.ingress()
            await self.ingress.reconcile(isvc, ingress)
        except (ConfigError, IngressConfigError) as exc:
            raise SpecProblem(c.INGRESS_READY, REASON_INVALID_CONFIG, str(exc)) from exc

    # -- finalizer ----------------------------------------------------------------------------------

    async def _patch_finalizers(self, isvc: InferenceService, finalizers: list[str]) -> Object:
        """Set the finalizers, guarded by the resourceVersion this pass read."""
        patch = {
            "metadata": {"finalizers": finalizers, "resourceVersion": isvc.metadata.get("resourceVersion")}
        }
        return await self.client.patch(INFERENCE_SERVICES, isvc.name, patch, isvc.namespace)

    async def _add_finalizer(self, isvc: InferenceService) -> None:
        finalizers = [*isvc.finalizers, c.INFERENCE_SERVICE_FINALIZER]
        written = await self._patch_finalizers(isvc, finalizers)
        # The status write later in this pass must carry the new resourceVersion, or it always conflicts.
        isvc.metadata["resourceVersion"] = written["metadata"]["resourceVersion"]
        isvc.metadata["finalizers"] = finalizers

    async def _finalize(self, isvc: InferenceService) -> None:
        if c.INFERENCE_SERVICE_FINALIZER not in isvc.finalizers:
            return
        await self._delete_trained_models(isvc)
        finalizers = [f for f in isvc.finalizers if f != c.INFERENCE_SERVICE_FINALIZER]
        try:
            await self._patch_finalizers(isvc, finalizers)
        except NotFound:
            return

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

    # -- status -------------------------------------------------------------------------------------

    async def _write_status(self, isvc: InferenceService, before: Any, was_ready: bool) -> None:
        """Write status when it changed; on a conflict re-read the object and try again."""
        desired = isvc.status
        if _comparable(desired) == before:
            return
        status_obj = desired.to_object()
        live: Object | None = None
        for attempt in range(STATUS_UPDATE_ATTEMPTS):
            if attempt:
                try:
                    live = await self.client.get(INFERENCE_SERVICES, isvc.name, isvc.namespace)
                except NotFound:
                    return
                live_status = InferenceServiceStatus.from_object(live.get("status") or {})
                if _comparable(live_status) == _comparable(desired):
                    return
                was_ready = live_status.is_ready()
                target = live
            else:
                target = isvc.to_object()
            target = copy.deepcopy(target)
            target["status"] = status_obj
            try:
                await self.client.replace_status(INFERENCE_SERVICES, target)
            except Conflict:
                await asyncio.sleep(0.01 * (attempt + 1))
                continue
            except NotFound:
                return
            except ApiError as exc:
                message = f'Failed to update status for InferenceService "{isvc.name}": {exc}'
                self.recorder.event(isvc.to_object(), "Warning", c.EVENT_UPDATE_FAILED, message)
                raise
            self._transition_event(isvc, was_ready, desired.is_ready())
            return
        raise Conflict(409, "Conflict", f"status of {isvc.namespace}/{isvc.name} kept conflicting")

    def _transition_event(self, isvc: InferenceService, was_ready: bool, is_ready: bool) -> None:
        if was_ready and not is_ready:
            message = f"InferenceService [{isvc.name}] is no longer Ready"
            self.recorder.event(isvc.to_object(), "Warning", c.EVENT_INFERENCE_SERVICE_NOT_READY, message)
        elif is_ready and not was_ready:
            message = f"InferenceService [{isvc.name}] is Ready"
            self.recorder.event(isvc.to_object(), "Normal", c.EVENT_INFERENCE_SERVICE_READY, message)


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


def _comparable(status: InferenceServiceStatus) -> Any:
    """The status with what semantic equality ignores (lastTransitionTime, condition order) removed."""
    obj = status.to_object()
    conditions = obj.get("conditions") or []
    obj["conditions"] = sorted(
        ({k: v for k, v in cond.items() if k != "lastTransitionTime"} for cond in conditions),
        key=lambda cond: str(cond.get("type")),
    )
    return obj
