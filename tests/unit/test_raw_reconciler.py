"""The InferenceService reconcile in RawDeployment mode, row by row, over the shared fake cluster.

Objects in (the InferenceService, `inferenceservice-config`, children with the status the Deployment
controller would have written, pods); writes, status and events of one reconcile out. The rows follow KServe
v0.11.2's raw mode (`rawkube_controller_test.go`), plus what README lists as deliberate differences.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from apis import constants as c
from apis.inferenceservice import InferenceService
from apis.resources import DEPLOYMENTS, HORIZONTAL_POD_AUTOSCALERS, INFERENCE_SERVICES, INGRESSES
from manager.client import CONFIGMAPS, PODS, SERVICES, Object
from reconcilers.apply import with_fingerprint
from reconcilers.components import build_component
from reconcilers.deployment import desired_deployment
from reconcilers.hpa import desired_hpa
from tests.unit.test_inferenceservice_reconciler import (
    BASE,
    CONFIG,
    FOREIGN_OWNER,
    ISVC,
    KEY,
    NOT_OWNED,
    NS,
    RUNTIME,
    TRANSFORMER,
    Row,
    absent,
    all_of,
    child,
    edit_isvc,
    isvc_obj,
    run,
)

RAW = {c.DEPLOYMENT_MODE_ANNOTATION: c.RAW_DEPLOYMENT}
DEPLOY = "deployments.apps"
HPA = "horizontalpodautoscalers.autoscaling"
INGRESS = "ingresses.networking.k8s.io"
AVAILABLE = {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok"}
UNAVAILABLE = {
    "type": "Available",
    "status": "False",
    "reason": "MinimumReplicasUnavailable",
    "message": "Deployment does not have minimum availability.",
}


def raw_isvc(**kwargs: Any) -> Object:
    annotations = {**RAW, **kwargs.pop("annotations", {})}
    return isvc_obj(annotations=annotations, **kwargs)


def deployment(isvc: Object, component: str = c.PREDICTOR, *, condition: Object | None = AVAILABLE) -> Object:
    """The component's Deployment as this controller applies it, with the Deployment controller's status."""
    model = InferenceService.from_object(isvc)
    obj = with_fingerprint(desired_deployment(model, build_component(model, component, runtimes=[RUNTIME])))
    obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    if condition is not None:
        obj["status"] = {"conditions": [condition]}
    return obj


def hpa(isvc: Object, component: str = c.PREDICTOR) -> Object:
    model = InferenceService.from_object(isvc)
    desired = desired_hpa(model, build_component(model, component, runtimes=[RUNTIME]))
    assert desired is not None
    return with_fingerprint(desired)


def pod(phase_ready: bool = True) -> Object:
    return {
        "metadata": {
            "name": "sk-predictor-abc",
            "namespace": NS,
            "labels": {c.INFERENCE_SERVICE_LABEL: "sk", "app": "isvc.sk-predictor"},
        },
        "status": {"phase": "Running" if phase_ready else "Pending"},
    }


PULL = 'Back-off pulling image "kserve/sklearnserver:nope"'


def failing_pod(reason: str, message: str) -> Object:
    """A predictor pod whose model server container waits for `reason`."""
    failing = pod(phase_ready=False)
    waiting = {"waiting": {"reason": reason, "message": message}}
    failing["status"]["containerStatuses"] = [{"name": "kserve-container", "ready": False, "state": waiting}]
    return failing


PULL_MESSAGE = 'container "kserve-container" of pod "sk-predictor-abc": ' + PULL


WORLD = [*BASE, (INFERENCE_SERVICES, raw_isvc()), (DEPLOYMENTS, deployment(raw_isvc()))]
PREDICTOR_WRITES = [
    f"apply {DEPLOY} {NS}/sk-predictor",
    f"apply services {NS}/sk-predictor",
    f"apply {HPA} {NS}/sk-predictor",
]


def set_ingress(**fields: str) -> Any:
    """A row set-up: the `ingress` key changes."""

    def setup(cluster: Any) -> None:
        configmap = copy.deepcopy(CONFIG)
        configmap["data"]["ingress"] = json.dumps({**json.loads(configmap["data"]["ingress"]), **fields})
        cluster.add(CONFIGMAPS, configmap)

    return setup


ROWS = [
    Row(
        "a new raw InferenceService: Deployment, Service, HPA; the ingress waits for the predictor",
        KEY,
        objects=[*BASE, (INFERENCE_SERVICES, raw_isvc())],
        want_writes=[f"patch {ISVC}", *PREDICTOR_WRITES, f"update-status {ISVC}"],
        want_status={
            "conditions": {
                "PredictorReady": ("Unknown", ""),
                "IngressReady": ("False", "Predictor ingress not created"),
                "Ready": ("False", "Predictor ingress not created"),
            },
            "modelStatus": {"transitionStatus": "InProgress", "states": {"targetModelState": "Pending"}},
        },
        check=all_of(
            child(SERVICES, "sk-predictor"),
            child(HORIZONTAL_POD_AUTOSCALERS, "sk-predictor", apiVersion="autoscaling/v1"),
            absent(INGRESSES, "sk"),
            absent(SERVICES, "sk"),
        ),
    ),
    Row(
        "an available Deployment: the Ingress, KServe's URLs, Ready and its event",
        KEY,
        objects=[
            *BASE,
            (INFERENCE_SERVICES, raw_isvc(finalizer=True)),
            (DEPLOYMENTS, deployment(raw_isvc())),
            (PODS, pod()),
        ],
        want_writes=[
            f"apply services {NS}/sk-predictor",
            f"apply {HPA} {NS}/sk-predictor",
            f"apply {INGRESS} {KEY}",
            f"update-status {ISVC}",
        ],
        want_status={
            "url": f"http://sk-{NS}.example.com",
            "address": {"url": f"http://sk-predictor.{NS}.svc.cluster.local"},
            "components": {
                "predictor": {"latestCreatedRevision": "1", "url": f"http://sk-predictor-{NS}.example.com"}
            },
            "conditions": {
                "PredictorReady": ("True", ""),
                "IngressReady": ("True", ""),
                "Ready": ("True", ""),
            },
        },
        want_events=["Normal InferenceServiceReady InferenceService [sk] is Ready"],
        check=child(INGRESSES, "sk"),
    ),
    Row(
        "a Ready InferenceService with a pod of its predictor (app label): the model is Loaded",
        KEY,
        converge=WORLD,
        objects=[(PODS, pod())],
        want_writes=[f"update-status {ISVC}"],
        want_status={
            "modelStatus": {
                "transitionStatus": "UpToDate",
                "states": {"targetModelState": "Loaded", "activeModelState": "Loaded"},
                "copies": {"totalCopies": 1},
            },
        },
    ),
    Row("a steady raw InferenceService: zero writes, no event", KEY, converge=WORLD),
    Row(
        "the Deployment becomes unavailable: its reason and message, and the NotReady event",
        KEY,
        converge=WORLD,
        objects=[(DEPLOYMENTS, deployment(raw_isvc(), condition=UNAVAILABLE))],
        want_writes=[f"update-status {ISVC}"],
        want_status={
            "conditions": {
                "PredictorReady": ("False", "MinimumReplicasUnavailable", UNAVAILABLE["message"]),
                "IngressReady": ("False", "Predictor ingress not created"),
                "Ready": ("False", "MinimumReplicasUnavailable", UNAVAILABLE["message"]),
            }
        },
        want_events=["Warning InferenceServiceNotReady InferenceService [sk] is no longer Ready"],
    ),
    Row(
        "the Deployment is unavailable and a pod says why: the pod's reason and message",
        KEY,
        converge=WORLD,
        objects=[
            (DEPLOYMENTS, deployment(raw_isvc(), condition=UNAVAILABLE)),
            (PODS, failing_pod("ImagePullBackOff", PULL)),
        ],
        want_writes=[f"update-status {ISVC}"],
        want_status={
            "conditions": {
                "PredictorReady": ("False", "ImagePullBackOff", PULL_MESSAGE),
                "IngressReady": ("False", "Predictor ingress not created"),
                "Ready": ("False", "ImagePullBackOff", PULL_MESSAGE),
            }
        },
        want_events=["Warning InferenceServiceNotReady InferenceService [sk] is no longer Ready"],
    ),
    Row(
        "autoscaler class external: the HPA goes",
        KEY,
        converge=WORLD,
        setup=edit_isvc(
            lambda o: o["metadata"]["annotations"].update({c.AUTOSCALER_CLASS_ANNOTATION: "external"})
        ),
        want_writes=[
            f"apply {DEPLOY} {NS}/sk-predictor",
            f"apply services {NS}/sk-predictor",
            f"delete {HPA} {NS}/sk-predictor",
            f"apply {INGRESS} {KEY}",
            f"update-status {ISVC}",
        ],
        check=absent(HORIZONTAL_POD_AUTOSCALERS, "sk-predictor"),
    ),
    Row(
        "cluster-local: the Ingress goes, the URL and Ready stay",
        KEY,
        converge=WORLD,
        setup=set_ingress(ingressDomain="svc.cluster.local"),
        want_writes=[f"delete {INGRESS} {KEY}", f"update-status {ISVC}"],
        want_status={"url": f"http://sk-{NS}.svc.cluster.local", "conditions": {"Ready": ("True", "")}},
        check=absent(INGRESSES, "sk"),
    ),
    Row(
        "a Deployment of that name someone else controls is never overwritten",
        KEY,
        objects=[
            *BASE,
            (INFERENCE_SERVICES, raw_isvc(finalizer=True)),
            (
                DEPLOYMENTS,
                {"metadata": {"name": "sk-predictor", "namespace": NS, "ownerReferences": [FOREIGN_OWNER]}},
            ),
        ],
        want_writes=[f"update-status {ISVC}"],
        want_status={
            "conditions": {
                "PredictorReady": (
                    "False",
                    "DeploymentNotOwned",
                    f'Deployment "{NS}/sk-predictor" {NOT_OWNED}',
                )
            }
        },
        want_events=[f'Warning DeploymentNotOwned Deployment "{NS}/sk-predictor" {NOT_OWNED}'],
        check=child(DEPLOYMENTS, "sk-predictor", spec=None),
    ),
    Row(
        "a transformer that leaves the spec: its Deployment, Service and HPA go; the Ingress follows",
        KEY,
        converge=[
            *BASE,
            (INFERENCE_SERVICES, raw_isvc(transformer=TRANSFORMER)),
            (DEPLOYMENTS, deployment(raw_isvc())),
            (DEPLOYMENTS, deployment(raw_isvc(transformer=TRANSFORMER), c.TRANSFORMER)),
        ],
        setup=edit_isvc(lambda o: o["spec"].pop("transformer")),
        want_writes=[
            f"delete {DEPLOY} {NS}/sk-transformer",
            f"delete services {NS}/sk-transformer",
            f"delete {HPA} {NS}/sk-transformer",
            f"apply {INGRESS} {KEY}",
            f"update-status {ISVC}",
        ],
        want_status={"address": {"url": f"http://sk-predictor.{NS}.svc.cluster.local"}},
        check=all_of(absent(DEPLOYMENTS, "sk-transformer"), absent(SERVICES, "sk-transformer")),
    ),
    Row(
        "a broken domainTemplate: IngressReady says so",
        KEY,
        converge=WORLD,
        setup=set_ingress(domainTemplate="{{ .Name }}"),
        want_writes=[f"update-status {ISVC}"],
        want_status={"conditions": {"IngressReady": ("False", "InvalidConfiguration")}},
        want_events=[
            "Warning InferenceServiceNotReady InferenceService [sk] is no longer Ready",
            "Warning InvalidConfiguration ingress domainTemplate '{{ .Name }}' renders the host "
            "'sk-predictor', which is not a fully qualified domain name: it should be a domain with at "
            "least two segments separated by dots",
        ],
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=str)
async def test_raw_reconcile(row: Row) -> None:
    await run(row)


async def test_transformer_and_explainer_converge_to_zero_writes() -> None:
    world = [
        *BASE,
        (INFERENCE_SERVICES, raw_isvc(transformer=TRANSFORMER)),
        (DEPLOYMENTS, deployment(raw_isvc())),
        (DEPLOYMENTS, deployment(raw_isvc(transformer=TRANSFORMER), c.TRANSFORMER)),
        (HORIZONTAL_POD_AUTOSCALERS, hpa(raw_isvc())),
    ]
    cluster = await run(Row("steady with a transformer", KEY, converge=world))
    stored = cluster.object(INFERENCE_SERVICES, "sk", NS)
    assert stored is not None
    assert stored["status"]["address"] == {"url": f"http://sk-transformer.{NS}.svc.cluster.local"}
    ingress = cluster.object(INGRESSES, "sk", NS)
    assert ingress is not None
    backends = [
        (r["host"], r["http"]["paths"][0]["backend"]["service"]["name"]) for r in ingress["spec"]["rules"]
    ]
    assert backends == [
        (f"sk-{NS}.example.com", "sk-transformer"),
        (f"sk-transformer-{NS}.example.com", "sk-transformer"),
        (f"sk-predictor-{NS}.example.com", "sk-predictor"),
    ]
