"""A test double for Knative Serving: turns Knative Services into Deployments, Services and status as
Knative Serving v1.10.2 does, on a cluster where Knative itself cannot run.

Knative Serving cannot run on the offline local control plane, yet the InferenceService controller's whole
behaviour hangs off what Knative does with a Knative Service: revision names, pods, URLs, traffic and the
reasons a revision fails. KServe's own Go tests set ksvc status by hand; this double reacts to every
Knative Service the way Knative's Service, Configuration, Route, Revision, PodAutoscaler and
ServerlessService reconcilers would, and drives real pods when the cluster has a node.

Modelled (the module named in brackets holds the facts and their Knative sources):

* Revisions [history, resources]: one per change of `spec.template`, named `<service>-<generation:05d>`
  (hashed when too long) or by the template's `metadata.name`; at most `MAX_HISTORY` non-latest-ready
  ones are kept (config-gc's minimum), older ones are collected with their objects. Their state lives in
  the ConfigMap `<service>-knative-double` owned by the Service, so a restarted double continues.
* Per revision [resources, config]: the Deployment `<rev>-deployment` as `MakeDeployment` builds it (user
  containers as the template has them plus Knative's env, ports, probes and preStop hook; the
  `queue-proxy` container from `makeQueueContainer`, its image from `queue-sidecar-image` in ConfigMap
  `knative-serving/config-deployment`, else `--queue-proxy-image`; `progressDeadlineSeconds` from
  `progress-deadline` or the revision's `serving.knative.dev/progress-deadline`), re-rolled when that
  ConfigMap changes, as Knative does; the Services `<rev>-private` (selector) and `<rev>` (no selector,
  Endpoints mirrored from the private ones' serving ports), so `http://<rev>.<ns>` and
  `http://<rev>-private.<ns>` reach the model through queue-proxy.
* Readiness and failures [revision]: a revision is Ready when its Deployment's pods are Ready (PodAutoscaler
  `ScaleTargetInitialized`); pod failures become Knative's reasons (`ExitCode<n>`, `ImagePullBackOff`
  after the progress deadline, `PodInitializing` for a failing init container, `Unschedulable`,
  `FailedCreate`, `ProgressDeadlineExceeded`), then `RevisionFailed` on ConfigurationsReady and
  `RevisionMissing` on RoutesReady [lifecycle]. Replicas follow min-/max-/initial-scale; revisions no route
  needs are scaled to zero, failed ones once their activation times out.
* With `revision_readiness=READINESS_DEPLOYMENT` (no kubelet: pods never run) a revision is Ready once its
  Deployment's pods exist, i.e. the API server admitted them; a rejected pod still fails it (FailedCreate).
* Status [lifecycle]: observedGeneration, latestCreated/latestReadyRevisionName, url
  (`http://<name>.<ns>.<domain>`, or `.svc.cluster.local` with the cluster-local visibility label),
  address, traffic with tag URLs, conditions with Knative's reasons and messages; written only when it
  changes, and nothing else is written in a steady state. Like Knative's generated reconcilers, the double
  runs in the kind-reconciler skeleton (`manager.kindreconciler`), which reads the Service from the cache and
  writes its status, re-reading it on a conflict.
* Test switches: the annotation `FAIL_REVISION_ANNOTATION` (`"<reason>: <message>"`) on the Service or its
  template, or `fail_new_revisions()`, fails the next revision without deploying it; a Deployment the API
  server refuses is reported as Knative reports a refused Revision (`Revision creation failed ...`).

Not modelled: Revision/Configuration/Route/PodAutoscaler/ServerlessService objects (their CRDs are not
installed; everything is owned by the Knative Service), traffic-driven autoscaling and scale from zero
(there is no activator), image digest resolution (as if every registry skipped tag resolution), Knative's
admission webhooks beyond the revision defaults that shape pods, Istio ingress readiness, domain templates
other than the default, TLS, and config maps other than config-deployment.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import re

from e2e.knative_double.compare import endpoint_set, prune, with_quantities
from e2e.knative_double.config import (
    ACTIVATION_TIMEOUT_BUFFER,
    CONFIG_DEPLOYMENT,
    SYSTEM_NAMESPACE,
    DeploymentConfig,
    ScaleBounds,
    progress_deadline,
)
from e2e.knative_double.history import Failure, History, Revision, revision_name, template_hash
from e2e.knative_double.lifecycle import desired_status, routed_revisions
from e2e.knative_double.resources import (
    DEPLOYMENTS,
    ENDPOINTS,
    KSVC,
    REVISION_LABEL,
    SERVICE_LABEL,
    RevisionMeta,
    deployment_name,
    make_deployment,
    make_private_service,
    make_public_endpoints,
    make_public_service,
    owned_by,
    owner_reference,
    private_service_name,
    serving_container,
)
from e2e.knative_double.revision import (
    READINESS_DEPLOYMENT,
    READINESS_MODES,
    Observation,
    Readiness,
    reconcile,
)
from manager.cache import Cache
from manager.client import CONFIGMAPS, PODS, SERVICES, Client, Object, PatchType, Resource
from manager.errors import AlreadyExists, ApiError, Conflict, Invalid, NotFound
from manager.kindreconciler import Kind, KindReconciler
from manager.manager import Manager
from manager.reconcile import Request, Result
from reconcilers.apply import is_subset

log = logging.getLogger(__name__)

CONTROLLER_NAME = "knative-serving-double"
DEFAULT_DOMAIN = "example.com"
DEFAULT_QUEUE_PROXY_IMAGE = "gcr.io/knative-releases/knative.dev/serving/cmd/queue"
FAIL_REVISION_ANNOTATION = "knative-double.kserve-py.dev/fail-revision"
"""On a Service or its template: `"<reason>: <message>"` makes the next revision created fail."""
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
STATE_SUFFIX = "-knative-double"
STATE_KEY = "revisions.json"

_DNS_SUFFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _keys_by_service_label(obj: Object) -> list[Request]:
    meta = obj.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_LABEL)
    return [Request(str(meta.get("namespace", "")), str(service))] if service else []


class _NamespaceTerminating(Exception):
    """The Service's namespace is being deleted: leave it to the namespace controller."""


class KnativeServingDouble(Kind[Object]):
    """Reconciles Knative Services as Knative Serving would (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        *,
        revision_readiness: Readiness,
        domain: str = DEFAULT_DOMAIN,
        queue_proxy_image: str = DEFAULT_QUEUE_PROXY_IMAGE,
    ) -> None:
        self.validate(domain, queue_proxy_image)
        if revision_readiness not in READINESS_MODES:
            raise ValueError(
                f"revision readiness must be one of {READINESS_MODES}, not {revision_readiness!r}"
            )
        self.client = client
        self.cache = cache
        self.domain = domain
        self.queue_proxy_image = queue_proxy_image
        self.revision_readiness: Readiness = revision_readiness
        self.status_writes = 0
        """Status writes that succeeded."""
        self.reconciles = 0
        """Reconciles so far, of Services that exist, are being deleted or are gone."""
        self._failure: Failure | None = None
        self._histories: dict[tuple[str, str], History] = {}
        self._config = DeploymentConfig(queue_proxy_image)
        self._config_version: str | None = None

    @staticmethod
    def validate(domain: str, queue_proxy_image: str) -> None:
        """Raise `ValueError` (one line) for a domain or image the double cannot use."""
        if not _DNS_SUFFIX.match(domain) or len(domain) > 253:
            raise ValueError(f"invalid domain {domain!r}: expected a DNS name such as example.com")
        if not queue_proxy_image.strip():
            raise ValueError("the queue-proxy image must not be empty")

    def fail_new_revisions(self, reason: str, message: str) -> None:
        """Every revision created from now on fails with `reason` and `message` (until `stop_failing`)."""
        self._failure = Failure(reason, message)

    def stop_failing(self) -> None:
        """Undo `fail_new_revisions`; revisions that already failed stay failed."""
        self._failure = None

    def revisions(self, namespace: str, name: str) -> list[Revision]:
        """The revisions the double remembers for a Service, oldest first (empty if none yet)."""
        history = self._histories.get((namespace, name))
        return list(history.revisions) if history else []

    def deployment_config(self) -> DeploymentConfig:
        """`config-deployment` as Knative reads it: a ConfigMap that does not parse keeps the last good."""
        stored = self.cache.get(CONFIGMAPS, CONFIG_DEPLOYMENT, SYSTEM_NAMESPACE)
        version = None if stored is None else str(stored["metadata"].get("resourceVersion") or "")
        if version == self._config_version:
            return self._config
        self._config_version = version
        try:
            self._config = DeploymentConfig.parse((stored or {}).get("data") or {}, self.queue_proxy_image)
        except ValueError as exc:
            log.error("ignoring %s/%s: %s", SYSTEM_NAMESPACE, CONFIG_DEPLOYMENT, exc)
        return self._config

    def services_to_requeue(self, obj: Object) -> list[Request]:
        """Every Knative Service, when `config-deployment` changes."""
        if (obj.get("metadata") or {}).get("name") != CONFIG_DEPLOYMENT:
            return []
        return [Request(namespace, name) for namespace, name in self.cache.keys(KSVC)]

    def parse(self, obj: Object) -> Object:
        return obj

    def object_of(self, obj: Object) -> Object:
        return {**obj, "apiVersion": KSVC.api_version, "kind": KSVC.kind}

    def status_of(self, obj: Object) -> Object:
        return copy.deepcopy(obj.get("status") or {})

    async def reconcile_kind(self, obj: Object) -> Result | None:
        meta = obj["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        self.reconciles += 1
        history = self._history(obj)
        try:
            recheck = await self._converge(obj, history)
        except Conflict:
            self._histories.pop(key, None)  # re-read the persisted history on the retry
            raise
        except _NamespaceTerminating as exc:
            log.debug("namespace of %s/%s is terminating: %s", key[0], key[1], exc)
            self._histories.pop(key, None)
            return None
        return Result(requeue_after=recheck)

    async def finalize_kind(self, obj: Object) -> None:
        self.reconciles += 1
        self._histories.pop((str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"])), None)

    async def observe_deletion(self, request: Request) -> None:
        self.reconciles += 1
        self._histories.pop((request.namespace, request.name), None)

    def status_updated(self, obj: Object, previous: Object, current: Object) -> None:
        self.status_writes += 1

    def _history(self, ksvc: Object) -> History:
        meta = ksvc["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        uid = str(meta.get("uid", ""))
        known = self._histories.get(key)
        if known is not None and known.service_uid == uid:
            return known
        history = History(uid)
        stored = self.cache.get(CONFIGMAPS, key[1] + STATE_SUFFIX, key[0])
        if stored is not None:
            history.configmap_exists = True
            history.configmap_version = str(stored["metadata"].get("resourceVersion") or "")
            if owned_by(stored, uid):
                text = str((stored.get("data") or {}).get(STATE_KEY, "{}"))
                try:
                    history.revisions = History.decode(text)
                    history.saved = history.encode()
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring unreadable revision history of %s/%s: %s", key[0], key[1], exc)
        self._histories[key] = history
        return history

    async def _converge(self, ksvc: Object, history: History) -> float | None:
        now = now_rfc3339()
        template: Object = (ksvc.get("spec") or {}).get("template") or {}
        digest = template_hash(template)
        latest = history.latest
        dropped: list[Revision] = []
        if latest is None or latest.template_hash != digest:
            dropped = self._new_revision(ksvc, history, template, digest, now)
        config = self.deployment_config()
        routed = routed_revisions(ksvc, history, self.domain)
        rechecks: list[float] = []
        for revision in history.revisions:
            if revision.deployed:
                recheck = await self._reconcile_revision(ksvc, revision, revision.name in routed, config, now)
                if recheck is not None:
                    rechecks.append(recheck)
        for revision in dropped:
            await self._collect(ksvc, revision)
        await self._save(ksvc, history)
        ksvc["status"] = desired_status(ksvc, history, self.domain, now)
        return min(rechecks) if rechecks else None

    def _new_revision(
        self, ksvc: Object, history: History, template: Object, digest: str, now: str
    ) -> list[Revision]:
        name = str(ksvc["metadata"]["name"])
        generation = history.next_generation
        revision = Revision(revision_name(name, template, generation), generation, digest, template)
        failure = self._failure_for(ksvc, template)
        if failure is not None:
            revision.fail(failure, now)
            log.info(
                "revision %s failed by the double's switch: %s: %s",
                revision.name,
                failure.reason,
                failure.message,
            )
        else:
            log.info("revision %s created", revision.name)
        latest_ready = (ksvc.get("status") or {}).get("latestReadyRevisionName")
        return history.add(revision, keep=latest_ready)

    def _failure_for(self, ksvc: Object, template: Object) -> Failure | None:
        for where in (template.get("metadata") or {}, ksvc["metadata"]):
            switch = (where.get("annotations") or {}).get(FAIL_REVISION_ANNOTATION)
            if switch is not None:
                return Failure.parse(str(switch))
        return self._failure

    async def _reconcile_revision(
        self, ksvc: Object, revision: Revision, routed: bool, config: DeploymentConfig, now: str
    ) -> float | None:
        meta = RevisionMeta(ksvc, revision.name, revision.generation, revision.template)
        deadline = progress_deadline(meta.annotations, config)
        live = self.cache.get(DEPLOYMENTS, deployment_name(revision.name), meta.namespace)
        owned = live is None or owned_by(live, meta.service_uid)
        observation = Observation(
            deployment=live,
            pods=self.cache.list(PODS, meta.namespace, labels={REVISION_LABEL: revision.name}),
            serving_container=str(serving_container(meta.spec).get("name", "")),
            routed=routed,
            bounds=ScaleBounds.of(meta.annotations),
            activation_timeout=deadline + ACTIVATION_TIMEOUT_BUFFER,
            now=now,
            readiness=self.revision_readiness,
            owned=owned,
        )
        outcome = reconcile(revision.conditions, revision.autoscaler, observation)
        if live is None:
            assert outcome.replicas is not None
            body = make_deployment(meta, config, replicas=outcome.replicas, progress_deadline=deadline)
            try:
                error = await self._create(DEPLOYMENTS, body)
            except AlreadyExists:
                return None  # our cache has not seen it yet; its watch event re-queues this Service
            if error is not None:
                log.info("revision %s: the API server refused its Deployment: %s", revision.name, error)
                revision.creation_error = error
                revision.deployed = False
                return None
        elif owned:
            replicas = (
                outcome.replicas if outcome.replicas is not None else int(live["spec"].get("replicas", 0))
            )
            body = make_deployment(meta, config, replicas=replicas, progress_deadline=deadline)
            await self._update_deployment(live, body)
        revision.conditions = outcome.conditions
        revision.autoscaler = outcome.autoscaler
        await self._ensure_services(meta)
        return outcome.recheck_after

    async def _create(self, resource: Resource, body: Object) -> str | None:
        """Create an object; the API server's message when it refuses it as invalid, else None
        (AlreadyExists is raised: the caller's cache is behind)."""
        try:
            await self.client.create(resource, body)
        except Invalid as exc:
            return exc.message
        except ApiError as exc:
            if exc.status == 400:
                return exc.message
            if exc.status == 404 or (exc.status == 403 and "being terminated" in exc.message):
                raise _NamespaceTerminating(exc.message) from exc
            raise
        return None

    async def _update_deployment(self, live: Object, desired: Object) -> None:
        """`checkAndUpdateDeployment` without no-op writes: replace the spec when what we set differs
        (the API server fills in defaults), patch only the replicas when only they differ."""
        spec, have = desired["spec"], live.get("spec") or {}
        shape = prune({k: v for k, v in spec.items() if k != "replicas"})
        same_shape = is_subset(with_quantities(shape), with_quantities(have)) and is_subset(
            desired["metadata"]["labels"], live["metadata"].get("labels") or {}
        )
        meta = live["metadata"]
        if not same_shape:
            body = dict(live, spec={**spec, "selector": have.get("selector", spec["selector"])})
            body["metadata"] = dict(
                meta, labels={**(meta.get("labels") or {}), **desired["metadata"]["labels"]}
            )
            await self.client.replace(DEPLOYMENTS, body)
        elif have.get("replicas") != spec["replicas"]:
            await self.client.patch(
                DEPLOYMENTS,
                str(meta["name"]),
                {"spec": {"replicas": spec["replicas"]}},
                str(meta["namespace"]),
                patch_type=PatchType.MERGE,
            )

    async def _ensure_services(self, meta: RevisionMeta) -> None:
        """The ServerlessService's part: the private and public Services and the public Endpoints."""
        for body in (make_private_service(meta), make_public_service(meta)):
            live = self.cache.get(SERVICES, str(body["metadata"]["name"]), meta.namespace)
            if live is None:
                with contextlib.suppress(AlreadyExists):
                    error = await self._create(SERVICES, body)
                    if error is not None:
                        log.warning("revision %s: the API server refused a Service: %s", meta.name, error)
            elif owned_by(live, meta.service_uid) and not (
                is_subset(body["spec"], live.get("spec") or {})
                and is_subset(body["metadata"]["labels"], live["metadata"].get("labels") or {})
            ):
                updated = dict(live, spec={**(live.get("spec") or {}), **body["spec"]})
                updated["metadata"] = dict(live["metadata"], labels=body["metadata"]["labels"])
                await self.client.replace(SERVICES, updated)
        private = self.cache.get(ENDPOINTS, private_service_name(meta.name), meta.namespace)
        if private is None:
            return  # the endpoints controller has not written them yet; their watch event re-queues us
        desired = make_public_endpoints(meta, private)
        live = self.cache.get(ENDPOINTS, meta.name, meta.namespace)
        if live is None:
            with contextlib.suppress(AlreadyExists):
                await self._create(ENDPOINTS, desired)
        elif owned_by(live, meta.service_uid) and endpoint_set(live.get("subsets") or []) != endpoint_set(
            desired.get("subsets") or []
        ):
            updated = dict(live, subsets=desired.get("subsets") or [])
            await self.client.replace(ENDPOINTS, updated)

    async def _collect(self, ksvc: Object, revision: Revision) -> None:
        """Delete what a garbage-collected revision owned."""
        namespace, uid = str(ksvc["metadata"]["namespace"]), str(ksvc["metadata"].get("uid", ""))
        for resource, name in (
            (DEPLOYMENTS, deployment_name(revision.name)),
            (SERVICES, private_service_name(revision.name)),
            (SERVICES, revision.name),
            (ENDPOINTS, revision.name),
        ):
            live = self.cache.get(resource, name, namespace)
            if live is not None and owned_by(live, uid):
                with contextlib.suppress(NotFound):
                    await self.client.delete(
                        resource, name, namespace, uid=str(live["metadata"].get("uid") or "")
                    )

    async def _save(self, ksvc: Object, history: History) -> None:
        encoded = history.encode()
        if encoded == history.saved:
            return
        meta = ksvc["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        body: Object = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name + STATE_SUFFIX,
                "namespace": namespace,
                "labels": {SERVICE_LABEL: name, MANAGED_BY_LABEL: CONTROLLER_NAME},
                "ownerReferences": [owner_reference(ksvc)],
            },
            "data": {STATE_KEY: encoded},
        }
        if history.configmap_exists:
            body["metadata"]["resourceVersion"] = history.configmap_version
            saved = await self.client.replace(CONFIGMAPS, body)
        else:
            try:
                saved = await self.client.create(CONFIGMAPS, body, namespace)
            except AlreadyExists as exc:
                raise Conflict(409, "Conflict", f"revision history of {namespace}/{name} appeared") from exc
            except ApiError as exc:
                if exc.status == 404 or (exc.status == 403 and "being terminated" in exc.message):
                    raise _NamespaceTerminating(exc.message) from exc
                raise
        history.configmap_exists = True
        history.configmap_version = str(saved["metadata"].get("resourceVersion") or "")
        history.saved = encoded


def install(
    manager: Manager,
    *,
    revision_readiness: Readiness = READINESS_DEPLOYMENT,
    domain: str = DEFAULT_DOMAIN,
    queue_proxy_image: str = DEFAULT_QUEUE_PROXY_IMAGE,
    max_concurrent_reconciles: int = 4,
) -> KnativeServingDouble:
    """Register the double's controller (`knative-serving-double`).

    It reconciles Knative Services; owns their Deployments, Services and history ConfigMaps; watches the
    revisions' pods and Endpoints (by their `serving.knative.dev/service` label) and
    `knative-serving/config-deployment`. In-process callers run on the API-only control plane, so
    `revision_readiness` defaults to the node-less `READINESS_DEPLOYMENT`; the CLI defaults to pods.
    """
    double = KnativeServingDouble(
        manager.client,
        manager.cache,
        revision_readiness=revision_readiness,
        domain=domain,
        queue_proxy_image=queue_proxy_image,
    )
    (
        manager.builder()
        .named(CONTROLLER_NAME)
        .for_(KSVC)
        .owns(DEPLOYMENTS)
        .owns(SERVICES)
        .owns(CONFIGMAPS)
        .watches(PODS, _keys_by_service_label)
        .watches(ENDPOINTS, _keys_by_service_label)
        .watches(CONFIGMAPS, double.services_to_requeue, namespace=SYSTEM_NAMESPACE)
        .with_max_concurrent_reconciles(max_concurrent_reconciles)
        .complete(KindReconciler(double, resource=KSVC, client=manager.client, cache=manager.cache))
    )
    return double
