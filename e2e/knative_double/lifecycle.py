"""The Knative Service's status from its revisions: Knative Serving v1.10.2's Configuration, Route and
Service reconcilers folded into one pure function.

Sources (knative/serving tag knative-v1.10.2, commit 500756c):

* `pkg/reconciler/configuration/configuration.go` and `pkg/apis/serving/v1/configuration_lifecycle.go`:
  a latest created revision that is not the latest ready one makes Ready Unknown (no reason); a failed one
  makes it False, `RevisionFailed`, `Revision "<rev>" failed with message: <its Ready message>.`; a refused
  creation `Revision creation failed with message: <error>.`; the latest ready revision is the newest
  ready one from the current latest ready's generation on (it is never cleared).
* `pkg/reconciler/route/traffic/traffic.go`, `errors.go` and `route_lifecycle.go`: every traffic target
  is resolved; the first error is kept unless a later one is a failure; `RevisionMissing` with
  `Configuration "<c>" is waiting for a Revision to become ready.` / `does not have any ready Revision.`,
  `Revision "<r>" is not yet ready.` / `failed to become ready.`, `Revision "<r>" referenced in traffic
  not found.`; traffic stays as it was while a target is bad.
* `pkg/apis/serving/v1/service_lifecycle.go`: ConfigurationsReady and RoutesReady copy the Configuration's
  and the Route's Ready in that order, so when both fail Ready carries the Route's words (KServe users see
  `RevisionMissing` on a Service whose first revision failed, kserve/kserve#1060).

The Route's ingress and certificate are not modelled: traffic that resolves is Ready at once. URLs follow
Knative's default domain template `{{.Name}}.{{.Namespace}}.{{.Domain}}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from e2e.knative_double.conditions import FALSE, READY, TRUE, UNKNOWN, Cond, Conditions
from e2e.knative_double.history import History, Revision
from manager.client import Object

CLUSTER_LOCAL_DOMAIN = "svc.cluster.local"
VISIBILITY_LABEL = "networking.knative.dev/visibility"
CLUSTER_LOCAL = "cluster-local"
CONFIGURATIONS_READY = "ConfigurationsReady"
ROUTES_READY = "RoutesReady"
REVISION_MISSING = "RevisionMissing"


def is_cluster_local(ksvc: Mapping[str, Any]) -> bool:
    labels = (ksvc.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(VISIBILITY_LABEL) == CLUSTER_LOCAL)


def service_host(name: str, namespace: str, domain: str, *, cluster_local: bool) -> str:
    return f"{name}.{namespace}.{CLUSTER_LOCAL_DOMAIN if cluster_local else domain}"


def _condition_of(status: Mapping[str, Any], type_: str) -> Cond | None:
    for raw in status.get("conditions") or []:
        if raw.get("type") == type_:
            return Cond(str(raw.get("status")), str(raw.get("reason", "")), str(raw.get("message", "")))
    return None


def configuration(
    ksvc: Mapping[str, Any], history: History, previous_ready: Cond | None, previous_latest_ready: str | None
) -> tuple[Cond, Revision | None]:
    """The Configuration's Ready and its latest ready revision."""
    c = Conditions.load((), [] if previous_ready is None else [_as_ready_condition(previous_ready)], "")
    c.initialize()
    latest_ready = history.find(previous_latest_ready)
    newest = history.latest
    if newest is not None and newest.creation_error is not None:
        c.mark_false(
            READY, "RevisionFailed", f"Revision creation failed with message: {newest.creation_error}."
        )
        return _ready(c), latest_ready
    created = history.latest_created
    if created is None:
        return _ready(c), latest_ready
    if latest_ready is None or latest_ready.name != created.name:
        c.mark_unknown(READY, "", "")
    failure = created.failure
    if failure is not None:
        c.mark_false(
            READY, "RevisionFailed", f'Revision "{created.name}" failed with message: {failure.message}.'
        )
    template_name = ((ksvc.get("spec") or {}).get("template") or {}).get("metadata", {}).get("name")
    start = latest_ready.generation if latest_ready is not None else 0
    candidates = [r for r in history.revisions if r.creation_error is None and r.generation >= start]
    candidates.sort(key=lambda r: (r.name == template_name, r.generation), reverse=True)
    for revision in candidates:
        if revision.ready:
            latest_ready = revision
            if revision.name == created.name:
                c.mark_true(READY)
            break
    return _ready(c), latest_ready


def _as_ready_condition(cond: Cond) -> dict[str, str]:
    return {"type": READY, "status": cond.status, "reason": cond.reason, "message": cond.message}


def _ready(c: Conditions) -> Cond:
    ready = c.get(READY)
    return ready if ready is not None else Cond(UNKNOWN)


def _unready(revision: Revision) -> tuple[Cond, bool]:
    failed = revision.failure is not None
    if failed:
        return Cond(FALSE, REVISION_MISSING, f'Revision "{revision.name}" failed to become ready.'), True
    return Cond(UNKNOWN, REVISION_MISSING, f'Revision "{revision.name}" is not yet ready.'), False


def routes(
    ksvc: Mapping[str, Any], history: History, latest_ready: Revision | None, config_ready: Cond, domain: str
) -> tuple[list[Object] | None, Cond]:
    """Resolve `spec.traffic` as Knative's Route does: (status traffic or None, the Route's Ready)."""
    name = str(ksvc["metadata"]["name"])
    namespace = str(ksvc["metadata"]["namespace"])
    cluster_local = is_cluster_local(ksvc)
    targets = (ksvc.get("spec") or {}).get("traffic") or [{"latestRevision": True, "percent": 100}]
    resolved: list[Object] = []
    error: tuple[Cond, bool] | None = None
    for target in targets:
        pinned = target.get("revisionName")
        follows_latest = bool(target.get("latestRevision", not pinned))
        problem: tuple[Cond, bool] | None = None
        revision: Revision | None
        if follows_latest:
            revision = latest_ready
            if revision is None:
                failed = config_ready.status == FALSE
                message = (
                    "does not have any ready Revision."
                    if failed
                    else "is waiting for a Revision to become ready."
                )
                problem = (
                    Cond(FALSE if failed else UNKNOWN, REVISION_MISSING, f'Configuration "{name}" {message}'),
                    failed,
                )
        else:
            revision = history.find(str(pinned))
            if revision is None:
                problem = (
                    Cond(FALSE, REVISION_MISSING, f'Revision "{pinned}" referenced in traffic not found.'),
                    True,
                )
        if problem is None and revision is not None and not revision.ready:
            problem = _unready(revision)
        if problem is not None:
            if error is None or problem[1]:
                error = problem
            continue
        assert revision is not None
        entry: Object = {}
        if target.get("tag"):
            entry["tag"] = target["tag"]
        entry["revisionName"] = revision.name
        entry["latestRevision"] = follows_latest
        if target.get("percent") is not None:
            entry["percent"] = target["percent"]
        if target.get("tag"):
            host = service_host(f"{target['tag']}-{name}", namespace, domain, cluster_local=cluster_local)
            entry["url"] = f"http://{host}"
        resolved.append(entry)
    if error is not None:
        return None, error[0]
    return resolved, Cond(TRUE)


def desired_status(ksvc: Mapping[str, Any], history: History, domain: str, now: str) -> Object:
    """The status Knative would write for this Service and its revisions (`now` stamps new transitions)."""
    meta = ksvc["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    previous = ksvc.get("status") or {}
    config_ready, latest_ready = configuration(
        ksvc, history, _condition_of(previous, CONFIGURATIONS_READY), previous.get("latestReadyRevisionName")
    )
    traffic, route_ready = routes(ksvc, history, latest_ready, config_ready, domain)
    c = Conditions.load((CONFIGURATIONS_READY, ROUTES_READY), previous.get("conditions") or [], now)
    c.initialize()
    c.propagate(CONFIGURATIONS_READY, config_ready)
    c.propagate(ROUTES_READY, route_ready)
    status: Object = {
        "observedGeneration": meta.get("generation", 0),
        "conditions": c.to_json(),
        "url": f"http://{service_host(name, namespace, domain, cluster_local=is_cluster_local(ksvc))}",
        "address": {"url": f"http://{service_host(name, namespace, domain, cluster_local=True)}"},
    }
    created = history.latest_created
    if created is not None:
        status["latestCreatedRevisionName"] = created.name
    if latest_ready is not None:
        status["latestReadyRevisionName"] = latest_ready.name
    if traffic is not None:
        status["traffic"] = traffic
    elif previous.get("traffic"):
        status["traffic"] = previous["traffic"]
    return status


def routed_revisions(ksvc: Mapping[str, Any], history: History, domain: str) -> set[str]:
    """Revisions whose routing state is active: those the Route sends traffic to (the resolved traffic, or
    while it cannot be resolved the traffic last published), or, before the Route ever had traffic, the
    latest created revision (a Service's revisions are created routed)."""
    status = ksvc.get("status") or {}
    config_ready, latest_ready = configuration(
        ksvc, history, _condition_of(status, CONFIGURATIONS_READY), status.get("latestReadyRevisionName")
    )
    traffic, _ = routes(ksvc, history, latest_ready, config_ready, domain)
    entries = traffic if traffic is not None else status.get("traffic") or []
    names = {str(e.get("revisionName")) for e in entries}
    if not names and history.latest_created is not None:
        names.add(history.latest_created.name)
    return names
