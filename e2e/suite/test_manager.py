"""The manager as deployed: its /metrics, a full restart, and a leader failover keep state correct."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from apis.resources import INFERENCE_SERVICES, KNATIVE_SERVICES
from e2e.suite.env import Env, lease_holder
from e2e.suite.support import is_ready, ready
from manager.client import Client, Object

CONTROLLERS = ("inferenceservice", "trainedmodel")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_manager_metrics_have_controller_runtime_series(
    env: Env, admin: Client, namespace: str
) -> None:
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "counted"))
    await ready(admin, namespace, "counted", env.ready_timeout)
    metrics = samples(await asyncio.to_thread(env.manager_metrics))
    names = {name for name, _ in metrics}
    for name in (
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_count",
        "controller_runtime_max_concurrent_reconciles",
        "controller_runtime_active_workers",
        "workqueue_adds_total",
        "workqueue_depth",
        "leader_election_master_status",
    ):
        assert name in names, name
    for controller in CONTROLLERS:
        assert (
            "controller_runtime_max_concurrent_reconciles",
            frozenset({("controller", controller)}),
        ) in metrics
    success = (
        "controller_runtime_reconcile_total",
        frozenset({("controller", "inferenceservice"), ("result", "success")}),
    )
    assert metrics[success] >= 1


async def snapshot(admin: Client, namespace: str, name: str) -> tuple[Object, Object]:
    return (
        await admin.get(INFERENCE_SERVICES, name, namespace),
        await admin.get(KNATIVE_SERVICES, f"{name}-predictor", namespace),
    )


async def assert_unchanged(admin: Client, namespace: str, name: str, before: tuple[Object, Object]) -> None:
    isvc, ksvc = await snapshot(admin, namespace, name)
    assert is_ready(isvc)
    assert ksvc["metadata"]["generation"] == before[1]["metadata"]["generation"], (
        "the ksvc spec was rewritten"
    )
    assert ksvc["metadata"]["uid"] == before[1]["metadata"]["uid"]
    predictor = isvc["status"]["components"]["predictor"]
    assert (
        predictor["latestReadyRevision"]
        == before[0]["status"]["components"]["predictor"]["latestReadyRevision"]
    )


async def test_restart_keeps_existing_services_and_serves_new_ones(
    env: Env, admin: Client, namespace: str
) -> None:
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "before-restart"))
    await ready(admin, namespace, "before-restart", env.ready_timeout)
    before = await snapshot(admin, namespace, "before-restart")
    await env.restart_all(admin)
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "after-restart"))
    await ready(admin, namespace, "after-restart", env.ready_timeout)
    await assert_unchanged(admin, namespace, "before-restart", before)


async def test_leader_failover_keeps_state_and_the_new_leader_reconciles(
    env: Env, admin: Client, namespace: str
) -> None:
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "before-failover"))
    await ready(admin, namespace, "before-failover", env.ready_timeout)
    before = await snapshot(admin, namespace, "before-failover")
    old, new = await env.fail_over(admin)
    assert new != old
    await admin.create(INFERENCE_SERVICES, env.isvc(namespace, "after-failover"))
    await ready(admin, namespace, "after-failover", env.ready_timeout)
    await assert_unchanged(admin, namespace, "before-failover", before)
    assert await lease_holder(admin) == new
