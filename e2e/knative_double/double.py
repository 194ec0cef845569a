"""A test double for Knative Serving: plays Knative's status and revision-pod part on Knative Services.

Knative Serving cannot run on the offline local control plane, yet the InferenceService controller's whole
behaviour hangs off what Knative writes back: revision names, URLs, traffic and conditions. KServe's own Go
tests set ksvc status by hand; this double goes one step further and reacts to every Knative Service the
way Knative's Service, Configuration and Route reconcilers would, so integration tests and `make run` see
InferenceServices go Ready (or fail) end to end.

What it does per Knative Service (and what it deliberately leaves out):

* A new revision per change of `spec.template`, named as Knative names them (`<service>-00001`, the
  configuration generation zero-padded to five digits, hashed when too long; or the template's own
  `metadata.name`). Revision history lives in memory and in a ConfigMap `<service>-knative-double` owned by
  the Service, so a restarted double continues the numbering and never writes to the user's object
  outside its status.
* A revision is ready once its Pod object exists. The local cluster has no nodes, so Pods stay Pending
  forever; readiness therefore cannot mean "containers running" here. One Pod per revision that the
  latest-ready revision or the resolved traffic needs; other revisions' Pods are deleted.
* A revision fails, instead of getting a Pod, when the annotation `FAIL_REVISION_ANNOTATION`
  (`"<reason>: <message>"`) is on the Service or its template when the revision is created, when the
  double's global switch is on, or when the API server rejects its Pod as invalid. Knative's wording
  follows: `ConfigurationsReady=False`, reason `RevisionFailed`, message
  `Revision "<rev>" failed with message: <message>.`, while traffic stays on the last ready revision.
* Status: observedGeneration, latestCreated/latestReadyRevisionName, url (`http://<name>.<ns>.<domain>`
  or `...svc.cluster.local` with the cluster-local visibility label), address, traffic resolved from
  `spec.traffic` with per-tag URLs, and conditions Ready/ConfigurationsReady/RoutesReady with Knative's
  reasons. The status is written only when it differs from what is there.
* Not modelled: scaling, revision garbage collection beyond `MAX_HISTORY`, Knative's webhook defaults and
  validation, domain templates other than Knative's default.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from manager.cache import Cache
from manager.client import CONFIGMAPS, PODS, Client, Object, Resource
from manager.errors import AlreadyExists, ApiError, Conflict, Invalid, NotFound
from manager.manager import Manager
from manager.reconcile import Request, Result

log = logging.getLogger(__name__)

KSVC = Resource("serving.knative.dev", "v1", "services", "Service")
"""Knative Serving's Service (`ksvc`)."""

CONTROLLER_NAME = "knative-serving-double"
DEFAULT_DOMAIN = "example.com"
DEFAULT_QUEUE_PROXY_IMAGE = "gcr.io/knative-releases/knative.dev/serving/cmd/queue"
CLUSTER_LOCAL_DOMAIN = "svc.cluster.local"

FAIL_REVISION_ANNOTATION = "knative-double.kserve-py.dev/fail-revision"
"""On a Service or its template: `"<reason>: <message>"` makes the next revision created fail."""
TEMPLATE_HASH_ANNOTATION = "knative-double.kserve-py.dev/template-hash"
"""On the double's Pods: which template the Pod was made from."""
VISIBILITY_LABEL = "networking.knative.dev/visibility"
CLUSTER_LOCAL = "cluster-local"

SERVICE_LABEL = "serving.knative.dev/service"
SERVICE_UID_LABEL = "serving.knative.dev/serviceUID"
CONFIGURATION_LABEL = "serving.knative.dev/configuration"
CONFIGURATION_GENERATION_LABEL = "serving.knative.dev/configurationGeneration"
REVISION_LABEL = "serving.knative.dev/revision"
REVISION_UID_LABEL = "serving.knative.dev/revisionUID"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"

STATE_SUFFIX = "-knative-double"
STATE_KEY = "revisions.json"
MAX_HISTORY = 20
"""Revisions remembered per Service (plus the latest ready one); older ones count as not found."""

SERVICE_ACCOUNT_WAIT = 0.2
"""Seconds before retrying a Pod that waits for its namespace's service account (a fresh namespace)."""

USER_PORT_DEFAULT = 8080
QUEUE_SERVING_PORT = 8012
QUEUE_ADMIN_PORT = 8022
QUEUE_METRICS_PORT = 9090
QUEUE_USER_METRICS_PORT = 9091
DEFAULT_TIMEOUT_SECONDS = 300

REVISION_ONLY_FIELDS = (
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
)
"""Fields of a revision template's spec that are Knative's, not the Pod's."""

_DNS_SUFFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_NAME = 63


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a revision failed: Knative's revision-level reason and the message users see."""

    reason: str
    message: str

    @classmethod
    def parse(cls, text: str) -> Failure:
        """`"<reason>: <message>"`; without a reason the reason is `RevisionFailed`."""
        reason, sep, message = text.partition(":")
        reason, message = reason.strip(), message.strip()
        if not sep or not reason or " " in reason:
            reason, message = "RevisionFailed", text.strip()
        return cls(reason, message or "failed (knative serving double)")


@dataclass(frozen=True, slots=True)
class Revision:
    """One revision of a Service's configuration, as the double remembers it."""

    name: str
    generation: int
    template_hash: str
    template: Object
    failure: Failure | None = None

    @property
    def ready(self) -> bool:
        """Only revisions that got a Pod are recorded without a failure, so not failed means ready."""
        return self.failure is None

    def to_json(self) -> Object:
        out: Object = {
            "name": self.name,
            "generation": self.generation,
            "templateHash": self.template_hash,
            "template": self.template,
        }
        if self.failure is not None:
            out["failure"] = {"reason": self.failure.reason, "message": self.failure.message}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Revision:
        failure = data.get("failure")
        return cls(
            name=str(data["name"]),
            generation=int(data["generation"]),
            template_hash=str(data["templateHash"]),
            template=dict(data.get("template") or {}),
            failure=Failure(str(failure["reason"]), str(failure["message"])) if failure else None,
        )


@dataclass(slots=True)
class History:
    """A Service's revisions, oldest first, and the version of the ConfigMap that persists them."""

    service_uid: str
    revisions: list[Revision] = field(default_factory=list)
    configmap_version: str | None = None
    configmap_exists: bool = False
    stale_version: str | None = None
    """The Service's resourceVersion our last status write replaced: a cache still showing it is stale."""

    @property
    def latest_created(self) -> Revision | None:
        return self.revisions[-1] if self.revisions else None

    @property
    def latest_ready(self) -> Revision | None:
        return next((r for r in reversed(self.revisions) if r.ready), None)

    @property
    def next_generation(self) -> int:
        return self.revisions[-1].generation + 1 if self.revisions else 1

    def find(self, name: str) -> Revision | None:
        return next((r for r in self.revisions if r.name == name), None)

    def add(self, revision: Revision) -> None:
        """Append (replacing a namesake, as a reused bring-your-own name does) and trim to `MAX_HISTORY`."""
        self.revisions = [r for r in self.revisions if r.name != revision.name] + [revision]
        if len(self.revisions) > MAX_HISTORY:
            keep = self.revisions[-MAX_HISTORY:]
            ready = self.latest_ready
            if ready is not None and ready not in keep:
                keep.insert(0, ready)
            self.revisions = keep

    def encode(self) -> str:
        return json.dumps({"revisions": [r.to_json() for r in self.revisions]}, sort_keys=True)

    @staticmethod
    def decode(text: str) -> list[Revision]:
        data = json.loads(text)
        return [Revision.from_json(r) for r in data.get("revisions") or []]


def child_name(parent: str, suffix: str) -> str:
    """Knative's name for a child object: `parent + suffix`, with `parent` shortened by an md5 when the
    result would exceed 63 characters."""
    if len(parent) + len(suffix) <= _MAX_NAME:
        return parent + suffix
    digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
    head = _MAX_NAME - len(suffix) - len(digest)
    if head <= 0:
        return hashlib.md5((parent + suffix).encode(), usedforsecurity=False).hexdigest()
    return parent[:head] + digest + suffix


def template_hash(template: Mapping[str, Any]) -> str:
    """A stable digest of a revision template (key order does not matter)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def revision_name(service: str, template: Mapping[str, Any], generation: int) -> str:
    """The template's own `metadata.name`, or Knative's `<service>-<generation:05d>`."""
    own = (template.get("metadata") or {}).get("name")
    return str(own) if own else child_name(service, f"-{generation:05d}")


def is_cluster_local(ksvc: Mapping[str, Any]) -> bool:
    labels = (ksvc.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(VISIBILITY_LABEL) == CLUSTER_LOCAL)


def service_host(name: str, namespace: str, domain: str, *, cluster_local: bool) -> str:
    """Knative's default domain template `{{.Name}}.{{.Namespace}}.{{.Domain}}`."""
    return f"{name}.{namespace}.{CLUSTER_LOCAL_DOMAIN if cluster_local else domain}"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class _Cond:
    status: str
    reason: str = ""
    message: str = ""


def _routes(ksvc: Mapping[str, Any], history: History, domain: str) -> tuple[list[Object] | None, _Cond]:
    """Resolve `spec.traffic` against the revisions as Knative's Route does: (status traffic, RoutesReady);
    the traffic is None when it cannot be resolved."""
    name = str(ksvc["metadata"]["name"])
    namespace = str(ksvc["metadata"]["namespace"])
    cluster_local = is_cluster_local(ksvc)
    targets = (ksvc.get("spec") or {}).get("traffic") or [{"latestRevision": True, "percent": 100}]
    latest_ready = history.latest_ready
    resolved: list[Object] = []
    for target in targets:
        revision = target.get("revisionName")
        follows_latest = bool(target.get("latestRevision", not revision))
        entry: Object = {}
        if target.get("tag"):
            entry["tag"] = target["tag"]
        if follows_latest:
            if latest_ready is None:
                reason = "RevisionMissing"
                if history.latest_created is not None and not history.latest_created.ready:
                    return None, _Cond(
                        "False", reason, f'Configuration "{name}" does not have any ready Revision.'
                    )
                return None, _Cond(
                    "Unknown", reason, f'Configuration "{name}" is waiting for a Revision to become ready.'
                )
            entry["revisionName"] = latest_ready.name
        else:
            known = history.find(str(revision))
            if known is None:
                return None, _Cond(
                    "False", "RevisionMissing", f'Revision "{revision}" referenced in traffic not found.'
                )
            if not known.ready:
                return None, _Cond(
                    "False", "RevisionMissing", f'Revision "{revision}" failed to become ready.'
                )
            entry["revisionName"] = known.name
        entry["latestRevision"] = follows_latest
        if target.get("percent") is not None:
            entry["percent"] = target["percent"]
        if target.get("tag"):
            host = service_host(f"{target['tag']}-{name}", namespace, domain, cluster_local=cluster_local)
            entry["url"] = f"http://{host}"
        resolved.append(entry)
    return resolved, _Cond("True")


def _configuration(history: History) -> _Cond:
    """Knative's ConfigurationsReady, from the latest created revision."""
    latest = history.latest_created
    if latest is None:
        return _Cond("Unknown", "RevisionMissing", "No revision has been created yet.")
    if latest.failure is not None:
        return _Cond(
            "False",
            "RevisionFailed",
            f'Revision "{latest.name}" failed with message: {latest.failure.message}.',
        )
    return _Cond("True")


def _condition(type_: str, cond: _Cond, previous: Mapping[str, Object], now: str) -> Object:
    out: Object = {"type": type_, "status": cond.status}
    if cond.reason:
        out["reason"] = cond.reason
    if cond.message:
        out["message"] = cond.message
    before = previous.get(type_)
    same = before is not None and all(before.get(k) == out.get(k) for k in ("status", "reason", "message"))
    out["lastTransitionTime"] = before.get("lastTransitionTime", now) if same and before else now
    return out


def desired_status(ksvc: Mapping[str, Any], history: History, domain: str, now: str) -> Object:
    """The status Knative would write for this Service and revision history (`now` stamps new transitions)."""
    meta = ksvc["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    previous_status = ksvc.get("status") or {}
    previous = {str(c.get("type")): c for c in previous_status.get("conditions") or []}
    configuration = _configuration(history)
    traffic, routes = _routes(ksvc, history, domain)
    # Ready follows the first dependent that is not True (a failed configuration explains a failed route).
    ready = next((c for c in (configuration, routes) if c.status == "False"), None)
    ready = ready or next((c for c in (configuration, routes) if c.status == "Unknown"), _Cond("True"))
    status: Object = {
        "observedGeneration": meta.get("generation", 0),
        "conditions": [
            _condition("ConfigurationsReady", configuration, previous, now),
            _condition("Ready", ready, previous, now),
            _condition("RoutesReady", routes, previous, now),
        ],
        "url": f"http://{service_host(name, namespace, domain, cluster_local=is_cluster_local(ksvc))}",
        "address": {"url": f"http://{service_host(name, namespace, domain, cluster_local=True)}"},
    }
    if history.latest_created is not None:
        status["latestCreatedRevisionName"] = history.latest_created.name
    if history.latest_ready is not None:
        status["latestReadyRevisionName"] = history.latest_ready.name
    if traffic is not None:
        status["traffic"] = traffic
    elif previous_status.get("traffic"):
        status["traffic"] = previous_status["traffic"]
    return status


def _user_port(container: Mapping[str, Any]) -> int:
    for port in container.get("ports") or []:
        if port.get("containerPort"):
            return int(port["containerPort"])
    return USER_PORT_DEFAULT


def _env(pairs: Iterable[tuple[str, str]]) -> list[Object]:
    return [{"name": k, "value": v} for k, v in pairs]


def revision_pod(ksvc: Mapping[str, Any], revision: Revision, queue_proxy_image: str) -> Object:
    """The Pod Knative's deployment would run for `revision`: the template's containers and a queue-proxy."""
    meta = ksvc["metadata"]
    name, namespace, uid = str(meta["name"]), str(meta["namespace"]), str(meta.get("uid", ""))
    template = copy.deepcopy(revision.template)
    template_meta = template.get("metadata") or {}
    spec: Object = {k: v for k, v in (template.get("spec") or {}).items() if k not in REVISION_ONLY_FIELDS}
    containers: list[Object] = [dict(c) for c in spec.get("containers") or []]
    if not containers:
        containers = [{"image": "unspecified"}]
    serving = next((c for c in containers if c.get("ports")), containers[0])
    user_port = _user_port(serving)
    for index, container in enumerate(containers):
        container.setdefault("name", "user-container" if index == 0 else f"user-container-{index}")
    serving["env"] = [
        *(serving.get("env") or []),
        *_env(
            [
                ("PORT", str(user_port)),
                ("K_REVISION", revision.name),
                ("K_CONFIGURATION", name),
                ("K_SERVICE", name),
            ]
        ),
    ]
    template_spec = template.get("spec") or {}
    timeout = template_spec.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS
    queue_env = [
        *_env(
            [
                ("SERVING_NAMESPACE", namespace),
                ("SERVING_SERVICE", name),
                ("SERVING_CONFIGURATION", name),
                ("SERVING_REVISION", revision.name),
                ("QUEUE_SERVING_PORT", str(QUEUE_SERVING_PORT)),
                ("CONTAINER_CONCURRENCY", str(template_spec.get("containerConcurrency") or 0)),
                ("REVISION_TIMEOUT_SECONDS", str(timeout)),
                ("USER_PORT", str(user_port)),
                ("SYSTEM_NAMESPACE", "knative-serving"),
            ]
        ),
        {"name": "SERVING_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "SERVING_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    containers.append(
        {
            "name": "queue-proxy",
            "image": queue_proxy_image,
            "ports": [
                {"name": "http-queueadm", "containerPort": QUEUE_ADMIN_PORT, "protocol": "TCP"},
                {"name": "http-autometric", "containerPort": QUEUE_METRICS_PORT, "protocol": "TCP"},
                {"name": "http-usermetric", "containerPort": QUEUE_USER_METRICS_PORT, "protocol": "TCP"},
                {"name": "queue-port", "containerPort": QUEUE_SERVING_PORT, "protocol": "TCP"},
            ],
            "env": queue_env,
        }
    )
    spec["containers"] = containers
    spec.setdefault("enableServiceLinks", False)
    labels = {
        **(template_meta.get("labels") or {}),
        SERVICE_LABEL: name,
        SERVICE_UID_LABEL: uid,
        CONFIGURATION_LABEL: name,
        CONFIGURATION_GENERATION_LABEL: str(revision.generation),
        REVISION_LABEL: revision.name,
        REVISION_UID_LABEL: str(uuid.uuid5(uuid.NAMESPACE_URL, f"{uid}/{revision.name}")),
        "app": revision.name,
    }
    annotations = {
        **(template_meta.get("annotations") or {}),
        TEMPLATE_HASH_ANNOTATION: revision.template_hash,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": child_name(revision.name, "-deployment"),
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [_owner_ref(ksvc)],
        },
        "spec": spec,
    }


def _owner_ref(ksvc: Mapping[str, Any]) -> Object:
    meta = ksvc["metadata"]
    return {
        "apiVersion": KSVC.api_version,
        "kind": KSVC.kind,
        "name": meta["name"],
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


class _WaitingForServiceAccount(Exception):
    """A Pod cannot be created before its namespace's service account exists."""


class _NamespaceTerminating(Exception):
    """The Service's namespace is being deleted: leave it to the namespace controller."""


class KnativeServingDouble:
    """Reconciles Knative Services as Knative Serving would (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        cache: Cache,
        *,
        domain: str = DEFAULT_DOMAIN,
        queue_proxy_image: str = DEFAULT_QUEUE_PROXY_IMAGE,
    ) -> None:
        self.validate(domain, queue_proxy_image)
        self.client = client
        self.cache = cache
        self.domain = domain
        self.queue_proxy_image = queue_proxy_image
        self.status_writes = 0
        self.reconciles = 0
        self._failure: Failure | None = None
        self._histories: dict[tuple[str, str], History] = {}

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

    async def reconcile(self, request: Request) -> Result:
        key = (request.namespace, request.name)
        try:
            ksvc = self.cache.get(KSVC, request.name, request.namespace)
            if ksvc is None or (ksvc.get("metadata") or {}).get("deletionTimestamp"):
                self._histories.pop(key, None)
                return Result()
            history = self._history(ksvc)
            try:
                await self._converge(ksvc, history)
            except Conflict:
                self._histories.pop(key, None)  # re-read the persisted history on the retry
                raise
            except _WaitingForServiceAccount as exc:
                log.info("waiting for the service account of the namespace: %s", exc)
                return Result(requeue_after=SERVICE_ACCOUNT_WAIT)
            except _NamespaceTerminating as exc:
                log.debug("namespace of %s/%s is terminating: %s", request.namespace, request.name, exc)
                self._histories.pop(key, None)
                return Result()
            return Result()
        finally:
            self.reconciles += 1

    async def _converge(self, ksvc: Object, history: History) -> None:
        template: Object = (ksvc.get("spec") or {}).get("template") or {}
        digest = template_hash(template)
        latest = history.latest_created
        ensured: set[str] = set()
        if latest is None or latest.template_hash != digest:
            await self._create_revision(ksvc, history, template, digest, ensured)
        await self._converge_pods(ksvc, history, ensured)
        await self._write_status(ksvc, history)

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
            if _owned_by(stored, uid):
                try:
                    history.revisions = History.decode(str((stored.get("data") or {}).get(STATE_KEY, "{}")))
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("ignoring unreadable revision history of %s/%s: %s", key[0], key[1], exc)
        self._histories[key] = history
        return history

    def _failure_for(self, ksvc: Object, template: Object) -> Failure | None:
        for where in (template.get("metadata") or {}, ksvc["metadata"]):
            switch = (where.get("annotations") or {}).get(FAIL_REVISION_ANNOTATION)
            if switch is not None:
                return Failure.parse(str(switch))
        return self._failure

    async def _create_revision(
        self, ksvc: Object, history: History, template: Object, digest: str, ensured: set[str]
    ) -> None:
        """Record a new revision (failed by a switch, or ready once its Pod exists); persist the history."""
        name = str(ksvc["metadata"]["name"])
        generation = history.next_generation
        revision = Revision(revision_name(name, template, generation), generation, digest, template)
        failure = self._failure_for(ksvc, template)
        if failure is None:
            failure = await self._ensure_pod(ksvc, revision)
        if failure is not None:
            revision = Revision(revision.name, generation, digest, template, failure)
            log.info("revision %s failed: %s: %s", revision.name, failure.reason, failure.message)
        else:
            ensured.add(revision.name)
            log.info("revision %s is ready", revision.name)
        history.add(revision)
        await self._save(ksvc, history)

    async def _ensure_pod(self, ksvc: Object, revision: Revision) -> Failure | None:
        """Create the revision's Pod unless a matching one exists; a Pod the API server rejects fails the
        revision (returned), anything else is raised for a retry."""
        pod = revision_pod(ksvc, revision, self.queue_proxy_image)
        namespace, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        uid = str(ksvc["metadata"].get("uid", ""))
        existing = self.cache.get(PODS, pod_name, namespace)
        if existing is not None:
            if not _owned_by(existing, uid):
                raise RuntimeError(
                    f"pod {namespace}/{pod_name} belongs to another object; waiting for it to go"
                )
            annotations = existing["metadata"].get("annotations") or {}
            if annotations.get(TEMPLATE_HASH_ANNOTATION) == revision.template_hash:
                return None
            await self._delete_pod(existing)
            raise RuntimeError(f"pod {namespace}/{pod_name} was made from another template; replacing it")
        try:
            await self.client.create(PODS, pod, namespace)
        except AlreadyExists:
            return None
        except Invalid as exc:
            return Failure("PodCreationFailed", exc.message)
        except ApiError as exc:
            if exc.status == 400:
                return Failure("PodCreationFailed", exc.message)
            if exc.status == 404 or (exc.status == 403 and "being terminated" in exc.message):
                # The namespace is going away (its objects are deleted next): nothing to serve any more.
                raise _NamespaceTerminating(exc.message) from exc
            if re.search(r"service ?account", exc.message, re.IGNORECASE) and exc.status in (403, 500):
                # The ServiceAccount admission plugin rejects Pods until kube-controller-manager has made
                # the namespace's default service account and its token: expected right after creation.
                raise _WaitingForServiceAccount(exc.message) from exc
            raise
        return None

    async def _delete_pod(self, pod: Object) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(NotFound):
            await self.client.delete(
                PODS, str(meta["name"]), str(meta["namespace"]), uid=str(meta.get("uid") or "")
            )

    async def _converge_pods(self, ksvc: Object, history: History, ensured: set[str]) -> None:
        """Pods for the latest ready revision and every revision the traffic names; none for the others."""
        wanted: dict[str, Revision] = {}
        if history.latest_ready is not None:
            wanted[history.latest_ready.name] = history.latest_ready
        traffic, _ = _routes(ksvc, history, self.domain)
        for entry in traffic or []:
            revision = history.find(str(entry["revisionName"]))
            if revision is not None and revision.ready:
                wanted[revision.name] = revision
        for revision in wanted.values():
            if revision.name in ensured:
                continue
            failure = await self._ensure_pod(ksvc, revision)
            if failure is not None:
                raise RuntimeError(f"pod of ready revision {revision.name} rejected: {failure.message}")
        meta = ksvc["metadata"]
        for pod in self.cache.by_owner(PODS, str(meta.get("uid", "")), str(meta["namespace"])):
            if (pod["metadata"].get("labels") or {}).get(REVISION_LABEL) not in wanted:
                await self._delete_pod(pod)

    async def _save(self, ksvc: Object, history: History) -> None:
        meta = ksvc["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        body: Object = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name + STATE_SUFFIX,
                "namespace": namespace,
                "labels": {SERVICE_LABEL: name, MANAGED_BY_LABEL: CONTROLLER_NAME},
                "ownerReferences": [_owner_ref(ksvc)],
            },
            "data": {STATE_KEY: history.encode()},
        }
        if history.configmap_exists:
            body["metadata"]["resourceVersion"] = history.configmap_version
            saved = await self.client.replace(CONFIGMAPS, body)
        else:
            try:
                saved = await self.client.create(CONFIGMAPS, body, namespace)
            except AlreadyExists as exc:
                raise Conflict(409, "Conflict", f"revision history of {namespace}/{name} appeared") from exc
        history.configmap_exists = True
        history.configmap_version = str(saved["metadata"].get("resourceVersion") or "")

    async def _write_status(self, ksvc: Object, history: History) -> None:
        version = ksvc["metadata"].get("resourceVersion")
        if version is not None and version == history.stale_version:
            return  # the cache has not seen our last write yet; its watch event re-queues this Service
        status = desired_status(ksvc, history, self.domain, now_rfc3339())
        if status == (ksvc.get("status") or {}):
            return
        body = dict(ksvc, apiVersion=KSVC.api_version, kind=KSVC.kind, status=status)
        await self.client.replace_status(KSVC, body)
        history.stale_version = version
        self.status_writes += 1


def install(
    manager: Manager,
    *,
    domain: str = DEFAULT_DOMAIN,
    queue_proxy_image: str = DEFAULT_QUEUE_PROXY_IMAGE,
    max_concurrent_reconciles: int = 4,
) -> KnativeServingDouble:
    """Register the double's controller (`knative-serving-double`: For ksvc, Owns Pods and ConfigMaps)."""
    double = KnativeServingDouble(
        manager.client, manager.cache, domain=domain, queue_proxy_image=queue_proxy_image
    )
    (
        manager.builder()
        .named(CONTROLLER_NAME)
        .for_(KSVC)
        .owns(PODS)
        .owns(CONFIGMAPS)
        .with_max_concurrent_reconciles(max_concurrent_reconciles)
        .complete(double)
    )
    return double
